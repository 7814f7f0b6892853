"""A simulator-based tuning objective: serve each trial's ensemble in the e-shop simulator.

Where :class:`~stcrank.tuning.objectives.SumAucObjective` scores cached predictions offline, this objective
measures what the paper ultimately optimises: purchases, IPV and session depth per F session, with every trial
served on the same sessions (common random numbers), so trials differ by their weights, not by luck.

Usage::

    stcrank tune --tasks [cvr,vtr,sdr] --fixed-task cvr --objective stcrank.tuning.simulated.SimulatedOutcomes
        --objective.data runs/eshop/logs --objective.predictor '{truth: {noise: 0.5}}' --n-trials 50
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from stcrank.tuning.objectives import Objective, TuningContext, build_ensemble

METRICS: dict[str, str] = {"purchases": "expected_purchases", "ipv": "expected_ipv", "depth": "depth"}
"""Objective name -> per-session simulator metric (the ``expected_*`` sums of true probabilities have the same
means as the realised counts with far smaller variance)."""


class SimulatedOutcomes(Objective):
    """Purchases, IPV and depth per F session from serving the trial's ensemble in the simulator.

    Args:
        data: Log directory written by ``stcrank data synth-eshop`` (the world is rebuilt from its manifest).
        predictor: Predictor spec (see :func:`stcrank.simulation.model_policy.build_predictor`):
            ``{"truth": {...}}`` or ``{"config": ..., "checkpoint": ...}``.
        reranker: Optional ``stcrank.rerankers`` name or ``{"name", "init_args"}``.
        sessions: F sessions per trial (the same sessions for every trial).
        seed: Seed of the sessions and draws.
        mode: ``"multi"`` maximises purchases, IPV and depth together (Pareto front); ``"purchases"`` only
            purchases (the other two are recorded).
    """

    def __init__(
        self,
        data: str,
        predictor: dict[str, Any] | None = None,
        reranker: dict[str, Any] | str | None = None,
        sessions: int = 5000,
        seed: int = 0,
        mode: Literal["multi", "purchases"] = "multi",
    ) -> None:
        if sessions < 2:
            raise ValueError(f"sessions must be >= 2, got {sessions}")
        if mode not in ("multi", "purchases"):
            raise ValueError(f"mode must be 'multi' or 'purchases', got {mode!r}")
        self.data = str(data)
        self.predictor = dict(predictor or {"truth": {"noise": 0.5}})
        self.reranker = reranker
        self.sessions = sessions
        self.seed = seed
        self.mode = mode

    def setup(self, context: TuningContext) -> None:
        """Rebuild the world, its F-stage config and the predictor once per process."""
        from stcrank.data.eshop.reader import read_manifest
        from stcrank.data.eshop.synth import explore_config_of, load_world
        from stcrank.simulation.model_policy import build_predictor, build_reranker

        if not Path(self.data).exists():
            raise FileNotFoundError(f"{self.data}: log directory not found")
        manifest = read_manifest(self.data)
        self.world = load_world(manifest)
        self.config = explore_config_of(manifest).focus
        self.ensemble_name = context.ensemble
        self.model_predictor = build_predictor(self.predictor, self.data, self.seed)
        self.model_reranker = build_reranker(self.reranker)

    @property
    def names(self) -> tuple[str, ...]:
        """``("purchases", "ipv", "depth")``, or ``("purchases",)`` in ``purchases`` mode."""
        return tuple(METRICS) if self.mode == "multi" else ("purchases",)

    @property
    def directions(self) -> tuple[str, ...]:
        """All maximised."""
        return ("maximize",) * len(self.names)

    def evaluate(self, weights: dict[str, float]) -> dict[str, float]:
        """Serve the ensemble with these weights and return the mean per-session metrics."""
        from stcrank.simulation.evaluation import evaluate_focus
        from stcrank.simulation.policies import ValuePolicy

        policy = ValuePolicy(self.model_predictor, build_ensemble(self.ensemble_name, weights), self.model_reranker)
        evaluation = evaluate_focus(
            self.world, {"trial": policy}, sessions=self.sessions, seed=self.seed, config=self.config
        )
        metrics = evaluation.metrics["trial"]
        return {name: float(metrics[key].double().mean()) for name, key in METRICS.items()}
