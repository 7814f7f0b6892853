"""The provably optimal list: ratio order, subsequence dynamic programme, exact dominance pruning.

Objective (see :func:`stcrank.rerank.sequence_value`): choose and order ``k`` of ``n`` candidates to maximise
``V = sum_i p_i v_i`` with ``p_i = prod_{j<i} s_j``.

1. *Order of a fixed set.* Swapping neighbours ``a, b`` (``a`` first) changes ``V`` by
   ``P * [v_b (1 - s_a) - v_a (1 - s_b)]`` whatever comes before or after, so a best order sorts by
   ``r = v / (1 - s)`` decreasing (``s = 1``: ``r = +inf`` for ``v > 0``, ``0`` for ``v = 0``, ``-inf`` for
   ``v < 0``).
2. *Choice of the set.* Some optimal list is therefore a subsequence of the ``r``-sorted candidates, found by
   the backward programme ``F[j][c] = max(F[j+1][c], v_j + s_j * F[j+1][c-1])`` with ``F[end][0] = 0`` and
   ``F[end][c > 0] = -inf`` (exactly ``k`` items), ``O(n k)`` per request.
3. *Dominance pruning.* Say ``j`` dominates ``i`` when ``v_j >= v_i`` and ``r_j >= r_i``, one of them
   strictly (a strict partial order; for ``v >= 0`` it contains the weaker ``v_j >= v_i, s_j >= s_i``, as
   ``r`` grows with both). Suppose at least ``k`` candidates have ``v >= 0``. Then some optimal list uses only
   those: dropping the last negative item of a list (``X >= 0`` after it) changes its value by
   ``P * [(1 - s) X - v] >= 0``, and an unused non-negative item can be appended. In a list of non-negative
   items sorted by ``r``, the value ``X`` of the items after ``i`` satisfies ``0 <= X <= r_i`` (by induction
   from the end: ``v + s X' <= v + s r = r``). Putting an unused dominator ``j`` in ``i``'s slot changes the
   value by ``P * [(v_j - v_i) + (s_j - s_i) X]``, linear in ``X``: ``>= 0`` at ``X = 0`` (``v_j >= v_i``) and
   at ``X = r_i`` (it is ``v_j - (1 - s_j) r_i >= 0`` as ``r_j >= r_i``). So a candidate dominated by ``k`` or
   more others is never needed: swap it for an unused dominator (one is left, as the list holds at most
   ``k - 1`` of them) and repeat; every swap moves up the dominance order, so this ends. Requests with fewer
   than ``k`` non-negative values are solved unpruned. :func:`dominance_candidates` drops candidates on cheap
   certificates of ``k`` dominators: for ``n = 800, k = 10`` it keeps about 60 (at most about 100) whether
   ``v`` and ``s`` are independent or anti-correlated, where dominance in ``(v, s)`` alone kept 130 and 220.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from stcrank.plugins import Reranker
from stcrank.rerank.ordering import compact_mask
from stcrank.rerank.threads import RERANK_THREADS, intra_op_threads
from stcrank.rerank.validation import check_batch, check_scores

TOP_CANDIDATES = 48
"""The threshold pass certifies dominance with about this many best candidates by value (and by ratio)."""
GRID_CELLS = 16
"""Resolution of the value x ratio grid of the second pass."""
GRID_AFTER = 256
"""The grid pass runs only when some request keeps more candidates than this after the threshold pass."""
SAMPLE_COLUMNS = 128
"""The threshold pass reads its thresholds from about this many evenly spaced candidates."""


def ratio_key(value: Tensor, continue_prob: Tensor) -> Tensor:
    """Sort key of the optimal order: ``r = v / (1 - s)``, with the limits at ``s = 1``.

    Args:
        value: Candidate values (``-inf`` allowed for padding).
        continue_prob: Continuation probabilities, same shape, in ``[0, 1]``.

    Returns:
        ``r``, same shape: ``+inf`` / ``0`` / ``-inf`` where ``s = 1`` and ``v > 0`` / ``v = 0`` / ``v < 0``.
    """
    # v / 0 is already the limit for v != 0; only 0 / 0 (NaN) needs fixing, to 0.
    return torch.div(value, 1 - continue_prob).nan_to_num_(0.0, torch.inf, -torch.inf)


def _grid_bins(x: Tensor, low: Tensor, high: Tensor, cells: int) -> Tensor:
    """Monotone binning of each row into ``cells`` equal-width bins: a higher bin means a strictly larger value."""
    # Halving first keeps ``high - low`` finite for any finite inputs; every step is monotone in x.
    span = high * 0.5 - low * 0.5
    scaled = (x * 0.5 - low * 0.5) / torch.where(span > 0, span, torch.ones_like(span)) * cells
    return scaled.long().clamp_(0, cells - 1)


def _dominated_via_grid(value: Tensor, second: Tensor, padding: Tensor, k: int, cells: int) -> Tensor:
    """Candidates with ``k`` others in grid cells strictly above in both scores.

    Padding entries are put in the lowest cell of both axes, where they can dominate no one.
    """
    rows = value.shape[0]
    bins = []
    for x in (value, second):
        low = x.masked_fill(padding, torch.inf).amin(1, keepdim=True)
        high = x.masked_fill(padding, -torch.inf).amax(1, keepdim=True)
        bins.append(_grid_bins(torch.where(padding, low, x), low, high, cells))
    # Bins counted from the top, so that "strictly above in both" becomes a prefix sum.
    cell = (cells - 1 - bins[0]) * cells + (cells - 1 - bins[1])
    counts = torch.zeros(rows, cells * cells, dtype=torch.int32, device=value.device)
    counts.scatter_add_(1, cell, torch.ones_like(cell, dtype=torch.int32))
    at_most = counts.view(rows, cells, cells).cumsum(1).cumsum(2)
    strictly_above = F.pad(at_most, (1, 0, 1, 0))[:, :-1, :-1].reshape(rows, cells * cells)
    return strictly_above.gather(1, cell) >= k


def _finite(x: Tensor, padding: Tensor) -> Tensor:
    """``x`` with ``+-inf`` replaced by the row's largest / smallest finite entry (monotone, for binning)."""
    finite = x.isfinite() & ~padding
    high = x.masked_fill(~finite, -torch.inf).amax(1, keepdim=True)
    low = x.masked_fill(~finite, torch.inf).amin(1, keepdim=True)
    # Rows without finite entries get 0 everywhere: no certificates there, which is always sound.
    high, low = high.nan_to_num(0.0, 0.0, 0.0), low.nan_to_num(0.0, 0.0, 0.0)
    return torch.minimum(torch.maximum(x, low), high).masked_fill(padding, -torch.inf)


def _kept_via_threshold(primary: Tensor, secondary: Tensor, k: int, top: int) -> Tensor:
    """Cheap first pass: keep-mask after a dominance test against the about ``top`` best by ``primary``.

    ``theta`` is read from a sample of columns so that about ``top`` candidates reach it (any threshold is
    sound). The candidates with ``primary >= theta`` dominate strictly every candidate below ``theta`` whose
    secondary score is at most the ``k``-th largest among them.
    """
    size = primary.shape[1]
    stride = max(1, size // SAMPLE_COLUMNS)
    sample = primary[:, ::stride]
    rank = min(sample.shape[1], -(-top // stride))
    theta = torch.topk(sample, rank, dim=1).values[:, -1:]
    above = primary >= theta
    kth = torch.topk(torch.where(above, secondary, -torch.inf), min(k, size), dim=1).values[:, -1:]
    return above | (secondary > kth)


def _unprunable(value: Tensor, k: int) -> Tensor:
    """Requests with fewer than ``k`` candidates of value ``>= 0``, where dominance pruning is not valid."""
    if bool(value.amin() >= 0):
        return torch.zeros(value.shape[0], dtype=torch.bool, device=value.device)
    return (value >= 0).sum(1) < k


def dominance_candidates(
    value: Tensor,
    continue_prob: Tensor,
    k: int,
    top: int = TOP_CANDIDATES,
    grid: int = GRID_CELLS,
    grid_after: int = GRID_AFTER,
) -> Tensor:
    """Candidates the exact optimum may need; every other one is dominated by at least ``k`` candidates.

    A candidate is dropped only with a certificate of ``k`` dominators in value and ratio ``r = v / (1 - s)``
    (see the module docstring). The threshold pass compares every candidate with the about ``top`` best by value
    (and, symmetrically, by ratio); when some request still keeps more than ``grid_after`` candidates, a
    ``grid x grid`` histogram of both scores certifies more among the survivors. A certificate found among
    survivors stays valid, and a candidate with ``k`` dominators always has ``k`` among the candidates with
    fewer than ``k``, so nothing needed is lost: every candidate with fewer than ``k`` dominators is kept.
    Requests with fewer than ``k`` candidates of value ``>= 0`` keep every candidate (the pruning argument
    needs them).

    Args:
        value: Candidate values, ``[R, n]``.
        continue_prob: Continuation probabilities, ``[R, n]``.
        k: List length.
        top: Size of the best set each threshold certificate uses.
        grid: Grid resolution (``0`` disables the grid pass).
        grid_after: Run the grid pass only when some request keeps more candidates than this.

    Returns:
        ``LongTensor[R, M]``: the kept candidates' indices in increasing order, padded with ``-1``.
    """
    check_batch(value, continue_prob, k)
    rows, size = value.shape
    if rows == 0:
        return torch.zeros(0, size, dtype=torch.long, device=value.device)
    ratio = ratio_key(value, continue_prob)
    keep = _kept_via_threshold(value, ratio, k, top) & _kept_via_threshold(ratio, value, k, top)
    unprunable = _unprunable(value, k).unsqueeze(1)
    if bool(unprunable.any()):
        keep |= unprunable
    kept = compact_mask(keep)
    if not grid or kept.shape[1] <= grid_after:
        return kept
    padding = kept < 0
    index = kept.clamp(min=0)
    kept_value = value.gather(1, index).masked_fill(padding, -torch.inf)
    kept_ratio = _finite(ratio.gather(1, index), padding)
    dominated = _dominated_via_grid(kept_value, kept_ratio, padding, k, grid) & ~unprunable
    survivors = compact_mask(~(dominated | padding))
    return torch.where(survivors >= 0, kept.gather(1, survivors.clamp(min=0)), -1)


def _take_flags(value: Tensor, continue_prob: Tensor, k: int) -> Tensor:
    """Backward programme over ordered candidates, then the backtracked take-flags, ``bool[R, M]``.

    Padding (``value = -inf``, ``continue_prob = 1``) must come *before* each row's real candidates, so that
    every row has exactly ``M - 1 - j`` real candidates after position ``j`` and the impossible states
    (``c > M - j`` items from position ``j`` on) are the same for all rows: the loop simply never computes them,
    which also keeps ``0 * -inf`` out of the arithmetic.
    """
    rows, size = value.shape
    device = value.device
    # One contiguous [R] row per position; the loop walks them backwards.
    positions = zip(value.t().contiguous().unbind(0), continue_prob.t().contiguous().unbind(0), strict=True)
    # best[c] = F[j][c]: best value of exactly c items among positions j.. (-inf when impossible).
    best = value.new_full((k + 1, rows), -torch.inf)
    best[0] = 0
    take = value.new_empty(k, rows)
    # flags[j, c]: with c items still needed at position j, take candidate j (c = 0 never takes).
    flags = torch.zeros(size, k + 1, rows, dtype=torch.bool, device=device)
    flag_rows = flags[:, 1:].unbind(0)
    fewer, more = best[:k], best[1:]
    for j, (value_j, continue_j) in reversed(list(enumerate(positions))):
        top = size - j  # at most size - j items fit from position j on
        if top < k:
            torch.addcmul(value_j, continue_j, best[:top], out=take[:top])
            torch.ge(take[:top], best[1 : top + 1], out=flag_rows[j][:top])
            torch.maximum(take[:top], best[1 : top + 1], out=best[1 : top + 1])
        else:
            torch.addcmul(value_j, continue_j, fewer, out=take)
            torch.ge(take, more, out=flag_rows[j])
            torch.maximum(take, more, out=more)
    flags = flags.to(torch.uint8)
    need = torch.full((1, rows), k, dtype=torch.long, device=device)
    taken = torch.zeros(size, 1, rows, dtype=torch.uint8, device=device)
    for j, (flag_j, taken_j) in enumerate(zip(flags.unbind(0), taken.unbind(0), strict=True)):
        torch.gather(flag_j, 0, need, out=taken_j)
        need -= taken_j
        if j % 16 == 15 and not bool(need.any()):
            break
    if bool(need.any()):
        raise RuntimeError("exact re-ranker: the programme did not place k items")
    return taken.squeeze(1).t().bool()


def solve_subsequence(value: Tensor, continue_prob: Tensor, candidates: Tensor, k: int) -> Tensor:
    """Best list of ``k`` among the given candidates of each request (ratio order + programme).

    Args:
        value: Candidate values, ``[R, n]``, finite.
        continue_prob: Continuation probabilities, ``[R, n]``, in ``[0, 1]``.
        candidates: Candidate indices to choose from, ``LongTensor[R, M]``, real ones first, then ``-1``
            padding; each row must hold at least ``k`` real candidates.
        k: List length.

    Returns:
        ``LongTensor[R, k]`` candidate indices in display order. Ties in ``r`` keep the order of
        ``candidates``; between equally good lists the one using earlier candidates in that order wins.
    """
    padding = candidates < 0
    index = candidates.clamp(min=0)
    cand_value = value.gather(1, index).masked_fill(padding, -torch.inf)
    cand_continue = continue_prob.gather(1, index).masked_fill(padding, 1.0)
    # Padding gets key NaN, which a descending sort puts first: the programme wants it before the real ones.
    key = ratio_key(cand_value, cand_continue).masked_fill_(padding, torch.nan)
    _, order = torch.sort(key, dim=1, descending=True, stable=True)
    taken = _take_flags(cand_value.gather(1, order), cand_continue.gather(1, order), k)
    # Exactly k flags per row, so the row-major nonzero() lists each row's k positions in display order.
    positions = taken.nonzero()[:, 1].view(taken.shape[0], k)
    return candidates.gather(1, order.gather(1, positions))


class ExactReranker(Reranker):
    """The list of maximum sequence value, provably (not a heuristic).

    Sorts candidates by ``r = v / (1 - s)``, solves the subsequence programme ``F[j][c] = max(F[j+1][c],
    v_j + s_j F[j+1][c-1])`` for all requests at once and backtracks the chosen items, after dropping the
    candidates that are dominated in ``(v, r)`` by ``k`` or more others (exact; see the module docstring).
    Valid as long as value and continuation are per-item; with a prefix-dependent evaluator use beam search and
    keep this as the bound.

    Ties are deterministic: candidates with equal ``r`` keep index order, and among equally good lists the one
    taking earlier candidates in that order wins.

    Args:
        prune: Apply the dominance pruning (same optimum, much faster for large ``n``).
        pruning_top: Size of the best sets (by value, by ratio) the pruning certifies dominance with.
        pruning_grid: Resolution of the pruning's value x ratio grid (``0`` disables it).
        threads: Torch intra-op threads while re-ranking (see :mod:`stcrank.rerank.threads`); None keeps the
            process's setting.
    """

    def __init__(
        self,
        prune: bool = True,
        pruning_top: int = TOP_CANDIDATES,
        pruning_grid: int = GRID_CELLS,
        threads: int | None = RERANK_THREADS,
    ) -> None:
        if pruning_top < 1 or pruning_grid < 0:
            raise ValueError(f"pruning_top must be >= 1 and pruning_grid >= 0, got {pruning_top} and {pruning_grid}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
        self.prune = prune
        self.pruning_top = pruning_top
        self.pruning_grid = pruning_grid
        self.threads = threads

    def rerank(self, value: Tensor, continue_prob: Tensor, k: int) -> Tensor:
        """Return the optimal list of each request.

        Args:
            value: Value of each candidate, ``[R, n]``; any finite values, negative ones included.
            continue_prob: Continuation probability of each candidate, ``[R, n]``, in ``[0, 1]``.
            k: List length; exactly ``k`` items are returned even when some are worth ``<= 0``.

        Returns:
            ``LongTensor[R, k]`` candidate indices in display order.

        Raises:
            ValueError: If ``value`` or ``continue_prob`` holds NaN or invalid values.
        """
        check_batch(value, continue_prob, k)
        with intra_op_threads(self.threads):
            return self._rerank(*check_scores(value, continue_prob), k)

    def _rerank(self, value: Tensor, continue_prob: Tensor, k: int) -> Tensor:
        rows, n = value.shape
        if rows == 0:
            return torch.empty(0, k, dtype=torch.long, device=value.device)
        if not self.prune:
            return solve_subsequence(value, continue_prob, torch.arange(n, device=value.device).expand(rows, n), k)
        prunable = ~_unprunable(value, k)
        if bool(prunable.all()):
            return solve_subsequence(value, continue_prob, self._candidates(value, continue_prob, k), k)
        # Requests the pruning cannot shrink would widen the whole batch's programme: solve them apart.
        out = torch.empty(rows, k, dtype=torch.long, device=value.device)
        at = prunable.nonzero().squeeze(1)
        if at.numel():
            candidates = self._candidates(value[at], continue_prob[at], k)
            out[at] = solve_subsequence(value[at], continue_prob[at], candidates, k)
        at = (~prunable).nonzero().squeeze(1)
        everything = torch.arange(n, device=value.device).expand(at.numel(), n)
        out[at] = solve_subsequence(value[at], continue_prob[at], everything, k)
        return out

    def _candidates(self, value: Tensor, continue_prob: Tensor, k: int) -> Tensor:
        return dominance_candidates(value, continue_prob, k, top=self.pruning_top, grid=self.pruning_grid)
