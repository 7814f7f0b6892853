"""Exit rates of served traffic (paper Table 2) and the calibration of the exit intercepts to them.

The paper reports, over served F-stage page views, the share after which the session ends at once: 19.7%
without a purchase and 61.3% after one (and 33.6% / 74.8% within 3 views, 42.9% / 78.8% within 5).
:func:`served_exit_rates` measures these on simulated traffic, both as realised frequencies and as
Rao-Blackwellised expectations (each view weighted by its true purchase probability and exit
probabilities), whose variance is far smaller. :func:`calibrate_exit_rates` moves the two exit intercepts
until a policy's served traffic shows the targets; its result is what :class:`BehaviourConfig` ships.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch

from stcrank.simulation.config import BehaviourConfig, FocusConfig
from stcrank.simulation.explore import sample_focus_starts
from stcrank.simulation.focus import FocusResult, simulate_focus
from stcrank.simulation.policies import FPolicy
from stcrank.simulation.world import World

PAPER_TABLE2 = {
    "immediate": (0.197, 0.613),
    "within_3": (0.336, 0.748),
    "within_5": (0.429, 0.788),
}
"""Paper Table 2: session-exit shares after a view ``(without purchase, with purchase)``."""


@dataclass(frozen=True)
class ExitRates:
    """Exit shares of served page views, split by whether the view had a purchase.

    Attributes:
        no_purchase: Realised ``P(exit right after | no purchase)``.
        purchase: Realised ``P(exit right after | purchase)``.
        no_purchase_expected: Rao-Blackwellised ``sum (1 - cvr) e0 / sum (1 - cvr)`` over the views.
        purchase_expected: Rao-Blackwellised ``sum cvr e1 / sum cvr`` over the views.
        within_3_no_purchase: Realised share of views without purchase followed by an exit within 3 views
            (this one included).
        within_3_purchase: The same after a purchase.
        within_5_no_purchase: Within 5 views, without purchase.
        within_5_purchase: Within 5 views, after a purchase.
        page_views: Number of views.
        purchases: Number of views with a purchase.
    """

    no_purchase: float
    purchase: float
    no_purchase_expected: float
    purchase_expected: float
    within_3_no_purchase: float
    within_3_purchase: float
    within_5_no_purchase: float
    within_5_purchase: float
    page_views: int
    purchases: int

    def as_dict(self) -> dict[str, float]:
        """The rates as a plain dict."""
        return asdict(self)


def served_exit_rates(result: FocusResult) -> ExitRates:
    """Measure Table 2's exit shares on recorded F sessions.

    Args:
        result: Output of :func:`~stcrank.simulation.focus.simulate_focus` with ``record=True``.

    Returns:
        The rates.

    Raises:
        ValueError: If the result has no log or no purchase.
    """
    if result.log is None or len(result.log) == 0:
        raise ValueError("served_exit_rates needs a result simulated with record=True")
    c = result.log.columns
    buy = c["purchase"]
    if not bool(buy.any()) or bool(buy.all()):
        raise ValueError("served_exit_rates needs views with and without a purchase")
    cvr, e0, e1 = c["truth_cvr"].double(), c["truth_e0"].double(), c["truth_e1"].double()
    session = c["session"]
    remaining = result.depth[session] - c["position"]
    exited = ~result.truncated[session]

    def share(mask: torch.Tensor, where: torch.Tensor) -> float:
        return float(mask[where].double().mean())

    within_3 = exited & (remaining < 3)
    within_5 = exited & (remaining < 5)
    return ExitRates(
        no_purchase=share(c["exit"], ~buy),
        purchase=share(c["exit"], buy),
        no_purchase_expected=float(((1 - cvr) * e0).sum() / (1 - cvr).sum()),
        purchase_expected=float((cvr * e1).sum() / cvr.sum()),
        within_3_no_purchase=share(within_3, ~buy),
        within_3_purchase=share(within_3, buy),
        within_5_no_purchase=share(within_5, ~buy),
        within_5_purchase=share(within_5, buy),
        page_views=len(result.log),
        purchases=int(buy.sum()),
    )


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def calibrate_exit_rates(
    world: World,
    policy: FPolicy,
    *,
    targets: tuple[float, float] = PAPER_TABLE2["immediate"],
    sessions: int = 10000,
    iterations: int = 8,
    tolerance: float = 0.001,
    seed: int = 0,
    config: FocusConfig | None = None,
) -> BehaviourConfig:
    """Fit the exit intercepts so that ``policy``'s served traffic shows the target exit shares.

    Each iteration simulates ``sessions`` sessions, measures the Rao-Blackwellised shares and shifts each
    intercept by the logit gap to its target (a fixed-point iteration: the served mix moves with the exit
    rates, so a few rounds are needed).

    Args:
        world: The world whose behaviour is the starting point.
        policy: The serving policy (the logging policy for the shipped defaults).
        targets: ``(exit share without purchase, exit share after purchase)``.
        sessions: Sessions per iteration.
        iterations: Maximum number of iterations.
        tolerance: Stop when both shares are within this of their targets.
        seed: Seed of the sessions.
        config: F-stage serving config.

    Returns:
        The behaviour with calibrated ``exit_bias`` and ``exit_after_purchase_bias``.
    """
    if not all(0 < t < 1 for t in targets):
        raise ValueError(f"targets must lie in (0, 1); got {targets}")
    behaviour = world.behaviour
    starts = sample_focus_starts(world, sessions, seed=seed)
    for _ in range(iterations):
        result = simulate_focus(world.with_behaviour(behaviour), policy, starts, config=config, seed=seed, record=True)
        rates = served_exit_rates(result)
        gap0 = _logit(targets[0]) - _logit(rates.no_purchase_expected)
        gap1 = _logit(targets[1]) - _logit(rates.purchase_expected)
        close0 = abs(rates.no_purchase_expected - targets[0]) < tolerance
        if close0 and abs(rates.purchase_expected - targets[1]) < tolerance:
            break
        behaviour = replace(
            behaviour,
            exit_bias=behaviour.exit_bias + gap0,
            exit_after_purchase_bias=behaviour.exit_after_purchase_bias + gap1,
        )
    return behaviour
