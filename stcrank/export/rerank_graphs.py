"""Tensor-only forms of the re-rankers (greedy, exact, beam search): ``value, continue_prob [R, n] -> order [R, k]``.

The plugins' own code prunes and branches on the data (only the rows with ties take the slow path, the exact
programme drops dominated candidates, beam search cuts its frame), which a traced graph cannot hold. These
graphs compute the same lists with data-independent shapes:

* greedy: a stable descending sort of the values, cut to ``k``.
* exact: the candidates sorted by ``r = v / (1 - s)`` (stable), then the subsequence programme
  ``F[j][c] = max(F[j+1][c], v_j + s_j F[j+1][c-1])`` one list length ``c`` at a time: for a fixed ``c`` the
  recurrence is a suffix maximum of ``v_j + s_j F[j+1][c-1]``, taken in ``log2(n)`` doubling steps. The
  take-flags and their backtracking (the first position from which taking is optimal, ``k`` times) are those of
  :func:`stcrank_plugins.rerankers.exact.solve_subsequence` without pruning, which gives the same optimum.
* beam search (point-wise prefix scorer): the plugin's search over the whole value-sorted frame, every step a
  stable sort of the ``beams x candidates`` extensions; the plugin prunes that frame without changing the result.

``k`` (and the beam size) are fixed at export; ``n`` is free from ``k`` (and the beam size) up to
:data:`MAX_CANDIDATES`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from stcrank.export.schema import DimSpec, GraphSpec, TensorSpec

MAX_CANDIDATES = 8192
"""Largest number of candidates per request an exported re-ranker takes (the exact programme's suffix maximum
takes ``log2`` of it doubling steps)."""


def stable_descending(x: Tensor) -> Tensor:
    """Indices that sort each row in decreasing order, ties by the lower index (``torch.sort(stable=True)``)."""
    return torch.sort(x, dim=1, descending=True, stable=True)[1]


def stable_top(x: Tensor, count: int) -> Tensor:
    """Indices of the ``count`` largest entries of each row, in decreasing order, ties by the lower index.

    A ``-inf`` column is appended before sorting (never chosen while ``count`` entries are finite), so that the
    cut is always shorter than the row: tracing then needs no guard on the row's length.
    """
    padded = torch.cat([x, torch.full_like(x[:, :1], -math.inf)], dim=1)
    return stable_descending(padded)[:, :count]


class GreedyGraph(nn.Module):
    """The ``k`` highest values of each request, best first (the ``greedy`` plugin).

    Args:
        k: List length.
    """

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, value: Tensor, continue_prob: Tensor) -> Tensor:
        """Order ``[R, k]`` (``continue_prob`` is not used, as by the plugin)."""
        return stable_top(value, self.k)


def suffix_maximum(x: Tensor, steps: int) -> Tensor:
    """``out[:, j] = max(x[:, j:])`` for rows of at most ``2 ** steps`` entries, by doubling shifts."""
    shift = 1
    for _ in range(steps):
        x = torch.maximum(x, F.pad(x, (0, shift), value=-math.inf)[:, shift:])
        shift *= 2
    return x


class ExactGraph(nn.Module):
    """The list of maximum sequence value (the ``exact`` plugin, without its pruning: same optimum).

    Args:
        k: List length.
        max_candidates: Largest ``n`` the graph is correct for.
    """

    def __init__(self, k: int, max_candidates: int = MAX_CANDIDATES) -> None:
        super().__init__()
        self.k = k
        self.steps = max(1, math.ceil(math.log2(max_candidates)))

    def forward(self, value: Tensor, continue_prob: Tensor) -> Tensor:
        """Order ``[R, k]``."""
        key = torch.div(value, 1 - continue_prob)
        key = torch.where(torch.isnan(key), torch.zeros_like(key), key)  # 0 / 0: v = 0 at s = 1
        order = stable_descending(key)
        v, s = value.gather(1, order), continue_prob.gather(1, order)
        n = v.shape[1]
        minus_inf = torch.full_like(v[:, :1], -math.inf)
        previous = torch.zeros_like(torch.cat([v, minus_inf], dim=1))  # F[j][0] = 0 for j = 0..n
        flags = []
        for _ in range(self.k):
            after = previous[:, 1:]  # F[j+1][c-1]
            # Impossible states stay -inf (and 0 * -inf never happens), as in the plugin's programme.
            take = torch.where(after > -math.inf, torch.addcmul(v, s, after), -math.inf)
            best = suffix_maximum(take, self.steps)  # F[j][c]
            following = torch.cat([best[:, 1:], minus_inf], dim=1)  # F[j+1][c]
            flags.append((take >= following) & (take > -math.inf))
            previous = torch.cat([best, minus_inf], dim=1)
        positions = torch.arange(n, device=v.device).unsqueeze(0)
        start = torch.zeros_like(v[:, :1], dtype=torch.long)
        chosen = []
        for need in range(self.k, 0, -1):
            # The first position from `start` on where taking is optimal with `need` items still to place.
            allowed = (flags[need - 1] & (positions >= start)).to(torch.float32)
            position = allowed.argmax(dim=1, keepdim=True)
            chosen.append(position)
            start = position + 1
        return order.gather(1, torch.cat(chosen, dim=1))


class BeamSearchGraph(nn.Module):
    """Beam search with the point-wise prefix scorer (the ``beam_search`` plugin).

    Args:
        k: List length.
        beam_size: Beams kept per request (``n`` must be at least this).
    """

    def __init__(self, k: int, beam_size: int) -> None:
        super().__init__()
        self.k = k
        self.beam_size = beam_size

    def forward(self, value: Tensor, continue_prob: Tensor) -> Tensor:
        """Order ``[R, k]``."""
        frame = stable_descending(value)
        frame_value, frame_continue = value.gather(1, frame), continue_prob.gather(1, frame)
        rows, n = value.shape
        items = torch.zeros_like(frame[:, :1]).unsqueeze(2)[:, :, :0]  # [R, 1, 0]
        score = torch.zeros_like(value[:, :1])
        total = torch.zeros_like(score)
        reach = torch.ones_like(score)
        for step in range(self.k):
            scores = torch.addcmul(score.unsqueeze(2), reach.unsqueeze(2), frame_value.unsqueeze(1))  # [R, W, n]
            if step:
                scores = scores.scatter(2, items, -math.inf)
            beams = scores.shape[1]
            flat_scores = scores.reshape(rows, beams * n)
            flat = stable_top(flat_scores, self.beam_size)
            top = flat_scores.gather(1, flat)
            parent = torch.div(flat, n, rounding_mode="floor")
            item = flat - parent * n
            kept = items.gather(1, parent.unsqueeze(2).expand(rows, self.beam_size, step))
            items = torch.cat([kept, item.unsqueeze(2)], dim=2)
            parent_reach = reach.gather(1, parent)
            total = torch.addcmul(total.gather(1, parent), parent_reach, frame_value.gather(1, item))
            reach = parent_reach * frame_continue.gather(1, item)
            score = top
        best = total.argmax(dim=1)
        chosen = items.gather(1, best.view(rows, 1, 1).expand(rows, 1, self.k)).squeeze(1)
        return frame.gather(1, chosen)


def reranker_spec(name: str, k: int, min_candidates: int, metadata: dict) -> GraphSpec:
    """The schema of a re-ranker graph ``value, continue_prob [R, n] -> order [R, k]``."""
    dims = {
        "requests": DimSpec("requests", example=3, description="requests (one row each)"),
        "candidates": DimSpec(
            "candidates",
            min=max(2, min_candidates),
            max=MAX_CANDIDATES,
            example=max(min_candidates + 3, 7),
            description="candidates per request",
        ),
    }
    return GraphSpec(
        name=name,
        kind="reranker",
        inputs=[
            TensorSpec("value", "float32", ("requests", "candidates"), "value of each candidate", range=(None, None)),
            TensorSpec(
                "continue_prob",
                "float32",
                ("requests", "candidates"),
                "probability that the user continues after each candidate",
                range=(0.0, 1.0),
            ),
        ],
        outputs=[TensorSpec("order", "int64", ("requests", k), "candidate indices in display order")],
        dims=dims,
        metadata={"k": k, **metadata},
        description=f"Re-ranker {metadata['reranker']}: the list of k={k} candidates to show, in display order.",
    )


def reranker_graph(reranker: object, k: int) -> tuple[GraphSpec, nn.Module]:
    """The graph of a re-ranker plugin instance for lists of ``k``.

    Args:
        reranker: A ``greedy``, ``exact`` or ``beam_search`` (point-wise prefix scorer) re-ranker.
        k: List length.

    Raises:
        ExportError: For another re-ranker, another prefix scorer, or ``k < 1``.
    """
    from stcrank.export.formats import ExportError
    from stcrank.rerank.prefix_scorers import PointwisePrefixScorer
    from stcrank_plugins.rerankers.beam_search import BeamSearchReranker
    from stcrank_plugins.rerankers.exact import ExactReranker
    from stcrank_plugins.rerankers.greedy import GreedyReranker

    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ExportError(f"--k {k}: the list length must be an integer >= 1")
    if isinstance(reranker, GreedyReranker):
        return reranker_spec("greedy", k, k, {"reranker": "greedy"}), GreedyGraph(k)
    if isinstance(reranker, ExactReranker):
        return reranker_spec("exact", k, k, {"reranker": "exact"}), ExactGraph(k)
    if isinstance(reranker, BeamSearchReranker):
        if not isinstance(reranker.prefix_scorer, PointwisePrefixScorer):
            raise ExportError(
                f"beam_search with prefix scorer {type(reranker.prefix_scorer).__name__} cannot be exported (it "
                "needs per-candidate context); export it with prefix_scorer: pointwise"
            )
        size = reranker.beam_size
        metadata = {"reranker": "beam_search", "beam_size": size}
        return reranker_spec("beam_search", k, max(k, size), metadata), BeamSearchGraph(k, size)
    raise ExportError(f"re-ranker {type(reranker).__name__} cannot be exported; choose greedy, exact or beam_search")
