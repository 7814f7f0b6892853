"""How the settings saved in a checkpoint meet the settings a command gives (``--ckpt_path``).

A checkpoint holds the task's hyper-parameters (``lr``, ``ks``, ``list_target``, ``predictions_path``...).
Stock LightningCLI merges them over the parsed config, so an option given on the command line or in a config
file (``stcrank test --model.init_args.ks [10]``) would silently lose to the checkpoint's value. stcrank's rules:

* ``fit --ckpt_path`` resumes a run, which must continue exactly as it started: a given setting that differs
  from the checkpoint's is an error naming the option and both values.
* ``validate``, ``test`` and ``predict`` evaluate trained weights: a given setting is honoured; the checkpoint's
  values fill only the settings the command leaves out (so ``stcrank test --ckpt_path last.ckpt`` alone
  rebuilds the task as trained).
* A config naming another task class than the checkpoint's is an error for every command.

Settings that shape the weights (the network's ``init_args``) are not among the saved hyper-parameters; a
network that does not fit the checkpoint is refused when the weights are loaded
(:meth:`stcrank.tasks.base.BaseTask.on_load_checkpoint`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stcrank.errors import ConfigError

RESUMING = "fit"
"""The subcommand that resumes a run from ``--ckpt_path`` (the others evaluate the checkpoint's weights)."""

LINKED = frozenset({"feature_sizes"})
"""Hyper-parameters the command line links from the data module: never compared with what the user gives."""


def _plain(value: Any) -> Any:
    """A config value as plain Python (namespaces to dicts), for comparison and messages."""
    as_dict = getattr(value, "as_dict", None)
    return as_dict() if callable(as_dict) else value


def given_model_settings(parser: Any, args: Any, subcommand: str) -> tuple[str | None, dict[str, Any]]:
    """The task class and ``init_args`` the user gave (config files and command line), without the defaults.

    Args:
        parser: The command's parser.
        args: The arguments the command was parsed from (None: ``sys.argv``).
        subcommand: ``fit``, ``validate``, ``test`` or ``predict``.

    Returns:
        ``(class_path or None, {init_arg: value})``.
    """
    explicit = parser.parse_args(args, defaults=False)
    model = explicit.get(subcommand, {}).get("model") if explicit.get(subcommand) else None
    if model is None or isinstance(model, str):
        return model, {}
    init_args = model.get("init_args")
    return model.get("class_path"), dict(_plain(init_args) or {}) if init_args is not None else {}


def _option(key: str) -> str:
    return f"--model.init_args.{key}"


def checked_hparams(
    hparams: dict[str, Any], given_class: str | None, given: dict[str, Any], subcommand: str, ckpt_path: str
) -> tuple[str | None, dict[str, Any]]:
    """Apply the rules of the module docstring to a checkpoint's hyper-parameters.

    Args:
        hparams: ``checkpoint["hyper_parameters"]`` (with Lightning's ``_class_path``, if any).
        given_class: The task class the user gave, or None.
        given: The task ``init_args`` the user gave.
        subcommand: The running subcommand.
        ckpt_path: The checkpoint, for messages.

    Returns:
        ``(the checkpoint's task class, the hyper-parameters to merge into the config)``: those the user did not
        give.

    Raises:
        ConfigError: If the task class differs, or ``fit`` resumes with a setting that differs.
    """
    hparams = dict(hparams)
    hparams.pop("_instantiator", None)
    class_path = hparams.pop("_class_path", None)
    if class_path and given_class and given_class.rpartition(".")[2] != class_path.rpartition(".")[2]:
        raise ConfigError(
            f"--ckpt_path {ckpt_path} holds a {class_path}, but the config gives --model {given_class}; use the "
            "config the checkpoint was trained with"
        )
    differing = {
        key: (given[key], value)
        for key, value in hparams.items()
        if key in given and key not in LINKED and _plain(given[key]) != value
    }
    if subcommand == RESUMING and differing:
        changes = "; ".join(
            f"{_option(key)} is {mine!r} here but {theirs!r} in the checkpoint"
            for key, (mine, theirs) in differing.items()
        )
        raise ConfigError(
            f"cannot resume from --ckpt_path {ckpt_path}: {changes}. Resuming continues that run exactly, so give "
            "the settings it was started with, or leave out --ckpt_path to start a new run"
        )
    return class_path, {key: value for key, value in hparams.items() if key not in given}


def merge_checkpoint_hparams(cli: Any, args: Any, ckpt_path: str | None = None) -> None:
    """Merge the hyper-parameters of ``--ckpt_path`` into ``cli.config`` under the rules of the module docstring.

    This replaces LightningCLI's own merge (``_parse_ckpt_path``), which lets the checkpoint override what the
    user gave.

    Args:
        cli: The :class:`~lightning.pytorch.cli.LightningCLI` after parsing.
        args: The arguments it was parsed from (None: ``sys.argv``).
        ckpt_path: The checkpoint file, when the command names it indirectly (``--ckpt_path last``); by default
            the config's ``ckpt_path``.
    """
    import torch

    subcommand = cli.config.get("subcommand")
    if not subcommand:
        return
    ckpt_path = ckpt_path or cli.config[subcommand].get("ckpt_path")
    if not ckpt_path or not Path(ckpt_path).is_file():
        return
    hparams = torch.load(ckpt_path, weights_only=True, map_location="cpu").get("hyper_parameters", {})
    if not {key for key in hparams if key != "_instantiator"}:
        return
    given_class, given = given_model_settings(cli.parser, args, subcommand)
    class_path, fill = checked_hparams(hparams, given_class, given, subcommand, str(ckpt_path))
    if not fill and not class_path:
        return
    model: dict[str, Any] = {"class_path": class_path, "dict_kwargs": fill} if class_path else fill
    cli.config = cli.parser.parse_object({subcommand: {"model": model}}, cli.config)
