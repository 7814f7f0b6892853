"""Serve several policies on the same sessions (common random numbers) and compare them with paired SEs.

Every arm sees the same session starts, the same retrieval and the same per-depth uniforms, so the
difference of two arms on one session is mostly the effect of the policies; the standard error of the mean
paired difference is then far below that of two independent samples. Relative changes carry a delta-method
SE that uses the covariance of the paired means.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from stcrank.simulation.config import ExploreConfig, FocusConfig
from stcrank.simulation.explore import ExploreResult, sample_focus_starts, sample_visits, simulate_explore
from stcrank.simulation.focus import FocusResult, FocusStarts, simulate_focus
from stcrank.simulation.policies import EPolicy, FPolicy
from stcrank.simulation.truth import return_prob
from stcrank.simulation.world import World

FOCUS_METRICS = (
    "purchases",
    "ipv",
    "depth",
    "gmv",
    "converted",
    "return_prob",
    "expected_purchases",
    "expected_ipv",
    "expected_depth",
    "expected_gmv",
)
"""Per-session metrics of :func:`evaluate_focus`. ``purchases``, ``ipv``, ``depth`` and ``gmv`` are the sampled
outcomes; each ``expected_<name>`` scores every served list by its closed-form expected outcomes given the state
it was served in (:mod:`stcrank.simulation.expectation`): the same mean, a much smaller paired standard error."""

EXPLORE_METRICS = (
    "purchases",
    "ipv",
    "gmv",
    "return_prob",
    "e_exposures",
    "e_clicks",
    "e_purchases",
    "f_entries",
    "f_purchases",
    "f_ipv",
    "f_depth",
    "expected_purchases",
    "expected_ipv",
    "expected_gmv",
    "expected_e_exposures",
    "expected_e_clicks",
    "expected_e_purchases",
    "expected_f_entries",
    "expected_f_purchases",
    "expected_f_ipv",
    "expected_f_depth",
)
"""Per-visit metrics of :func:`evaluate_explore` (``purchases``, ``ipv`` and ``gmv`` are E + F). Each
``expected_<name>`` is the closed-form expectation of the E-stage part over the homepage draws plus the entered
F sessions' per-list expectations."""


def expected_metric(name: str, available: Sequence[str]) -> str:
    """The closed-form counterpart ``expected_<name>`` of a sampled metric when there is one, else ``name``.

    Args:
        name: A metric name (``purchases``).
        available: The metrics of an evaluation.

    Returns:
        ``expected_<name>`` if it is in ``available``, else ``name`` (e.g. ``return_prob``, a non-linear function
        of a whole session's outcomes, has only its sampled value).
    """
    candidate = f"expected_{name}"
    return candidate if candidate in available else name


@dataclass(frozen=True)
class MetricSummary:
    """One metric of one policy, against a baseline when there is one.

    Attributes:
        policy: Policy name.
        metric: Metric name.
        mean: Mean per session (visit).
        se: Standard error of the mean.
        baseline: Name of the baseline (None for the baseline itself or without one).
        delta: Mean paired difference ``policy - baseline``.
        delta_se: Its standard error.
        relative: ``mean / baseline_mean - 1``.
        relative_se: Its delta-method standard error.
        z: ``delta / delta_se``.
    """

    policy: str
    metric: str
    mean: float
    se: float
    baseline: str | None = None
    delta: float | None = None
    delta_se: float | None = None
    relative: float | None = None
    relative_se: float | None = None
    z: float | None = None


@dataclass(frozen=True)
class PairedDelta:
    """Paired comparison of two per-session samples ``a`` (policy) and ``b`` (baseline)."""

    mean_a: float
    mean_b: float
    delta: float
    delta_se: float
    relative: float
    relative_se: float
    z: float


def paired_delta(a: Tensor, b: Tensor) -> PairedDelta:
    """Compare two paired samples (same sessions, same random numbers).

    Args:
        a: Per-session values under the policy, ``[S]``.
        b: Per-session values under the baseline, ``[S]``.

    Returns:
        Means, the mean difference and its SE, the relative change and its delta-method SE, and z.

    Raises:
        ValueError: If the samples differ in shape or have fewer than two sessions.
    """
    if a.shape != b.shape or a.dim() != 1 or a.numel() < 2:
        raise ValueError(f"paired samples must be 1-D, of one length >= 2; got {tuple(a.shape)}, {tuple(b.shape)}")
    a, b = a.double(), b.double()
    n = a.numel()
    ma, mb = float(a.mean()), float(b.mean())
    diff = a - b
    delta = ma - mb
    delta_se = float(diff.std()) / math.sqrt(n)
    va, vb = float(a.var()) / n, float(b.var()) / n
    cov = float(((a - ma) * (b - mb)).sum()) / (n - 1) / n
    if mb != 0:
        relative = ma / mb - 1
        rel_var = va / mb**2 + ma**2 * vb / mb**4 - 2 * ma * cov / mb**3
        relative_se = math.sqrt(max(rel_var, 0.0))
    else:
        relative, relative_se = math.nan, math.nan
    z = delta / delta_se if delta_se > 0 else (0.0 if delta == 0 else math.copysign(math.inf, delta))
    return PairedDelta(ma, mb, delta, delta_se, relative, relative_se, z)


class Evaluation:
    """Per-session metrics of several policies served on the same sessions.

    Args:
        metrics: Policy name -> metric name -> per-session values ``[S]`` (same sessions for every policy).
        category_names: Names of the categories.
        purchase_depth: Policy name -> ``(category, depth)`` of every F-stage purchase.
        category_purchases: Policy name -> purchases per session by category, ``[S, C]``.
    """

    def __init__(
        self,
        metrics: Mapping[str, Mapping[str, Tensor]],
        category_names: tuple[str, ...],
        purchase_depth: Mapping[str, tuple[Tensor, Tensor]],
        category_purchases: Mapping[str, Tensor],
    ) -> None:
        if not metrics:
            raise ValueError("Evaluation needs at least one policy")
        self.metrics = {p: dict(m) for p, m in metrics.items()}
        self.category_names = category_names
        self.purchase_depth = dict(purchase_depth)
        self.category_purchases = dict(category_purchases)

    @property
    def policies(self) -> list[str]:
        """Names of the policies, in the order they were served."""
        return list(self.metrics)

    @property
    def sessions(self) -> int:
        """Number of sessions (visits) per policy."""
        first = next(iter(self.metrics.values()))
        return next(iter(first.values())).numel()

    def _check(self, name: str | None) -> None:
        if name is not None and name not in self.metrics:
            raise KeyError(f"unknown policy {name!r}; the policies are {self.policies}")

    def summary(self, baseline: str | None = None) -> list[MetricSummary]:
        """Mean and SE of every metric of every policy, with paired deltas against ``baseline``.

        Args:
            baseline: Name of the baseline policy; None for means only.

        Returns:
            One row per (policy, metric).
        """
        self._check(baseline)
        rows = []
        for policy, metrics in self.metrics.items():
            for metric, values in metrics.items():
                v = values.double()
                mean, se = float(v.mean()), float(v.std()) / math.sqrt(v.numel())
                if baseline is None or policy == baseline:
                    rows.append(MetricSummary(policy, metric, mean, se))
                    continue
                d = paired_delta(values, self.metrics[baseline][metric])
                rows.append(
                    MetricSummary(
                        policy, metric, mean, se, baseline, d.delta, d.delta_se, d.relative, d.relative_se, d.z
                    )
                )
        return rows

    def compare(self, policy: str, baseline: str, metric: str) -> PairedDelta:
        """Paired comparison of one metric.

        Args:
            policy: Policy name.
            baseline: Baseline name.
            metric: Metric name.

        Returns:
            The paired delta.
        """
        self._check(policy)
        self._check(baseline)
        return paired_delta(self.metrics[policy][metric], self.metrics[baseline][metric])

    def depth_at_purchase(self) -> list[dict[str, object]]:
        """Mean F-stage depth at purchase by category and policy (paper Table 7), with SEs.

        Returns:
            Rows ``{"policy", "category", "purchases", "mean_depth", "se"}``, ``"all"`` first per policy.
        """
        rows: list[dict[str, object]] = []
        for policy, (category, depth) in self.purchase_depth.items():
            groups = [("all", torch.ones_like(category, dtype=torch.bool))]
            groups += [(name, category == c) for c, name in enumerate(self.category_names)]
            for name, mask in groups:
                d = depth[mask].double()
                count = int(mask.sum())
                mean = float(d.mean()) if count else math.nan
                se = float(d.std()) / math.sqrt(count) if count > 1 else math.nan
                rows.append({"policy": policy, "category": name, "purchases": count, "mean_depth": mean, "se": se})
        return rows

    def category_breakdown(self, policy: str, baseline: str) -> list[dict[str, object]]:
        """Purchase change by category and its share of the total change (paper Table 6), paired SEs.

        Args:
            policy: Policy name.
            baseline: Baseline name.

        Returns:
            Rows ``{"category", "delta", "delta_se", "share"}`` sorted by ``delta`` descending.
        """
        self._check(policy)
        self._check(baseline)
        a, b = self.category_purchases[policy].double(), self.category_purchases[baseline].double()
        diff = a - b
        total = float(diff.sum(1).mean())
        rows = []
        for c, name in enumerate(self.category_names):
            delta = float(diff[:, c].mean())
            se = float(diff[:, c].std()) / math.sqrt(diff.shape[0])
            share = delta / total if total != 0 else math.nan
            rows.append({"category": name, "delta": delta, "delta_se": se, "share": share})
        return sorted(rows, key=lambda r: -float(r["delta"]))

    def to_dict(self, baseline: str | None = None) -> dict[str, object]:
        """JSON-ready summary: sessions, policies, metric rows and depth at purchase."""
        return {
            "sessions": self.sessions,
            "policies": self.policies,
            "baseline": baseline,
            "summary": [asdict(r) for r in self.summary(baseline)],
            "depth_at_purchase": self.depth_at_purchase(),
        }

    def to_markdown(self, baseline: str | None = None) -> str:
        """A Markdown table: mean ± SE per metric and policy, and the relative change vs the baseline."""
        metrics = list(next(iter(self.metrics.values())))
        header = "| policy | " + " | ".join(metrics) + " |"
        lines = [header, "|" + "---|" * (len(metrics) + 1)]
        by_key = {(r.policy, r.metric): r for r in self.summary(baseline)}
        for policy in self.policies:
            cells = []
            for metric in metrics:
                r = by_key[(policy, metric)]
                cell = f"{r.mean:.4g} ± {r.se:.2g}"
                if r.relative is not None:
                    cell += f" ({100 * r.relative:+.2f}% ± {100 * (r.relative_se or 0):.2f})"
                cells.append(cell)
            lines.append(f"| {policy} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def focus_metrics(world: World, result: FocusResult) -> dict[str, Tensor]:
    """Per-session metrics of F sessions (see :data:`FOCUS_METRICS`).

    Args:
        world: The world (for the return proxy).
        result: Simulated sessions.

    Returns:
        Metric name -> ``[S]`` tensor.
    """
    return {
        "purchases": result.purchases.double(),
        "ipv": result.ipv.double(),
        "depth": result.depth.double(),
        "gmv": result.gmv.double(),
        "converted": (result.purchases > 0).double(),
        "return_prob": return_prob(world, result.ipv, result.purchases).double(),
        "expected_purchases": result.expected_purchases.double(),
        "expected_ipv": result.expected_ipv.double(),
        "expected_depth": result.expected_depth.double(),
        "expected_gmv": result.expected_gmv.double(),
    }


def explore_metrics(world: World, result: ExploreResult) -> dict[str, Tensor]:
    """Per-visit metrics of homepage visits (see :data:`EXPLORE_METRICS`).

    Args:
        world: The world (for the return proxy).
        result: Simulated visits.

    Returns:
        Metric name -> ``[V]`` tensor.
    """
    purchases = result.e_purchases + result.f_purchases
    ipv = result.e_clicks + result.f_ipv
    n_visits = result.users.numel()
    focus = result.focus

    def per_visit(values: Tensor) -> Tensor:
        return torch.zeros(n_visits, dtype=torch.float64).index_add_(0, result.focus_visit, values.double())

    e = result.expected
    f_purchases, f_ipv = per_visit(focus.expected_purchases), per_visit(focus.expected_ipv)
    return {
        "purchases": purchases.double(),
        "ipv": ipv.double(),
        "gmv": (result.e_gmv + result.f_gmv).double(),
        "return_prob": return_prob(world, ipv, purchases).double(),
        "e_exposures": result.e_exposures.double(),
        "e_clicks": result.e_clicks.double(),
        "e_purchases": result.e_purchases.double(),
        "f_entries": result.f_entries.double(),
        "f_purchases": result.f_purchases.double(),
        "f_ipv": result.f_ipv.double(),
        "f_depth": result.f_depth.double(),
        "expected_purchases": e["e_purchases"] + f_purchases,
        "expected_ipv": e["e_clicks"] + f_ipv,
        "expected_gmv": e["e_gmv"] + per_visit(focus.expected_gmv),
        "expected_e_exposures": e["e_exposures"],
        "expected_e_clicks": e["e_clicks"],
        "expected_e_purchases": e["e_purchases"],
        "expected_f_entries": e["f_entries"],
        "expected_f_purchases": f_purchases,
        "expected_f_ipv": f_ipv,
        "expected_f_depth": per_visit(focus.expected_depth),
    }


def evaluate_focus(
    world: World,
    policies: Mapping[str, FPolicy],
    *,
    sessions: int = 20000,
    seed: int = 0,
    config: FocusConfig | None = None,
    chunk_size: int = 8192,
    starts: FocusStarts | None = None,
) -> Evaluation:
    """Serve F-stage policies on the same sessions with common random numbers.

    Args:
        world: The world.
        policies: Name -> policy.
        sessions: Sessions per arm (the same sessions for every arm).
        seed: Seed of the session starts and every draw.
        config: F-stage serving config.
        chunk_size: Sessions simulated together.
        starts: The sessions to serve (then ``sessions`` is ignored); by default ``sessions`` F entries of
            homepage traffic (:func:`~stcrank.simulation.explore.sample_focus_starts`).

    Returns:
        The evaluation; ``summary(baseline=...)`` gives paired deltas.
    """
    if not policies:
        raise ValueError("evaluate_focus needs at least one policy")
    if starts is None:
        starts = sample_focus_starts(world, sessions, seed=seed)
    metrics, depth, category = {}, {}, {}
    for name, policy in policies.items():
        result = simulate_focus(world, policy, starts, config=config, seed=seed, chunk_size=chunk_size)
        metrics[name] = focus_metrics(world, result)
        depth[name] = (result.purchase_category, result.purchase_depth)
        category[name] = result.category_purchases
    return Evaluation(metrics, world.category_names, depth, category)


def evaluate_explore(
    world: World,
    arms: Mapping[str, tuple[EPolicy, FPolicy]],
    *,
    visits: int = 20000,
    seed: int = 0,
    config: ExploreConfig | None = None,
    chunk_size: int = 4096,
) -> Evaluation:
    """Serve (homepage policy, F policy) arms on the same visits with common random numbers.

    Args:
        world: The world.
        arms: Name -> ``(E policy, F policy)``.
        visits: Homepage visits per arm.
        seed: Seed of the visits and every draw.
        config: E-stage config (with its F-stage config).
        chunk_size: Visits simulated together.

    Returns:
        The evaluation (per-visit metrics; depth at purchase and category breakdown cover E + F purchases
        in the F stage only for depth, E + F for categories).
    """
    if not arms:
        raise ValueError("evaluate_explore needs at least one arm")
    users, keys = sample_visits(world, visits, seed=seed)
    metrics, depth, category = {}, {}, {}
    for name, (e_policy, f_policy) in arms.items():
        result = simulate_explore(
            world, e_policy, f_policy, users, keys=keys, seed=seed, config=config, chunk_size=chunk_size
        )
        metrics[name] = explore_metrics(world, result)
        focus = result.focus
        depth[name] = (focus.purchase_category, focus.purchase_depth)
        category[name] = result.category_purchases
    return Evaluation(metrics, world.category_names, depth, category)
