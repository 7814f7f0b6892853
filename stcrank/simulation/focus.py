"""F-stage (focus) sessions: retrieval for a trigger, requests of ``m`` items, per-item watch/purchase/exit.

A batch of sessions is rolled out together: one Python iteration per depth position, tensors across the
live sessions. Each session ``s`` with key ``k_s`` draws, at depth ``d``, the uniforms
``uniform(seed, F, d, stream, k_s)`` for its watch time, purchase and exit (streams 0, 1, 2), so two
policies serving the same sessions share every random number (common random numbers); outcomes do not
depend on the chunking either (logged float probabilities may differ in their last bit).

Retrieval is fixed per session: ``n`` candidates, a share from the trigger's category (an arithmetic
progression modulo the category size with a random offset and a step coprime with the size, so distinct
without a per-session sort) and the rest from the category's related-items list. Every request ranks the
candidates not shown yet; a new request follows when a page is exhausted.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from stcrank.simulation import rng
from stcrank.simulation.config import FocusConfig
from stcrank.simulation.expectation import ListExpectation, expected_list_outcomes
from stcrank.simulation.policies import FPolicy
from stcrank.simulation.requests import CandidatePool, FRequest
from stcrank.simulation.truth import (
    PairTerms,
    exit_prob,
    explore_truth,
    pair_terms,
    purchase_prob,
    purchase_prob_given_watch,
    vtr,
    watch_survival,
)
from stcrank.simulation.world import World

_F_DOMAIN = 0xF0C5
_POOL_DOMAIN = 0x9001
VTR_LOG_THRESHOLDS = (2.0, 5.0, 25.0)
"""Thresholds (seconds) whose true view-through rates are recorded in the F log (``truth_vtr2`` ...)."""


@dataclass(eq=False)
class FocusStarts:
    """The sessions to simulate: who enters F through which trigger, and each session's random-number key.

    Attributes:
        user: User index, ``[S]``.
        trigger: Trigger item index, ``[S]``.
        key: Session key in ``[0, 2**32)``, distinct per session, ``[S]``.
    """

    user: Tensor
    trigger: Tensor
    key: Tensor

    def __post_init__(self) -> None:
        if not self.user.shape == self.trigger.shape == self.key.shape or self.user.dim() != 1:
            raise ValueError(
                "FocusStarts needs 1-D user, trigger and key of one length; got "
                f"{tuple(self.user.shape)}, {tuple(self.trigger.shape)}, {tuple(self.key.shape)}"
            )

    def __len__(self) -> int:
        return self.user.shape[0]

    def subset(self, index: Tensor | slice) -> FocusStarts:
        """Return the sessions at ``index``."""
        return FocusStarts(self.user[index], self.trigger[index], self.key[index])


def draw_category(world: World, users: Tensor, u: Tensor, temperature: float = 0.7) -> Tensor:
    """Draw a category per user from :meth:`World.category_preference` by the inverse CDF of ``u``.

    Args:
        world: The world.
        users: User indices ``[N]``.
        u: Uniforms ``[N]``.
        temperature: Softness of the interests.

    Returns:
        Category indices ``[N]``.
    """
    cdf = world.category_preference(users, temperature).cumsum(1)
    return torch.clamp(torch.searchsorted(cdf, u.contiguous()[:, None]).squeeze(1), max=world.n_categories - 1)


def draw_triggers(world: World, users: Tensor, category: Tensor, u: Tensor) -> Tensor:
    """Draw a trigger item of a given category per user, as a homepage click would choose it.

    The trigger is drawn among ``K`` random items of the category with probability proportional to their
    true click-through rate for the user.

    Args:
        world: The world.
        users: User indices ``[N]``.
        category: Category of each trigger ``[N]``.
        u: Uniforms ``[N, 2K]`` (the first ``K`` pick the items, the last ``K`` the Gumbel noise).

    Returns:
        Item indices ``[N]``.
    """
    considered = u.shape[1] // 2
    sizes = world.category_sizes[category]
    within = torch.clamp((u[:, :considered] * sizes[:, None]).long(), max=sizes[:, None] - 1)
    items = world.category_offsets[category][:, None] + within
    ctr = explore_truth(world, users[:, None], items).ctr
    noise = -torch.log(-torch.log(u[:, considered : 2 * considered]))
    pick = torch.argmax(torch.log(ctr) + noise, dim=1)
    return items.gather(1, pick[:, None]).squeeze(1)


@functools.lru_cache(maxsize=256)
def _coprimes(size: int, limit: int = 256) -> tuple[int, ...]:
    values = [a for a in range(1, max(size, 2)) if math.gcd(a, size) == 1]
    step = max(1, len(values) // limit)
    return tuple(values[::step][:limit])


def _coprime_table(sizes: list[int]) -> tuple[Tensor, Tensor]:
    rows = [_coprimes(s) for s in sizes]
    width = max(len(r) for r in rows)
    table = torch.ones(len(rows), width, dtype=torch.int64)
    for i, r in enumerate(rows):
        table[i, : len(r)] = torch.tensor(r)
    return table, torch.tensor([len(r) for r in rows])


def _progression(u_step: Tensor, u_offset: Tensor, sizes: Tensor, which: Tensor, table: Tensor, count: int) -> Tensor:
    """``count`` distinct positions ``(o + a * j) mod size`` per row, ``a`` coprime with ``size``."""
    width = table[1][which]
    step = table[0][which, torch.clamp((u_step * width).long(), max=width - 1)]
    offset = torch.clamp((u_offset * sizes).long(), max=sizes - 1)
    j = torch.arange(count, dtype=torch.int64)
    return (offset[:, None] + step[:, None] * j) % sizes[:, None]


def retrieve_candidates(world: World, triggers: Tensor, keys: Tensor, config: FocusConfig, seed: int) -> Tensor:
    """The ``n`` distinct candidates of each session (never the trigger itself).

    Args:
        world: The world.
        triggers: Trigger item indices, ``[S]``.
        keys: Session keys, ``[S]``.
        config: F-stage config (``candidates``, ``same_category_share``).
        seed: Run seed.

    Returns:
        Item indices ``[S, n]``: same-category candidates first, then related ones.

    Raises:
        ValueError: If a trigger's category or the related list is too small for the requested counts.
    """
    n_same = config.same_category_candidates
    n_related = config.candidates - n_same
    category = world.item_category[triggers]
    sizes = world.category_sizes
    too_small = sizes[category.unique()] < n_same + 1
    if bool(too_small.any()):
        bad = category.unique()[too_small][0]
        raise ValueError(
            f"category {world.category_names[int(bad)]!r} has {int(sizes[bad])} items; FocusConfig asks for "
            f"{n_same} same-category candidates besides the trigger (lower candidates or same_category_share)"
        )
    related_size = world.related_items.shape[1]
    if n_related > related_size:
        raise ValueError(f"FocusConfig asks for {n_related} related candidates; the world keeps {related_size}")
    u = rng.pair_uniform(seed, (_POOL_DOMAIN, keys[:, None]), torch.arange(4)[None, :], 4)
    parts = []
    if n_same:
        table = _coprime_table(sizes.tolist())
        pos = _progression(u[:, 0], u[:, 1], sizes[category], category, table, n_same + 1)
        offset = world.category_offsets[category]
        is_trigger = pos == (triggers - offset)[:, None]
        keep = torch.argsort(is_trigger.to(torch.int8), dim=1, stable=True)[:, :n_same]
        parts.append(offset[:, None] + pos.gather(1, keep))
    if n_related:
        table = _coprime_table([related_size])
        zero = torch.zeros_like(category)
        size = torch.full_like(category, related_size)
        pos = _progression(u[:, 2], u[:, 3], size, zero, table, n_related)
        parts.append(world.related_items[category[:, None], pos])
    return torch.cat(parts, dim=1)


@dataclass(eq=False)
class FocusLog:
    """One row per F-stage page view, as tensors (internal 0-based indices; the log writer maps to ids).

    Attributes:
        columns: Column name -> ``[N]`` tensor. ``session`` (row of the session in the starts),
            ``request_index``, ``position`` (1-based depth), ``page_position`` (1-based within the request),
            ``item``, ``watch_time``, ``ipv``, ``purchase``, ``swipe_down``, ``exit``,
            ``hist_same_category_views`` and ``hist_ipv`` (at request time), ``views_before`` (valid views of
            the item's category just before it), and the truth at the realised state: ``truth_vtr2``,
            ``truth_vtr5``, ``truth_vtr25``, ``truth_cvr``, ``truth_sdr``, ``truth_sdr_filtered``,
            ``truth_e0``, ``truth_e1``.
    """

    columns: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return next(iter(self.columns.values())).shape[0] if self.columns else 0


@dataclass(eq=False)
class FocusResult:
    """Outcomes of a batch of F sessions.

    Attributes:
        starts: The sessions simulated.
        depth: Items seen, ``[S]``.
        ipv: Valid views (``T > 2 s``), ``[S]``.
        purchases: Purchases, ``[S]``.
        gmv: Purchased value, ``[S]`` (float64).
        truncated: Whether the session hit the depth or candidate limit instead of exiting, ``[S]``.
        expected_purchases: Sum over the session's served lists of their expected purchases given the state each
            list was served in (:func:`~stcrank.simulation.expectation.expected_list_outcomes`, closed form over
            the watch, purchase and exit draws within the list): an unbiased, lower-variance estimate of the
            purchases, ``[S]``.
        expected_ipv: The same for valid views, ``[S]``.
        expected_gmv: The same for purchased value, ``[S]``.
        expected_depth: The same for items seen, ``[S]``.
        category_purchases: Purchases by item category, ``[S, C]``.
        purchase_session: Session row of every purchase, ``[P]``.
        purchase_depth: 1-based depth of every purchase, ``[P]``.
        purchase_category: Category of every purchased item, ``[P]``.
        log: Page-view rows when recorded, else None.
    """

    starts: FocusStarts
    depth: Tensor
    ipv: Tensor
    purchases: Tensor
    gmv: Tensor
    truncated: Tensor
    expected_purchases: Tensor
    expected_ipv: Tensor
    expected_gmv: Tensor
    expected_depth: Tensor
    category_purchases: Tensor
    purchase_session: Tensor
    purchase_depth: Tensor
    purchase_category: Tensor
    log: FocusLog | None = None

    def __len__(self) -> int:
        return self.depth.shape[0]

    @staticmethod
    def concat(parts: list[FocusResult]) -> FocusResult:
        """Concatenate results of consecutive chunks of sessions (session rows are re-based)."""
        offsets = [0]
        for p in parts[:-1]:
            offsets.append(offsets[-1] + len(p))
        log = None
        if parts and parts[0].log is not None:
            names = parts[0].log.columns
            cols = {}
            for name in names:
                values = [p.log.columns[name] for p in parts]
                if name == "session":
                    values = [v + o for v, o in zip(values, offsets, strict=True)]
                cols[name] = torch.cat(values)
            log = FocusLog(cols)
        return FocusResult(
            starts=FocusStarts(
                torch.cat([p.starts.user for p in parts]),
                torch.cat([p.starts.trigger for p in parts]),
                torch.cat([p.starts.key for p in parts]),
            ),
            depth=torch.cat([p.depth for p in parts]),
            ipv=torch.cat([p.ipv for p in parts]),
            purchases=torch.cat([p.purchases for p in parts]),
            gmv=torch.cat([p.gmv for p in parts]),
            truncated=torch.cat([p.truncated for p in parts]),
            expected_purchases=torch.cat([p.expected_purchases for p in parts]),
            expected_ipv=torch.cat([p.expected_ipv for p in parts]),
            expected_gmv=torch.cat([p.expected_gmv for p in parts]),
            expected_depth=torch.cat([p.expected_depth for p in parts]),
            category_purchases=torch.cat([p.category_purchases for p in parts]),
            purchase_session=torch.cat([p.purchase_session + o for p, o in zip(parts, offsets, strict=True)]),
            purchase_depth=torch.cat([p.purchase_depth for p in parts]),
            purchase_category=torch.cat([p.purchase_category for p in parts]),
            log=log,
        )


def list_expectation(world: World, listed: PairTerms, views: Tensor, depth: int) -> ListExpectation:
    """Expected outcomes of served lists given the state they are served in (closed form).

    See :mod:`stcrank.simulation.expectation`.

    Args:
        world: The world.
        listed: Pair terms of the listed items in display order, ``[R, k]``.
        views: Valid views of every category so far in each session, ``[R, C]``.
        depth: Items seen before the list's first item.

    Returns:
        The expectations, each ``[R]``.
    """
    k = listed.category.shape[1]
    wide = PairTerms(*(t[..., None] for t in listed))
    # Purchase probability of item j after c earlier valid views of its category within the list: [R, k, k].
    counts = views.gather(1, listed.category)[:, :, None] + torch.arange(k)
    survival = watch_survival(world, listed)  # the first threshold is the valid-view one
    purchase = purchase_prob(world, wide, counts, [s[..., None] for s in survival])
    return expected_list_outcomes(
        ipv=survival[0],
        purchase=purchase,
        e0=exit_prob(world, listed, depth + torch.arange(k)),
        e1=listed.e1,
        same_category=listed.category[:, :, None] == listed.category[:, None, :],
        price=listed.price,
    )


def check_ranking(choice: Tensor, rows: int, k: int, n: int, policy: object) -> Tensor:
    """Check a policy's answer: ``LongTensor[rows, k]`` of distinct indices in ``[0, n)``.

    Args:
        choice: What the policy returned.
        rows: Number of requests.
        k: List length asked for.
        n: Number of candidates per request.
        policy: The policy (named in errors).

    Returns:
        The indices as ``int64``.

    Raises:
        ValueError: Naming the policy and what was expected.
    """
    name = type(policy).__name__
    if not isinstance(choice, Tensor) or choice.shape != (rows, k):
        shape = tuple(choice.shape) if isinstance(choice, Tensor) else type(choice).__name__
        raise ValueError(f"policy {name} must return a LongTensor[{rows}, {k}]; got {shape}")
    if choice.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"policy {name} must return integer indices; got {choice.dtype}")
    choice = choice.long()
    if rows and (int(choice.min()) < 0 or int(choice.max()) >= n):
        raise ValueError(f"policy {name} returned indices outside [0, {n})")
    if k > 1 and bool((choice.sort(dim=1).values.diff(dim=1) == 0).any()):
        raise ValueError(f"policy {name} returned the same candidate twice in a list")
    return choice


def simulate_focus(
    world: World,
    policy: FPolicy,
    starts: FocusStarts,
    *,
    config: FocusConfig | None = None,
    seed: int = 0,
    record: bool = False,
    chunk_size: int = 8192,
) -> FocusResult:
    """Serve F sessions with a policy and simulate the user's responses.

    Args:
        world: The world.
        policy: The F-stage policy.
        starts: The sessions (user, trigger, key).
        config: F-stage serving config; the defaults when None.
        seed: Run seed of every random draw (with the session keys: common random numbers).
        record: Whether to keep one log row per page view.
        chunk_size: Sessions simulated together (memory bound; results do not depend on it).

    Returns:
        The outcomes.
    """
    config = config or FocusConfig()
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    parts = [
        _simulate_chunk(world, policy, starts.subset(slice(i, i + chunk_size)), config, seed, record)
        for i in range(0, len(starts), chunk_size)
    ]
    if not parts:
        raise ValueError("simulate_focus needs at least one session")
    return FocusResult.concat(parts)


def _simulate_chunk(
    world: World, policy: FPolicy, starts: FocusStarts, config: FocusConfig, seed: int, record: bool
) -> FocusResult:
    n_sessions, n, page = len(starts), config.candidates, config.page_size
    users, triggers, keys = starts.user, starts.trigger, starts.key
    pool = retrieve_candidates(world, triggers, keys, config, seed)
    terms = pair_terms(world, users[:, None], pool)
    candidate_pool = CandidatePool(keys=keys, users=users, items=pool, terms=terms)
    shown = torch.zeros(n_sessions, n, dtype=torch.bool)
    views = torch.zeros(n_sessions, world.n_categories, dtype=torch.int64)
    if config.trigger_counts_as_view:
        views[torch.arange(n_sessions), world.item_category[triggers]] = 1
    ipv_count = torch.zeros(n_sessions, dtype=torch.int64)
    purchases = torch.zeros(n_sessions, dtype=torch.int64)
    gmv = torch.zeros(n_sessions, dtype=torch.float64)
    depth = torch.zeros(n_sessions, dtype=torch.int64)
    alive = torch.ones(n_sessions, dtype=torch.bool)
    truncated = torch.zeros(n_sessions, dtype=torch.bool)
    expected = torch.zeros(4, n_sessions, dtype=torch.float64)  # purchases, valid views, purchased value, depth
    category_purchases = torch.zeros(n_sessions, world.n_categories, dtype=torch.int64)
    events: list[tuple[Tensor, Tensor, Tensor]] = []
    rows_log: list[dict[str, Tensor]] = []
    ipv_threshold = world.behaviour.ipv_threshold
    streams = torch.arange(3)[None, :]
    limit = min(config.max_depth, n)

    for r in range(math.ceil(limit / page)):
        rows = alive.nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        d0 = r * page
        k = min(page, limit - d0)
        available = torch.argsort(shown[rows].to(torch.int8), dim=1, stable=True)[:, : n - d0]
        request = FRequest(
            world=world,
            session_key=keys[rows],
            user=users[rows],
            trigger=triggers[rows],
            candidates=pool[rows].gather(1, available),
            request_index=r,
            depth=d0,
            same_category_views=views[rows].clone(),
            ipv_so_far=ipv_count[rows].clone(),
            pool=candidate_pool,
            pool_rows=rows,
            pool_positions=available,
        )
        choice = check_ranking(policy.rank(request, k), rows.numel(), k, n - d0, policy)
        chosen = available.gather(1, choice)
        shown[rows[:, None], chosen] = True
        listed = list_expectation(world, terms.take(rows[:, None] * n + chosen), views[rows], d0)
        expected[:, rows] += torch.stack([listed.purchases, listed.ipv, listed.gmv, listed.depth])
        live = torch.ones(rows.numel(), dtype=torch.bool)
        for j in range(k):
            local = live.nonzero().squeeze(1)
            if local.numel() == 0:
                break
            s = rows[local]
            pos = chosen[local, j]
            t = terms.take(s * n + pos)
            category = t.category
            before = views[s, category]
            d = d0 + j
            u = rng.pair_uniform(seed, (_F_DOMAIN, d, keys[s][:, None]), streams, 3)
            watch = torch.exp(t.mu + t.sigma * torch.special.ndtri(u[:, 0]))
            ipv = watch > ipv_threshold
            buy = u[:, 1] < purchase_prob_given_watch(world, t, before, watch)
            e0 = exit_prob(world, t, d)
            leave = u[:, 2] < torch.where(buy, t.e1, e0)
            views[s, category] = before + ipv.long()
            ipv_count[s] += ipv.long()
            purchases[s] += buy.long()
            gmv[s] += torch.where(buy, t.price, 0.0).double()
            category_purchases[s, category] += buy.long()
            depth[s] = d + 1
            live[local[leave]] = False
            if bool(buy.any()):
                events.append((s[buy], torch.full((int(buy.sum()),), d + 1), category[buy]))
            if record:
                cvr = purchase_prob(world, t, before, watch_survival(world, t))
                sdr = 1.0 - cvr * t.e1 - (1.0 - cvr) * e0
                rows_log.append(
                    {
                        "session": s,
                        "request_index": torch.full_like(s, r),
                        "position": torch.full_like(s, d + 1),
                        "page_position": torch.full_like(s, j + 1),
                        "item": pool[s, pos],
                        "watch_time": watch,
                        "ipv": ipv,
                        "purchase": buy,
                        "swipe_down": ~leave,
                        "exit": leave,
                        "hist_same_category_views": request.same_category_views[local, category],
                        "hist_ipv": request.ipv_so_far[local],
                        "views_before": before,
                        **{f"truth_vtr{int(tau)}": vtr(t, tau) for tau in VTR_LOG_THRESHOLDS},
                        "truth_cvr": cvr,
                        "truth_sdr": sdr,
                        "truth_sdr_filtered": sdr / torch.clamp(sdr + (1.0 - cvr) * e0, min=1e-12),
                        "truth_e0": e0,
                        "truth_e1": t.e1,
                    }
                )
        alive[rows] = live
        if d0 + k >= limit:
            truncated[rows[live]] = True
            alive[rows] = False

    def cat_events(i: int) -> Tensor:
        return torch.cat([e[i] for e in events]) if events else torch.zeros(0, dtype=torch.int64)

    log = None
    if record:
        log = FocusLog({name: torch.cat([row[name] for row in rows_log]) for name in rows_log[0]} if rows_log else {})
    return FocusResult(
        starts=starts,
        depth=depth,
        ipv=ipv_count,
        purchases=purchases,
        gmv=gmv,
        truncated=truncated,
        expected_purchases=expected[0],
        expected_ipv=expected[1],
        expected_gmv=expected[2],
        expected_depth=expected[3],
        category_purchases=category_purchases,
        purchase_session=cat_events(0),
        purchase_depth=cat_events(1),
        purchase_category=cat_events(2),
        log=log,
    )
