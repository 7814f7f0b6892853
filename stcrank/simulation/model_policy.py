"""Serve trained models in the simulator: a predictor from a multi-task network, and policies built from specs.

A policy is *predictions -> ensemble -> re-ranker* (:class:`~stcrank.simulation.policies.ValuePolicy`). The
predictions come from a trained checkpoint (:class:`ModelPredictor`, which scores the live request's feature
columns, :meth:`~stcrank.simulation.requests.FRequest.columns`, exactly as the model saw them in the logs) or
from the truth plus noise (:class:`~stcrank.simulation.policies.TruthPredictor`). :func:`build_policy` turns a
plain mapping (a YAML entry of ``stcrank simulate``) into the policy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from stcrank import registry
from stcrank.plugins import Ensemble
from stcrank.simulation.policies import (
    EPolicy,
    EPredictor,
    ETruthPredictor,
    EValuePolicy,
    FPolicy,
    FPredictor,
    TruthPredictor,
    ValuePolicy,
    WeightedSum,
)
from stcrank.simulation.requests import ERequest, FRequest


class ModelPredictor(FPredictor):
    """Predicted probabilities of a trained multi-task model for every candidate of a request.

    Args:
        model: A :class:`~stcrank.tasks.multitask.MultiTaskRankingTask` (or any module with
            ``predict_probabilities(columns) -> {task: [R, n]}``, or a network returning logits per task).
        chunk_rows: Requests scored per forward pass (bounds memory: ``chunk_rows * n`` rows at once).
    """

    def __init__(self, model: nn.Module, chunk_rows: int = 512) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.model = model.eval()
        self.chunk_rows = chunk_rows

    def _score(self, columns: dict[str, Tensor]) -> dict[str, Tensor]:
        if hasattr(self.model, "predict_probabilities"):
            return self.model.predict_probabilities(columns)
        return {task: torch.sigmoid(logit) for task, logit in self.model(columns).items()}

    @torch.no_grad()
    def predict(self, request: FRequest) -> dict[str, Tensor]:
        """Return ``{task: probability [R, n]}`` for every head of the model."""
        columns = request.columns()
        rows = request.candidates.shape[0]
        parts: list[dict[str, Tensor]] = []
        for start in range(0, rows, self.chunk_rows):
            chunk = {name: values[start : start + self.chunk_rows] for name, values in columns.items()}
            parts.append(self._score(chunk))
        return {task: torch.cat([p[task] for p in parts]).float() for task in parts[0]}


class EModelPredictor(EPredictor):
    """Predicted probabilities of a trained E-stage model (e.g. :class:`~stcrank.tasks.esmm.ESMMTask`) on homepages.

    Scores the homepage candidates' feature columns (:meth:`~stcrank.simulation.requests.ERequest.columns`),
    named as in the E log the model was trained on. An ESMM task returns its factors (``ctr``, ``sdr_star``,
    ``cvr_f_star``, ``cvr_detail``) and products (``cvr_e``, ...), the inputs of the ``cross_stage`` ensemble.

    Args:
        model: The trained task (``predict_probabilities(columns) -> {name: [R, n]}``) or network.
        chunk_rows: Homepage requests scored per forward pass.
    """

    def __init__(self, model: nn.Module, chunk_rows: int = 512) -> None:
        self.scorer = ModelPredictor(model, chunk_rows)

    def predict(self, request: ERequest) -> dict[str, Tensor]:
        """Return ``{name: probability [R, n]}`` for every prediction of the model."""
        return self.scorer.predict(request)  # the scorer only reads columns() and candidates


def load_task(config: str | Path, checkpoint: str | Path, data_root: str | Path | None) -> nn.Module:
    """Rebuild a trained task from its experiment config and load a checkpoint's weights.

    The config is parsed as ``stcrank fit`` parses it (so the network matches the checkpoint) with
    ``data.root`` set to ``data_root`` for the feature sizes; only the weights are read from the checkpoint
    (``torch.load(weights_only=True)``: no arbitrary objects are unpickled).

    Args:
        config: The experiment config the model was trained with.
        checkpoint: A Lightning checkpoint of that run.
        data_root: The log directory (its manifest gives the feature sizes); the config's ``data.root`` when None.

    Returns:
        The task in eval mode.

    Raises:
        FileNotFoundError: If the config or checkpoint is missing.
        ValueError: If the checkpoint holds no ``state_dict`` or does not fit the network.
    """
    from stcrank.commands.lightning import StcrankCLI, import_components
    from stcrank.data.base import BaseDataModule
    from stcrank.tasks.base import BaseTask

    for path in (config, checkpoint):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: file not found")
    import_components()
    cli = StcrankCLI(
        BaseTask,
        BaseDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=["-c", str(config)] + ([] if data_root is None else [f"--data.root={data_root}"]),
        save_config_callback=None,
    )
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ValueError(f"{checkpoint}: not a Lightning checkpoint (no 'state_dict')")
    try:
        cli.model.load_state_dict(state["state_dict"])
    except RuntimeError as error:
        raise ValueError(f"{checkpoint}: weights do not fit the network of {config}: {error}") from error
    return cli.model.eval()


def build_ensemble(spec: Ensemble | Mapping[str, Any] | str) -> Ensemble | WeightedSum:
    """An ensemble from a spec.

    Args:
        spec: An :class:`~stcrank.plugins.Ensemble`; a mapping of task weights (``{"cvr": 1, "vtr": 0.1}``,
            the linear formula); ``{"name": "multiplicative", "weights": {...}}`` for any ``stcrank.ensembles``
            plugin; or ``{"class_path": ..., "init_args": ...}`` as ``stcrank tune`` prints it.

    Returns:
        The ensemble.
    """
    if isinstance(spec, Ensemble):
        return spec
    if isinstance(spec, str):
        return registry.resolve("ensembles", spec)
    spec = dict(spec)
    if "class_path" in spec:
        # Loaded through the registry: a class that is no ensemble plugin is refused before it is built.
        cls = registry.load("ensembles", str(spec["class_path"]))
        return cls(**dict(spec.get("init_args") or {}))
    if "name" in spec:
        return registry.build(
            "ensembles", spec["name"], **dict(spec.get("init_args", {"weights": spec.get("weights")}))
        )
    return WeightedSum({task: float(weight) for task, weight in spec.items()})


def build_reranker(spec: Mapping[str, Any] | str | None) -> Any:
    """A re-ranker from a plugin name, ``{"name": ..., "init_args": {...}}``, or None (point-wise top k)."""
    if spec is None:
        return None
    if isinstance(spec, str):
        return registry.build("rerankers", spec)
    spec = dict(spec)
    return registry.build("rerankers", spec["name"], **dict(spec.get("init_args", {})))


def _predictor(
    spec: Mapping[str, Any],
    data_root: str | Path | None,
    truth: Callable[..., Any],
    truth_defaults: Mapping[str, Any],
    model: Callable[[nn.Module], Any],
    kind: str,
) -> Any:
    # The three spec forms shared by focus (F) and homepage (E) predictors.
    spec = dict(spec)
    if "truth" in spec:
        return truth(**{**truth_defaults, **dict(spec["truth"] or {})})
    if "model" in spec:
        return model(spec["model"])
    if "checkpoint" in spec and "config" in spec:
        if data_root is None:
            raise ValueError("a checkpoint predictor needs the log directory (data root)")
        return model(load_task(spec["config"], spec["checkpoint"], data_root))
    raise ValueError(
        f"{kind}predictor spec must have 'truth', 'model' or 'config' + 'checkpoint'; got keys {sorted(spec)}"
    )


def build_predictor(spec: Mapping[str, Any], data_root: str | Path | None = None, seed: int = 0) -> FPredictor:
    """A predictor from ``{"truth": {noise, vtr_threshold, sdr_label}}`` or ``{"config": ..., "checkpoint": ...}``.

    Args:
        spec: The predictor spec.
        data_root: Log directory (needed for a checkpoint).
        seed: Default seed of the truth predictor's noise.

    Returns:
        The predictor.

    Raises:
        ValueError: If the spec is neither form.
    """
    return _predictor(spec, data_root, TruthPredictor, {"seed": seed}, ModelPredictor, "")


def build_policy(spec: Mapping[str, Any], data_root: str | Path | None = None, seed: int = 0) -> FPolicy:
    """An F-stage policy from a spec.

    Args:
        spec: ``{"predictor": ..., "ensemble": ..., "reranker": ... (optional), "continue_task": "sdr"}``; see
            :func:`build_predictor`, :func:`build_ensemble` and :func:`build_reranker`.
        data_root: Log directory (for checkpoints).
        seed: Default seed of truth-predictor noise.

    Returns:
        The policy.
    """
    if "predictor" not in spec or "ensemble" not in spec:
        raise ValueError(f"a policy spec needs 'predictor' and 'ensemble'; got keys {sorted(spec)}")
    return ValuePolicy(
        build_predictor(spec["predictor"], data_root, seed),
        build_ensemble(spec["ensemble"]),
        build_reranker(spec.get("reranker")),
        continue_task=str(spec.get("continue_task", "sdr")),
    )


def build_e_predictor(spec: Mapping[str, Any], data_root: str | Path | None = None, seed: int = 0) -> EPredictor:
    """A homepage predictor from ``{"truth": {noise, ...}}``, ``{"model": task}`` or ``{"config", "checkpoint"}``.

    Args:
        spec: The predictor spec (a checkpoint is rebuilt with :func:`load_task`).
        data_root: Log directory (needed for a checkpoint).
        seed: Default seed of the truth predictor's noise.

    Returns:
        The predictor.

    Raises:
        ValueError: If the spec is none of the forms.
    """
    return _predictor(spec, data_root, ETruthPredictor, {"noise": 0.8, "seed": seed}, EModelPredictor, "E ")


def build_e_policy(spec: Mapping[str, Any] | None, seed: int = 0, data_root: str | Path | None = None) -> EPolicy:
    """A homepage policy from a spec; None gives noisy-ctr ranking.

    Forms:

    * ``{"truth": {"noise": ...}, "ensemble": {"ctr": 1.0}}``: the truth plus logit noise;
    * ``{"predictor": {"config": ..., "checkpoint": ...}, "ensemble": ...}`` (or ``{"model": task}``, or
      ``{"truth": ...}``): a trained E-stage model such as ``configs/experiments/stcrank/esmm_explore.yaml``.

    The cross-stage look-ahead policy (eq. 10) is a trained ESMM served with
    ``{"name": "cross_stage", "init_args": {"lookahead_weight": 1.0}}``; ``lookahead_weight: 0`` ranks the same
    model point-wise by ``cvr_e``. A truth-with-noise variant reads the ``f_conv`` prediction of
    :class:`~stcrank.simulation.policies.ETruthPredictor`.

    Args:
        spec: The E-policy spec, or None.
        seed: Seed of the prediction noise.
        data_root: Log directory (for a checkpoint predictor).

    Returns:
        The homepage policy (greedy, no exploration).
    """
    spec = dict(spec or {})
    if "predictor" in spec:
        predictor = build_e_predictor(spec["predictor"], data_root, seed)
    else:
        predictor = ETruthPredictor(**{"noise": 0.8, "seed": seed, **dict(spec.get("truth") or {})})
    return EValuePolicy(predictor, build_ensemble(spec.get("ensemble", {"ctr": 1.0})))
