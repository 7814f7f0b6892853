"""E-stage (homepage) visits: retrieval, the homepage policy, clicks, detail pages, swipes into F, return.

A visit shows ``page_size`` items chosen by the homepage policy from ``candidates`` retrieved by the user's
category interests. The user scans them in order: each exposure is clicked with the true ``ctr``; a click
opens the detail page (a valid view; purchase with the detail-page probability); from there the user swipes
into the F stage with the category's swipe probability (lower after a detail-page purchase), the F session
runs with the trigger counted as a same-category view, and the user returns to the homepage. After every
exposure the user leaves the homepage with probability ``explore_exit_prob``. All draws are keyed by
(seed, visit key, position), so different homepage policies share them; the F session entered at position
``j`` of visit ``v`` has key ``(v + 1) * 256 + j``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from stcrank.simulation import rng
from stcrank.simulation.config import ExploreConfig, FocusConfig
from stcrank.simulation.focus import (
    FocusResult,
    FocusStarts,
    check_ranking,
    draw_triggers,
    simulate_focus,
)
from stcrank.simulation.policies import EPolicy, FPolicy, explore_logging_policy
from stcrank.simulation.requests import ERequest
from stcrank.simulation.truth import explore_exit_prob, explore_truth
from stcrank.simulation.world import World

_E_DOMAIN = 0xE5E5
_HOME_DOMAIN = 0x40AE
_VISIT_DOMAIN = 0x7151
_TABLE_DOMAIN = 0x7AB1
EXPECTED_E_METRICS = ("e_exposures", "e_clicks", "e_purchases", "e_gmv", "f_entries")
"""E-stage outcomes whose closed-form expectation :func:`simulate_explore` returns (:attr:`ExploreResult.expected`)."""
MAX_VISIT_KEY = (1 << 24) - 2
"""Largest visit key: F-session keys ``(v + 1) * 256 + j`` must stay below 2**32."""


def sample_visits(world: World, visits: int, *, seed: int = 0, first_key: int = 0) -> tuple[Tensor, Tensor]:
    """Draw homepage visits: a uniformly random user per visit, and the visit keys.

    Args:
        world: The world.
        visits: Number of visits.
        seed: Seed of the draws.
        first_key: Key of the first visit (visit ``i`` has key ``first_key + i``).

    Returns:
        ``(users, keys)``, each ``[V]``.
    """
    if visits < 1 or first_key < 0 or first_key + visits - 1 > MAX_VISIT_KEY:
        raise ValueError(f"need visits >= 1 and visit keys in [0, {MAX_VISIT_KEY}]; got {visits} from {first_key}")
    keys = torch.arange(first_key, first_key + visits, dtype=torch.int64)
    u = rng.uniform(seed, _VISIT_DOMAIN, keys)
    return torch.clamp((u * world.n_users).long(), max=world.n_users - 1), keys


def sample_focus_starts(
    world: World,
    sessions: int,
    *,
    seed: int = 0,
    e_policy: EPolicy | None = None,
    config: ExploreConfig | None = None,
) -> FocusStarts:
    """F-session starts as served traffic has them: the F entries of homepage visits.

    Homepage visits (keys 0, 1, ...) are served by ``e_policy`` until ``sessions`` of them swiped into F;
    the first ``sessions`` entries, in (visit, position) order, are returned with the keys
    :func:`simulate_explore` gives them, so an F-only run of these starts replays the F part of the same
    visits. Users who browse more enter F more often, as in logs.

    Args:
        world: The world.
        sessions: Number of F sessions.
        seed: Run seed (the same seed gives the same starts).
        e_policy: Homepage policy; the default logging policy when None.
        config: E-stage config.

    Returns:
        The starts.
    """
    if sessions < 1:
        raise ValueError(f"sessions must be >= 1, got {sessions}")
    config = config or ExploreConfig()
    e_policy = e_policy or explore_logging_policy()
    users_all, triggers, keys, first = [], [], [], 0
    found = 0
    while found < sessions:
        block = max(1024, 3 * (sessions - found))
        if first + block - 1 > MAX_VISIT_KEY:
            raise ValueError(f"could not find {sessions} F entries within {MAX_VISIT_KEY + 1} visits")
        users, visit_keys = sample_visits(world, block, seed=seed, first_key=first)
        part = _homepage_chunk(world, e_policy, users, visit_keys, config, seed, record=False)
        visit = part["f_visit"]
        users_all.append(users[visit])
        triggers.append(part["f_trigger"])
        keys.append((visit_keys[visit] + 1) * 256 + part["f_position"] - 1)
        found += visit.numel()
        first += block
    return FocusStarts(torch.cat(users_all)[:sessions], torch.cat(triggers)[:sessions], torch.cat(keys)[:sessions])


def retrieve_homepage(world: World, users: Tensor, keys: Tensor, config: ExploreConfig, seed: int) -> Tensor:
    """Distinct homepage candidates per visit, by category interest.

    Each slot draws a category from :meth:`World.category_preference` and an item of it uniformly; slots
    that repeat an item are drawn again (a few rounds make repeats vanishingly rare).

    Args:
        world: The world.
        users: User per visit, ``[V]``.
        keys: Visit keys, ``[V]``.
        config: E-stage config.
        seed: Run seed.

    Returns:
        Item indices ``[V, candidates]``.
    """
    n = config.candidates
    grid = torch.arange(2 * n).view(1, n, 2)
    cdf_all = world.category_preference(users, config.interest_temperature).cumsum(1)

    def draw(round_: int, rows: Tensor) -> Tensor:
        rows_keys, cdf = keys[rows], cdf_all[rows]
        u = rng.pair_uniform(seed, (_HOME_DOMAIN, round_, rows_keys[:, None, None]), grid, 2 * n)
        category = torch.searchsorted(cdf, u[..., 0].contiguous()).clamp(max=world.n_categories - 1)
        sizes = world.category_sizes[category]
        return world.category_offsets[category] + torch.clamp((u[..., 1] * sizes).long(), max=sizes - 1)

    items = draw(0, torch.arange(users.numel()))
    for round_ in range(1, 8):
        ordered, order = items.sort(dim=1)
        repeat = torch.zeros_like(items, dtype=torch.bool)
        repeat.scatter_(1, order[:, 1:], ordered[:, 1:] == ordered[:, :-1])
        rows = repeat.any(1).nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        items[rows] = torch.where(repeat[rows], draw(round_, rows), items[rows])
    return items


@dataclass(eq=False)
class ExploreLog:
    """One row per homepage exposure (internal 0-based indices).

    Attributes:
        columns: Column name -> ``[N]`` tensor: ``visit`` (row of the visit), ``position`` (1-based),
            ``item``, ``click``, ``purchase`` (detail page), ``swipe`` (into F), ``focus_session`` (row of the
            F session in :attr:`ExploreResult.focus`, -1 if none), ``truth_ctr``, ``truth_detail_cvr``,
            ``truth_swipe``.
    """

    columns: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return next(iter(self.columns.values())).shape[0] if self.columns else 0


@dataclass(eq=False)
class ExploreResult:
    """Outcomes of homepage visits and the F sessions they led to.

    Attributes:
        users: User per visit, ``[V]``.
        keys: Visit keys, ``[V]``.
        e_exposures: Homepage items seen, ``[V]``.
        e_clicks: Clicks (E-stage valid views), ``[V]``.
        e_purchases: Detail-page purchases, ``[V]``.
        e_gmv: Detail-page purchased value, ``[V]``.
        f_entries: F sessions entered, ``[V]``.
        f_purchases: F-stage purchases, ``[V]``.
        f_ipv: F-stage valid views, ``[V]``.
        f_depth: F-stage items seen, ``[V]``.
        f_gmv: F-stage purchased value, ``[V]``.
        expected: Closed-form expectations of the E-stage outcomes over the homepage exits and the click, purchase
            and swipe draws (position ``j`` is seen with probability ``(1 - x) ** j``, ``x`` the user's
            homepage exit probability), ``[V]`` each: ``e_exposures``, ``e_clicks``, ``e_purchases``, ``e_gmv`` and
            ``f_entries``. The F part of a visit's expected outcomes is the entered F sessions' per-list
            expectations (:attr:`FocusResult.expected_purchases` ...), summed per visit by the evaluation.
        category_purchases: E + F purchases by category, ``[V, C]``.
        focus: The F sessions (their ``starts`` give user, trigger and key).
        focus_visit: Visit row of each F session, ``[F]``.
        focus_position: 1-based homepage position of each F session's trigger, ``[F]``.
        log: Exposure rows when recorded, else None.
    """

    users: Tensor
    keys: Tensor
    e_exposures: Tensor
    e_clicks: Tensor
    e_purchases: Tensor
    e_gmv: Tensor
    f_entries: Tensor
    f_purchases: Tensor
    f_ipv: Tensor
    f_depth: Tensor
    f_gmv: Tensor
    expected: dict[str, Tensor]
    category_purchases: Tensor
    focus: FocusResult
    focus_visit: Tensor
    focus_position: Tensor
    log: ExploreLog | None = None

    def __len__(self) -> int:
        return self.users.shape[0]


def simulate_explore(
    world: World,
    e_policy: EPolicy,
    f_policy: FPolicy,
    users: Tensor,
    *,
    keys: Tensor | None = None,
    seed: int = 0,
    config: ExploreConfig | None = None,
    record: bool = False,
    chunk_size: int = 4096,
) -> ExploreResult:
    """Serve homepage visits and the F sessions they lead to.

    Args:
        world: The world.
        e_policy: Homepage policy.
        f_policy: F-stage policy.
        users: User per visit, ``[V]``.
        keys: Visit keys (distinct, in ``[0, 2**24 - 2]``); ``arange(V)`` when None.
        seed: Run seed of every draw.
        config: E-stage config (with its F-stage config).
        record: Whether to keep exposure rows and F page-view rows.
        chunk_size: Visits simulated together.

    Returns:
        The outcomes.
    """
    config = config or ExploreConfig()
    keys = torch.arange(users.numel(), dtype=torch.int64) if keys is None else keys
    if users.dim() != 1 or keys.shape != users.shape or users.numel() == 0:
        raise ValueError(
            f"users and keys must be 1-D of one non-zero length; got {tuple(users.shape)}, {tuple(keys.shape)}"
        )
    if int(keys.min()) < 0 or int(keys.max()) > MAX_VISIT_KEY:
        raise ValueError(f"visit keys must lie in [0, {MAX_VISIT_KEY}]")
    e_parts = [
        _homepage_chunk(world, e_policy, users[i : i + chunk_size], keys[i : i + chunk_size], config, seed, record)
        for i in range(0, users.numel(), chunk_size)
    ]
    visit_offsets = torch.tensor([0] + [p["users"].numel() for p in e_parts]).cumsum(0)
    f_visit = torch.cat([p["f_visit"] + o for p, o in zip(e_parts, visit_offsets[:-1], strict=True)])
    f_position = torch.cat([p["f_position"] for p in e_parts])
    starts = FocusStarts(
        users[f_visit], torch.cat([p["f_trigger"] for p in e_parts]), (keys[f_visit] + 1) * 256 + f_position - 1
    )
    focus = _simulate_entries(world, f_policy, starts, config.focus, seed, record, chunk_size)

    def cat(name: str) -> Tensor:
        return torch.cat([p[name] for p in e_parts])

    n_visits = users.numel()

    def per_visit(values: Tensor) -> Tensor:
        return torch.zeros(n_visits, dtype=values.dtype).index_add_(0, f_visit, values)

    category_purchases = cat("e_category_purchases")
    category_purchases.index_add_(0, f_visit, focus.category_purchases)
    log = None
    if record:
        columns = {name: torch.cat([p["log"][name] for p in e_parts]) for name in e_parts[0]["log"]}
        columns["visit"] = torch.cat([p["log"]["visit"] + o for p, o in zip(e_parts, visit_offsets[:-1], strict=True)])
        # Each clicked-and-swiped exposure maps to its F session, in the order the sessions were started.
        session = torch.full_like(columns["visit"], -1)
        entered = columns["swipe"]
        session[entered] = torch.arange(int(entered.sum()))
        columns["focus_session"] = session
        log = ExploreLog(columns)
    return ExploreResult(
        users=users,
        keys=keys,
        e_exposures=cat("e_exposures"),
        e_clicks=cat("e_clicks"),
        e_purchases=cat("e_purchases"),
        e_gmv=cat("e_gmv"),
        f_entries=per_visit(torch.ones_like(f_visit)),
        f_purchases=per_visit(focus.purchases),
        f_ipv=per_visit(focus.ipv),
        f_depth=per_visit(focus.depth),
        f_gmv=per_visit(focus.gmv),
        expected={name: cat(f"expected_{name}") for name in EXPECTED_E_METRICS},
        category_purchases=category_purchases,
        focus=focus,
        focus_visit=f_visit,
        focus_position=f_position,
        log=log,
    )


def _simulate_entries(
    world: World, f_policy: FPolicy, starts: FocusStarts, config: FocusConfig, seed: int, record: bool, chunk: int
) -> FocusResult:
    if len(starts):
        return simulate_focus(world, f_policy, starts, config=config, seed=seed, record=record, chunk_size=chunk)
    # No visit entered F: an empty result keeps the shapes consistent.
    empty = torch.zeros(0, dtype=torch.int64)
    log = None
    if record:
        from stcrank.simulation.focus import FocusLog

        log = FocusLog({})
    return FocusResult(
        starts=starts,
        depth=empty,
        ipv=empty,
        purchases=empty,
        gmv=torch.zeros(0, dtype=torch.float64),
        truncated=torch.zeros(0, dtype=torch.bool),
        expected_purchases=torch.zeros(0, dtype=torch.float64),
        expected_ipv=torch.zeros(0, dtype=torch.float64),
        expected_gmv=torch.zeros(0, dtype=torch.float64),
        expected_depth=torch.zeros(0, dtype=torch.float64),
        category_purchases=torch.zeros(0, world.n_categories, dtype=torch.int64),
        purchase_session=empty,
        purchase_depth=empty,
        purchase_category=empty,
        log=log,
    )


def _homepage_chunk(
    world: World, policy: EPolicy, users: Tensor, keys: Tensor, config: ExploreConfig, seed: int, record: bool
) -> dict[str, object]:
    m = config.page_size
    candidates = retrieve_homepage(world, users, keys, config, seed)
    request = ERequest(world=world, visit_key=keys, user=users, candidates=candidates)
    choice = check_ranking(policy.rank(request, m), users.numel(), m, config.candidates, policy)
    shown = candidates.gather(1, choice)
    truth = explore_truth(world, users[:, None], shown)
    u = rng.pair_uniform(seed, (_E_DOMAIN, keys[:, None, None]), torch.arange(4 * m).view(1, m, 4), 4 * m)
    leave = u[..., 3] < explore_exit_prob(world, users)[:, None]
    # Position j is seen if the user stayed after every earlier exposure.
    stayed = torch.cumprod((~leave).to(torch.int64), dim=1)
    seen = torch.cat([torch.ones_like(stayed[:, :1]), stayed[:, :-1]], dim=1).bool()
    click = seen & (u[..., 0] < truth.ctr)
    buy = click & (u[..., 1] < truth.detail_cvr)
    swipe_prob = torch.where(buy, truth.swipe_after_purchase, truth.swipe_no_purchase)
    swipe = click & (u[..., 2] < swipe_prob)
    price = world.item_price[shown].double()
    category = world.item_category[shown]
    e_category = torch.zeros(users.numel(), world.n_categories, dtype=torch.int64)
    e_category.scatter_add_(1, category, buy.long())
    f_visit, f_slot = swipe.nonzero(as_tuple=True)
    # Closed form over the draws: position j is seen with probability (1 - exit) ** j.
    stay = 1.0 - explore_exit_prob(world, users).double()
    p_seen = stay[:, None] ** torch.arange(m, dtype=torch.float64)
    p_click = p_seen * truth.ctr.double()
    p_buy = p_click * truth.detail_cvr.double()
    out: dict[str, object] = {
        "users": users,
        "e_exposures": seen.sum(1),
        "e_clicks": click.sum(1),
        "e_purchases": buy.sum(1),
        "e_gmv": torch.where(buy, price, 0.0).sum(1),
        "e_category_purchases": e_category,
        "expected_e_exposures": p_seen.sum(1),
        "expected_e_clicks": p_click.sum(1),
        "expected_e_purchases": p_buy.sum(1),
        "expected_e_gmv": (p_buy * price).sum(1),
        "expected_f_entries": (p_click * truth.swipe.double()).sum(1),
        "f_visit": f_visit,
        "f_position": f_slot + 1,
        "f_trigger": shown[f_visit, f_slot],
    }
    if record:
        v, j = seen.nonzero(as_tuple=True)
        out["log"] = {
            "visit": v,
            "position": j + 1,
            "item": shown[v, j],
            "click": click[v, j],
            "purchase": buy[v, j],
            "swipe": swipe[v, j],
            "truth_ctr": truth.ctr[v, j],
            "truth_detail_cvr": truth.detail_cvr[v, j],
            "truth_swipe": truth.swipe[v, j],
        }
    return out


def estimate_f_conversion(
    world: World,
    f_policy: FPolicy,
    users: Tensor,
    triggers: Tensor,
    *,
    reps: int = 32,
    seed: int = 0,
    config: FocusConfig | None = None,
    first_key: int = 0,
) -> Tensor:
    """Monte Carlo ``P(at least one F purchase | user enters F through trigger)`` under an F policy.

    The ``cvr_F*`` factor of eq. 9, the target of the look-ahead label of eq. 7. Its standard error is
    ``sqrt(p (1 - p) / reps)``.

    Args:
        world: The world.
        f_policy: The F-stage policy serving the sessions.
        users: User indices ``[N]``.
        triggers: Trigger item indices ``[N]``.
        reps: Sessions per pair.
        seed: Run seed.
        config: F-stage config.
        first_key: First session key (pair ``i``, repetition ``r`` has key ``first_key + i * reps + r``).

    Returns:
        Probabilities ``[N]``.
    """
    if users.shape != triggers.shape or users.dim() != 1 or reps < 1:
        raise ValueError("users and triggers must be 1-D of one length, and reps >= 1")
    n = users.numel()
    keys = first_key + torch.arange(n * reps, dtype=torch.int64)
    starts = FocusStarts(users.repeat_interleave(reps), triggers.repeat_interleave(reps), keys)
    result = simulate_focus(world, f_policy, starts, config=config, seed=seed)
    return (result.purchases > 0).double().view(n, reps).mean(1)


def f_conversion_table(
    world: World,
    f_policy: FPolicy,
    *,
    users: Tensor | None = None,
    sessions_per_cell: int = 16,
    seed: int = 0,
    config: FocusConfig | None = None,
) -> Tensor:
    """Monte Carlo ``P(at least one F purchase)`` by (user, trigger category), for E-stage look-ahead.

    Each cell averages ``sessions_per_cell`` sessions whose triggers are drawn in the category as homepage
    clicks would draw them (:func:`~stcrank.simulation.focus.draw_triggers`). The table plugs into
    :class:`~stcrank.simulation.policies.ETruthPredictor` as ``f_conversion``. Cost: ``U * C *
    sessions_per_cell`` F sessions.

    Args:
        world: The world.
        f_policy: The F-stage policy.
        users: Users to fill (the others stay 0); all users when None.
        sessions_per_cell: Sessions per (user, category).
        seed: Run seed.
        config: F-stage config.

    Returns:
        Table ``[U, C]``.
    """
    users = torch.arange(world.n_users) if users is None else users
    n_cat = world.n_categories
    cell_user = users.repeat_interleave(n_cat * sessions_per_cell)
    cell_category = torch.arange(n_cat).repeat_interleave(sessions_per_cell).repeat(users.numel())
    keys = torch.arange(cell_user.numel(), dtype=torch.int64)
    u = rng.pair_uniform(seed, (_TABLE_DOMAIN, keys[:, None]), torch.arange(16)[None, :], 16)
    triggers = draw_triggers(world, cell_user, cell_category, u)
    result = simulate_focus(world, f_policy, FocusStarts(cell_user, triggers, keys), config=config, seed=seed)
    converted = (result.purchases > 0).double().view(users.numel(), n_cat, sessions_per_cell).mean(2)
    table = torch.zeros(world.n_users, n_cat, dtype=torch.float64)
    table[users] = converted
    return table
