"""Closed-form ground truth of the response model, for any (user, item, session history).

F stage, one item shown to user ``u`` with ``n`` earlier valid views of the item's category in the session
(the trigger's detail page included) and ``d`` items seen before it:

* watch time ``T ~ LogNormal(mu, sigma)``, ``mu = watch_mu + watch_affinity * a + watch_appeal * appeal``,
  ``sigma = watch_sigma * exp(watch_richness * richness)``; ``vtr(tau) = P(T > tau) = Phi((mu - ln tau) / sigma)``;
* IPV ``= 1(T > 2 s)`` and ``P(IPV) = vtr(2)``;
* purchase intent ``q = sigmoid(buy_logit) * g_c(n)``, ``g_c(n) = 1 - exp(-(n + 1) / h_c)`` (category
  involvement); given ``T`` in watch bucket ``k`` (thresholds ``t_0 = 2 s < t_1 < ...``), the purchase
  probability is ``min(1, q * m_k)`` (0 below 2 s), so
  ``P(purchase) = sum_k min(1, q * m_k) * (vtr(t_k) - vtr(t_{k+1}))``;
* exit after the item: ``e0 = sigmoid(exit_bias + user_exit - exit_affinity * a + exit_depth * d)`` without a
  purchase, ``e1 = sigmoid(exit_after_purchase_bias + exit_after_purchase_user * user_exit)`` after one;
* swipe-down ``sdr = 1 - cvr * e1 - (1 - cvr) * e0`` (the eq. 5 label's target); with exit-after-purchase
  samples zero-weighted (eq. 6) a model learns ``sdr / (sdr + (1 - cvr) * e0)`` instead.

E stage: ``ctr = sigmoid(ctr_bias + ctr_affinity * a + ctr_appeal * appeal + ctr_offset_c)``, detail-page
purchase ``min(1, sigmoid(buy_logit) * g_c(0) * detail_purchase_multiplier)``, swipe into F
``sigmoid(logit(swipe_c) + user_swipe)`` (times ``swipe_after_purchase`` after a detail-page purchase).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from stcrank.simulation.world import World


class PairTerms(NamedTuple):
    """History-free terms of (user, item) pairs, computed once per pair and reused at every depth."""

    affinity: Tensor
    """Latent affinity ``a``."""
    mu: Tensor
    """Log-mean of the watch time."""
    sigma: Tensor
    """Log-sd of the watch time."""
    buy_logit: Tensor
    """Purchase-intent logit before involvement."""
    exit_logit: Tensor
    """Logit of ``e0`` at depth 0."""
    e1: Tensor
    """Exit probability after a purchase."""
    involvement: Tensor
    """Views scale ``h`` of the item's category."""
    category: Tensor
    """Category of the item (0-based)."""
    price: Tensor
    """Price of the item."""

    def take(self, flat_index: Tensor) -> PairTerms:
        """Select the same entries of every term by flat (row-major) index, as :func:`torch.take` does."""
        return PairTerms(*(torch.take(t, flat_index) for t in self))


def pair_terms(world: World, users: Tensor, items: Tensor) -> PairTerms:
    """Compute the history-free terms of (user, item) pairs.

    Args:
        world: The world.
        users: User indices, broadcastable with ``items`` (e.g. ``[R, 1]`` against ``[R, n]``).
        items: Item indices.

    Returns:
        The terms, each of the broadcast shape.
    """
    b = world.behaviour
    users, items = torch.broadcast_tensors(users, items)
    a = world.affinity(users, items)
    category = world.item_category[items]
    appeal = world.item_appeal[items]
    mu = b.watch_mu + b.watch_affinity * a + b.watch_appeal * appeal
    sigma = b.watch_sigma * torch.exp(b.watch_richness * world.item_richness[items])
    price = world.item_price[items]
    relative_price = torch.log(price / world.category_price[category])
    buy_logit = (
        b.purchase_bias
        + b.purchase_affinity * a
        + world.item_buyability[items]
        + world.category_buy_offset[category]
        + world.user_buy[users]
        - world.user_price_sensitivity[users] * relative_price
    )
    exit_logit = b.exit_bias + world.user_exit[users] - b.exit_affinity * a
    e1 = torch.sigmoid(b.exit_after_purchase_bias + b.exit_after_purchase_user * world.user_exit[users])
    return PairTerms(a, mu, sigma, buy_logit, exit_logit, e1, world.involvement[category], category, price)


def vtr(terms: PairTerms, tau: float | Tensor) -> Tensor:
    """View-through rate ``P(T > tau)`` in closed form (LogNormal survival function).

    Args:
        terms: Pair terms.
        tau: Threshold in seconds (> 0).

    Returns:
        Probability tensor of the terms' shape.
    """
    log_tau = math.log(tau) if isinstance(tau, (int, float)) else torch.log(tau)
    return torch.special.ndtr((terms.mu - log_tau) / terms.sigma)


def involvement_factor(involvement: Tensor, views: Tensor) -> Tensor:
    """Involvement curve ``g(n) = 1 - exp(-(n + 1) / h)``.

    Args:
        involvement: Views scale ``h`` of the category.
        views: Earlier valid views ``n`` of the category in the session.

    Returns:
        Factor in (0, 1), rising with ``n``; near 1 at once for low ``h``.
    """
    return -torch.expm1(-(views.to(involvement.dtype) + 1.0) / involvement)


def purchase_intent(terms: PairTerms, views: Tensor) -> Tensor:
    """Purchase intent ``q = sigmoid(buy_logit) * g_c(n)`` before the watch-time multiplier.

    Args:
        terms: Pair terms.
        views: Earlier valid views of the item's category in the session.

    Returns:
        Tensor of the broadcast shape.
    """
    return torch.sigmoid(terms.buy_logit) * involvement_factor(terms.involvement, views)


def _multipliers(world: World, like: Tensor) -> tuple[list[float], Tensor]:
    thresholds = [t for t, _ in world.behaviour.purchase_time_multipliers]
    mult = torch.tensor([0.0] + [m for _, m in world.behaviour.purchase_time_multipliers], dtype=like.dtype)
    return thresholds, mult


def purchase_prob_given_watch(world: World, terms: PairTerms, views: Tensor, watch_time: Tensor) -> Tensor:
    """Purchase probability given the realised watch time: ``min(1, q * m_k(T))``, 0 for ``T <= 2 s``.

    Args:
        world: The world (for the watch-time multipliers).
        terms: Pair terms.
        views: Earlier valid views of the item's category.
        watch_time: Watch time in seconds.

    Returns:
        Tensor of the broadcast shape.
    """
    thresholds, mult = _multipliers(world, terms.mu)
    bucket = torch.bucketize(watch_time, torch.tensor(thresholds, dtype=watch_time.dtype), right=False)
    return torch.clamp(purchase_intent(terms, views) * mult[bucket], max=1.0)


def watch_survival(world: World, terms: PairTerms) -> list[Tensor]:
    """``P(T > t_k)`` at every watch-bucket threshold ``t_0 = 2 s < t_1 < ...`` of the purchase multipliers.

    Args:
        world: The world.
        terms: Pair terms.

    Returns:
        One tensor per threshold, of the terms' shape.
    """
    return [vtr(terms, t) for t, _ in world.behaviour.purchase_time_multipliers]


def purchase_prob(world: World, terms: PairTerms, views: Tensor, survival: list[Tensor] | None = None) -> Tensor:
    """Post-exposure conversion ``P(purchase)`` (the ``cvr`` target), integrating the watch time.

    Args:
        world: The world.
        terms: Pair terms.
        views: Earlier valid views of the item's category.
        survival: :func:`watch_survival` of the terms if already computed.

    Returns:
        Tensor of the broadcast shape.
    """
    _, mult = _multipliers(world, terms.mu)
    survival = (survival if survival is not None else watch_survival(world, terms)) + [torch.zeros_like(terms.mu)]
    q = purchase_intent(terms, views)
    total = torch.zeros_like(q)
    for k in range(len(survival) - 1):
        total = total + torch.clamp(q * mult[k + 1], max=1.0) * (survival[k] - survival[k + 1])
    return total


def exit_prob(world: World, terms: PairTerms, depth: Tensor | int) -> Tensor:
    """Exit probability ``e0`` after an item without purchase.

    Args:
        world: The world.
        terms: Pair terms.
        depth: Items seen before this one in the F session (0 for the first).

    Returns:
        Tensor of the broadcast shape.
    """
    return torch.sigmoid(terms.exit_logit + world.behaviour.exit_depth * depth)


class FocusTruth(NamedTuple):
    """True probabilities of one F-stage page view at a given history."""

    ipv: Tensor
    """``P(T > 2 s)``."""
    cvr: Tensor
    """``P(purchase)``, post-exposure."""
    cvr_given_ipv: Tensor
    """``P(purchase | T > 2 s)``."""
    e0: Tensor
    """``P(exit | no purchase)``."""
    e1: Tensor
    """``P(exit | purchase)``."""
    sdr: Tensor
    """``P(swipe down)``: the target of the eq. 5 label (exits after purchases are negatives)."""
    sdr_filtered: Tensor
    """Target of the eq. 6 label (exits after purchases weigh 0): ``sdr / (sdr + (1 - cvr) * e0)``."""

    @property
    def continue_no_purchase(self) -> Tensor:
        """``P(swipe down | no purchase) = 1 - e0``."""
        return 1.0 - self.e0

    @property
    def continue_after_purchase(self) -> Tensor:
        """``P(swipe down | purchase) = 1 - e1``."""
        return 1.0 - self.e1


def focus_truth(world: World, terms: PairTerms, views: Tensor, depth: Tensor | int) -> FocusTruth:
    """True probabilities of F-stage page views.

    Args:
        world: The world.
        terms: Pair terms of the (user, item) pairs.
        views: Earlier valid views of each item's category in the session.
        depth: Items seen before (0 for the first item of the session).

    Returns:
        The probabilities, each of the broadcast shape.
    """
    survival = watch_survival(world, terms)
    ipv = survival[0]
    cvr = purchase_prob(world, terms, views, survival)
    e0 = exit_prob(world, terms, depth)
    e1 = terms.e1
    sdr = 1.0 - cvr * e1 - (1.0 - cvr) * e0
    filtered = sdr / torch.clamp(sdr + (1.0 - cvr) * e0, min=1e-12)
    return FocusTruth(ipv, cvr, cvr / torch.clamp(ipv, min=1e-12), e0, e1, sdr, filtered)


class ExploreTruth(NamedTuple):
    """True probabilities of one E-stage (homepage) exposure."""

    ctr: Tensor
    """``P(click | exposure)``."""
    detail_cvr: Tensor
    """``P(purchase on the detail page | click)``."""
    swipe_no_purchase: Tensor
    """``P(swipe into F | click, no detail purchase)``."""
    swipe_after_purchase: Tensor
    """``P(swipe into F | click, detail purchase)``."""

    @property
    def swipe(self) -> Tensor:
        """``P(swipe into F | click)`` (the ``sdr*`` factor of eq. 9)."""
        return self.detail_cvr * self.swipe_after_purchase + (1.0 - self.detail_cvr) * self.swipe_no_purchase

    @property
    def ctcvr(self) -> Tensor:
        """``P(click and detail purchase | exposure)``."""
        return self.ctr * self.detail_cvr

    @property
    def enter_focus(self) -> Tensor:
        """``P(click and swipe into F | exposure)``."""
        return self.ctr * self.swipe


def explore_truth(world: World, users: Tensor, items: Tensor) -> ExploreTruth:
    """True probabilities of homepage exposures.

    Args:
        world: The world.
        users: User indices, broadcastable with ``items``.
        items: Item indices.

    Returns:
        The probabilities, each of the broadcast shape.
    """
    b = world.behaviour
    terms = pair_terms(world, users, items)
    users, items = torch.broadcast_tensors(users, items)
    category = terms.category
    ctr = torch.sigmoid(
        b.ctr_bias
        + b.ctr_affinity * terms.affinity
        + b.ctr_appeal * world.item_appeal[items]
        + world.category_ctr_offset[category]
    )
    q = purchase_intent(terms, torch.zeros_like(category))
    detail = torch.clamp(q * b.detail_purchase_multiplier, max=1.0)
    base = world.category_swipe[category].clamp(1e-6, 1 - 1e-6)
    swipe = torch.sigmoid(torch.logit(base) + world.user_swipe[users])
    return ExploreTruth(ctr, detail, swipe, swipe * b.swipe_after_purchase)


def explore_exit_prob(world: World, users: Tensor) -> Tensor:
    """Probability of leaving the homepage after an exposure.

    Args:
        world: The world.
        users: User indices.

    Returns:
        Tensor of the users' shape.
    """
    b = world.behaviour
    return torch.sigmoid(b.explore_exit_bias + b.explore_exit_user * world.user_exit[users])


def return_prob(world: World, ipv: Tensor, purchases: Tensor) -> Tensor:
    """Return-rate proxy of a visit (a DAU proxy): ``sigmoid(bias + a * log1p(ipv) + b * purchases)``.

    Args:
        world: The world.
        ipv: Valid views of the visit.
        purchases: Purchases of the visit.

    Returns:
        Probability tensor of the inputs' shape.
    """
    b = world.behaviour
    return torch.sigmoid(b.return_bias + b.return_ipv * torch.log1p(ipv.float()) + b.return_purchase * purchases)
