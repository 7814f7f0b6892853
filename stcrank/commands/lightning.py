"""``stcrank fit|validate|test|predict``: stock LightningCLI over stcrank's tasks and data modules.

Beside LightningCLI's own behaviour, the commands:

* name each run after its experiment (``--experiment``; by default the first ``-c`` file's path under
  ``configs/experiments/`` without ``.yaml``, e.g. ``recflow/rank/din_baseline``), which replaces
  ``{experiment}`` in the trainer settings, so the trainer configs put every run of an experiment under
  ``runs/<experiment>/``;
* save the checkpoints of a ``ModelCheckpoint`` without a ``dirpath`` next to the logger's version folders,
  unversioned (``<save_dir>/<name>/checkpoints/last.ckpt``): ``--ckpt_path last`` then finds the last fit's weights;
* refuse ``validate``, ``test`` and ``predict`` without trained weights (``--ckpt_path``) unless ``--untrained``
  says so;
* read the settings saved in the checkpoint (``--ckpt_path FILE`` or ``last``) under the rules of
  :mod:`stcrank.commands.checkpoint_settings`: what the command gives wins, and ``fit`` refuses to resume under
  other settings;
* name the file when the disk is full while writing checkpoints, logs or predictions (:mod:`stcrank.io`);
* print the test and validation metrics grouped by evaluation set, each metric once;
* write ``predict``'s rows to a Parquet file (``--predictions``; see :mod:`stcrank.tasks.predictions`).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from stcrank import registry
from stcrank.commands.checkpoint_settings import merge_checkpoint_hparams
from stcrank.commands.help_format import PlainHelpParser
from stcrank.commands.results import format_results
from stcrank.commands.usage import RaisingParserMixin
from stcrank.data.base import BaseDataModule
from stcrank.errors import ConfigError
from stcrank.io import writing
from stcrank.tasks.base import BaseTask
from stcrank.tasks.predictions import PredictionWriter

EVALUATION_COMMANDS = ("validate", "test", "predict")
PLACEHOLDER = "{experiment}"


class StcrankArgumentParser(RaisingParserMixin, PlainHelpParser, LightningArgumentParser):
    """LightningCLI's parser: one-line :class:`~stcrank.errors.UsageError` on a wrong command line, plain-text help."""


def experiment_name(config_files: list[Any] | None, model_class_path: str | None) -> str:
    """The default experiment name of a run.

    Args:
        config_files: The ``-c`` files, in order.
        model_class_path: The task's class path (used when no file was given).

    Returns:
        The first file's path under its ``experiments`` folder without the suffix (``recflow/rank/din_baseline``),
        else the file's stem, else the task's class name.
    """
    if config_files:
        parts = Path(str(config_files[0])).with_suffix("").parts
        if "experiments" in parts[:-1]:
            start = len(parts) - 1 - parts[::-1].index("experiments") + 1
            return "/".join(parts[start:])
        return parts[-1]
    return (model_class_path or "run").rpartition(".")[2]


def _substitute(value: Any, name: str) -> Any:
    if isinstance(value, str):
        return value.replace(PLACEHOLDER, name)
    if isinstance(value, Namespace):
        for key in list(value.keys()):
            value[key] = _substitute(value[key], name)
        return value
    if isinstance(value, list):
        return [_substitute(item, name) for item in value]
    if isinstance(value, dict):
        return {key: _substitute(item, name) for key, item in value.items()}
    return value


def run_folder(logger: Logger | None, default_root_dir: str) -> Path:
    """The unversioned folder of an experiment's runs: ``<save_dir>/<name>`` of the logger, else the root dir."""
    if logger is None or getattr(logger, "save_dir", None) is None:
        return Path(default_root_dir)
    return Path(logger.save_dir) / str(logger.name)


def planned_checkpoint_folder(trainer: Namespace | None) -> Path:
    """Where the trainer settings will put checkpoints, read from the settings before anything is built."""
    trainer = trainer or Namespace()
    root = trainer.get("default_root_dir") or os.getcwd()
    for callback in trainer.get("callbacks") or []:
        if isinstance(callback, Namespace) and str(callback.get("class_path", "")).endswith("ModelCheckpoint"):
            dirpath = (callback.get("init_args") or Namespace()).get("dirpath")
            if dirpath:
                return Path(dirpath)
    logger = trainer.get("logger")
    if isinstance(logger, Namespace):
        init_args = logger.get("init_args") or Namespace()
        return Path(init_args.get("save_dir") or root) / str(init_args.get("name") or "lightning_logs") / "checkpoints"
    if logger is False:
        return Path(root) / "checkpoints"
    return Path(root) / "lightning_logs" / "checkpoints"


def last_checkpoint(folder: Path) -> str | None:
    """The newest ``last*.ckpt`` in ``folder`` (the one Lightning loads for ``--ckpt_path last``), or None."""
    found = sorted(folder.glob("last*.ckpt"), key=lambda path: path.stat().st_mtime)
    return str(found[-1]) if found else None


class StcrankCLI(LightningCLI):
    """LightningCLI in subclass mode for the task (model) and the data module.

    Any :class:`~stcrank.tasks.base.BaseTask` is a valid ``model`` and any
    :class:`~stcrank.data.base.BaseDataModule` a valid ``data``; the data module's ``feature_sizes`` are linked
    into the task when both are built. See the module docstring for what the commands add to LightningCLI.

    Args:
        only_subcommand: Build the parser of this subcommand only (``fit``...), as the command line knows which
            one runs; each subcommand's parser costs a noticeable share of start-up. All of them when None.
    """

    def __init__(self, *args: Any, only_subcommand: str | None = None, **kwargs: Any) -> None:
        self.only_subcommand = only_subcommand
        super().__init__(*args, **kwargs)

    def subcommands(self) -> dict[str, set[str]]:  # type: ignore[override]
        """Lightning's subcommands, or only :attr:`only_subcommand` when it is one of them."""
        every = LightningCLI.subcommands()
        return {self.only_subcommand: every[self.only_subcommand]} if self.only_subcommand in every else every

    def _parse_ckpt_path(self) -> None:
        # The experiment's name places its checkpoints, so it comes first: `--ckpt_path last` is the newest
        # last*.ckpt there (as Lightning will resolve it), and its settings are read like those of a named file.
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        self._name_experiment(config)
        ckpt_path = config.get("ckpt_path")
        if ckpt_path == "last":
            ckpt_path = last_checkpoint(planned_checkpoint_folder(config.get("trainer")))
        # The checkpoint's hyper-parameters fill only what the command leaves out (stock LightningCLI lets them
        # override what the user gave); see stcrank.commands.checkpoint_settings.
        merge_checkpoint_hparams(self, self._args, ckpt_path)

    def _run_subcommand(self, subcommand: str) -> None:
        # A full disk while writing checkpoints, logs or predictions names the file (a torn checkpoint is removed).
        with writing(None, where=self.run_folder, remove_partial=True):
            super()._run_subcommand(subcommand)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Link the data module's ``feature_sizes`` into the task; add ``--experiment``."""
        parser.link_arguments("data.feature_sizes", "model.init_args.feature_sizes", apply_on="instantiate")
        parser.add_argument(
            "--experiment",
            type=str | None,
            default=None,
            help="Name of the run's folder under the trainer's save_dir (replaces {experiment} in the trainer "
            "settings); default: the first -c file's path under configs/experiments/ without .yaml.",
        )

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        # LightningCLI builds one parser per sub-command here (a private hook, the only one that knows which).
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand in EVALUATION_COMMANDS:
            parser.add_argument(
                "--untrained",
                type=bool,
                nargs="?",
                const=True,
                default=False,
                help="Run without trained weights, on purpose (e.g. a random baseline); otherwise --ckpt_path is "
                "required.",
            )
        if subcommand == "predict":
            parser.add_argument(
                "--predictions",
                type=str | None,
                default=None,
                help="Parquet file of the predictions (one row per scored request and item); default "
                "<save_dir>/<experiment>/predictions.parquet.",
            )
        return parser

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse ``args`` (the console entry point passes its own list, without ``--debug``).

        The arguments are kept for :meth:`_parse_ckpt_path`, which tells the settings a user gave from defaults.
        """
        self._args = args
        self.config = parser.parse_object(args) if isinstance(args, dict | Namespace) else parser.parse_args(args)

    @property
    def _subconfig(self) -> Namespace:
        return self.config[self.subcommand] if self.subcommand else self.config

    def _name_experiment(self, config: Namespace) -> None:
        """Name the experiment and put its name into the trainer settings."""
        model = config.get("model")
        class_path = model.get("class_path") if isinstance(model, Namespace) else None
        self.experiment = config.get("experiment") or experiment_name(config.get("config"), class_path)
        config["trainer"] = _substitute(config.get("trainer"), self.experiment)

    def before_instantiate_classes(self) -> None:
        """Check the checkpoint settings (the experiment was named when ``--ckpt_path`` was read)."""
        if self.subcommand is not None:
            self._check_checkpoint(planned_checkpoint_folder(self._subconfig.get("trainer")))

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        """Build the trainer; place checkpoints in the experiment's folder; add the predictions writer."""
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except (ValueError, MisconfigurationException) as error:
            # The Trainer checks its settings together (an unknown accelerator, devices it cannot have...).
            raise ConfigError(f"--trainer: {error}") from error
        self.run_folder = run_folder(trainer.logger, trainer.default_root_dir)
        for callback in trainer.callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = os.path.realpath(self.run_folder / "checkpoints")
        if self.subcommand == "predict":
            path = self._subconfig.get("predictions") or self.run_folder / "predictions.parquet"
            self.prediction_writer = PredictionWriter(path)
            trainer.callbacks.append(self.prediction_writer)
        return trainer

    # -- checks before a command runs ---------------------------------------------------------------------------

    def _check_checkpoint(self, folder: Path) -> None:
        """Refuse a missing checkpoint, or an evaluation without weights unless ``--untrained`` says so."""
        config = self._subconfig
        ckpt_path, untrained = config.get("ckpt_path"), config.get("untrained", False)
        required = self.subcommand in EVALUATION_COMMANDS
        where = str(folder)
        command = f"stcrank {self.subcommand}"
        if untrained:
            if ckpt_path is not None:
                raise ConfigError("--untrained and --ckpt_path exclude each other: give one of them")
            return
        if ckpt_path is None:
            if required:
                raise ConfigError(
                    f"{command} needs trained weights: pass --ckpt_path last (the last checkpoint of `stcrank fit` "
                    f"with this config, in {where}) or --ckpt_path FILE; --untrained runs freshly initialised "
                    "weights on purpose"
                )
            return
        if ckpt_path == "best" and required:
            raise ConfigError(
                "--ckpt_path best names the best checkpoint of a fit in the same process; from the command line "
                "pass --ckpt_path last or a checkpoint file"
            )
        if ckpt_path == "last":
            # For fit, "last" may be set before the first run (Lightning then starts fresh).
            if required and not any(folder.glob("last*.ckpt")):
                raise ConfigError(
                    f"--ckpt_path last: no last.ckpt in {where}; run `stcrank fit` with the same config (and "
                    "--experiment) first, or pass --ckpt_path FILE"
                )
        elif ckpt_path not in ("best", "hpc", "registry") and not Path(ckpt_path).is_file():
            raise ConfigError(
                f"--ckpt_path {ckpt_path}: no such file; `stcrank fit` with this config writes {where}/last.ckpt "
                "(--ckpt_path last finds it)"
            )

    def before_validate(self) -> None:
        """Print the results by set (:meth:`after_validate`), not as Lightning's table of dataloaders."""
        self.config_init[self.subcommand]["verbose"] = False

    def before_test(self) -> None:
        """Print the results by set (:meth:`after_test`), not as Lightning's table of dataloaders."""
        self.config_init[self.subcommand]["verbose"] = False

    def before_predict(self) -> None:
        """Stream the predictions to the file instead of holding them in memory."""
        self.config_init[self.subcommand]["return_predictions"] = False

    # -- output -------------------------------------------------------------------------------------------------

    def _print_results(self, prefix: str) -> None:
        metrics = {
            name.removeprefix(prefix): float(value)
            for name, value in self.trainer.callback_metrics.items()
            if name.startswith(prefix)
        }
        ckpt_path = self.trainer.ckpt_path or "untrained weights"
        title = f"{self.subcommand} results of {self.experiment} ({ckpt_path})"
        day = getattr(self.datamodule, "test_day" if self.subcommand == "test" else "val_day", None)
        if day:
            title += f" on {day}"
        log_dir = getattr(self.trainer.logger, "log_dir", None)
        footer = f"metrics: {Path(log_dir) / 'metrics.csv'}" if log_dir else ""
        print(format_results(title, metrics, self.model.metric_sets(), footer), flush=True)

    def after_validate(self) -> None:
        """Print the validation metrics by evaluation set."""
        self._print_results("val/")

    def after_test(self) -> None:
        """Print the test metrics by evaluation set."""
        self._print_results("test/")

    def after_predict(self) -> None:
        """Say where the predictions went."""
        writer, trainer = self.prediction_writer, self.trainer
        print(f"predict: wrote {writer.rows} rows to {writer.target(trainer.global_rank, trainer.world_size)}")


# -- Lightning's console output ------------------------------------------------------------------------------------


class _DropMessages(logging.Filter):
    def __init__(self, *starts: str) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.starts)


def quiet_lightning() -> None:
    """Silence the Lightning messages that say nothing about a stcrank run; every other warning stays."""
    # Lightning's own call of a torch API that torch deprecated: nothing a user can change.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # The RecFlow protocol has no validation day, so an empty validation loader is the default, not a mistake.
    warnings.filterwarnings("ignore", message=r"Total length of `\w+` across ranks is zero")
    # Every task also logs per epoch, so an epoch shorter than log_every_n_steps still writes its metrics.
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging")
    # stcrank's loaders gather whole batches from day parts decoded in the main process (num_workers=0 by design).
    warnings.filterwarnings("ignore", message=r".*does not have many workers")
    # PredictionWriter's rows carry their own request and item ids; it needs no batch indices from the loader.
    warnings.filterwarnings("ignore", message=r"Couldn't infer the batch indices fetched from your dataloader")
    # An advertisement for a hosted logging service.
    tip = _DropMessages("💡 Tip")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(tip)
    # The seed is in the run's config.yaml; printed before the settings are checked, it would precede every
    # configuration error.
    logging.getLogger("lightning.fabric.utilities.seed").addFilter(_DropMessages("Seed set to"))


def import_components() -> None:
    """Import every task, data module and installed plugin, so that configs can name them by class name.

    jsonargparse resolves a short class name only among subclasses it has seen imported.
    """
    importlib.import_module("stcrank.tasks")
    importlib.import_module("stcrank.data.modules")
    registry.import_all()


def main(argv: list[str] | None) -> StcrankCLI:
    """Run a Lightning command; ``argv`` starts with the command (``fit``...), None reads ``sys.argv``."""
    import_components()
    quiet_lightning()
    command = (sys.argv[1:] if argv is None else argv)[:1]
    return StcrankCLI(
        BaseTask,
        BaseDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=argv,
        parser_class=StcrankArgumentParser,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        only_subcommand=command[0] if command else None,
    )
