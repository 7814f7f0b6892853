"""Beam search over ordered lists, batched over requests and beams (the paper's sequence generator)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from stcrank.plugins import Reranker
from stcrank.rerank.ordering import stable_topk
from stcrank.rerank.prefix_scorers import BeamState, PrefixScorer, resolve_prefix_scorer
from stcrank.rerank.threads import RERANK_THREADS, intra_op_threads
from stcrank.rerank.validation import check_batch, check_context, check_scores


class BeamSearchReranker(Reranker):
    """Build each list one slot at a time, keeping the ``beam_size`` best prefixes per request.

    At step ``t`` every beam is extended by every candidate it does not hold yet; the extensions are scored by
    the prefix scorer and the best ``beam_size`` of all ``beams x candidates`` extensions of a request become
    the next beams. After ``k`` steps the full beam with the best final score (the sequence value for the
    point-wise scorer) is returned. All requests and beams advance together as tensors; only the ``k`` steps
    loop in Python.

    Ties are broken deterministically: between equal extension scores, the better-ranked beam first, then the
    candidate of higher value, then the lower candidate index. Hence ``beam_size=1`` reproduces ``greedy``.

    With the point-wise scorer (extension score ``V_b + P_b * v_j``, non-decreasing in ``v_j``) each beam's
    extensions are ranked by candidate value alone, so at step ``t`` (``t`` items chosen) no beam can use a
    candidate outside the top ``beam_size + t`` by value. ``prune=True`` restricts the search to them, which
    changes nothing in the result (800 -> 34 candidates for ``beam_size=25, k=10``). Other scorers are never
    pruned.

    Args:
        beam_size: Number of prefixes kept per request, ``>= 1``.
        prefix_scorer: A :class:`~stcrank.rerank.PrefixScorer` or its short name (``"pointwise"``,
            ``"category_diversity"``).
        prune: Restrict the point-wise search to the candidates it can reach (exact; see above).
        threads: Torch intra-op threads while re-ranking (see :mod:`stcrank.rerank.threads`); None keeps the
            process's setting.
    """

    def __init__(
        self,
        beam_size: int = 25,
        prefix_scorer: PrefixScorer | str = "pointwise",
        prune: bool = True,
        threads: int | None = RERANK_THREADS,
    ) -> None:
        if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
            raise ValueError(f"beam_size must be an int >= 1, got {beam_size!r}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
        self.threads = threads
        self.beam_size = beam_size
        self.prefix_scorer = resolve_prefix_scorer(prefix_scorer)
        self.prune = prune

    def rerank(self, value: Tensor, continue_prob: Tensor, k: int) -> Tensor:
        """Re-rank a batch of requests (no context: scorers that need one must be run through :meth:`search`).

        Args:
            value: Value of each candidate, ``[R, n]``.
            continue_prob: Continuation probability of each candidate, ``[R, n]``.
            k: List length.

        Returns:
            ``LongTensor[R, k]`` candidate indices in display order.
        """
        return self.search(value, continue_prob, k)

    def search(
        self, value: Tensor, continue_prob: Tensor, k: int, context: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """Run the beam search, passing per-candidate context to the prefix scorer.

        Args:
            value: Value of each candidate, ``[R, n]``.
            continue_prob: Continuation probability of each candidate, ``[R, n]``, in ``[0, 1]``.
            k: List length, ``1 <= k <= n``.
            context: Per-candidate tensors (``[R, n]``) named by the scorer's ``required_context``.

        Returns:
            ``LongTensor[R, k]`` candidate indices in display order.

        Raises:
            ValueError: On invalid shapes or values, missing context, or a scorer that forbids every list.
        """
        check_batch(value, continue_prob, k)
        with intra_op_threads(self.threads):
            return self._search(value, continue_prob, k, context)

    def _search(self, value: Tensor, continue_prob: Tensor, k: int, context: Mapping[str, Tensor] | None) -> Tensor:
        value, continue_prob = check_scores(value, continue_prob)
        context = check_context(self.prefix_scorer.required_context, context, value.shape)
        rows, n = value.shape
        if rows == 0:
            return torch.empty(0, k, dtype=torch.long, device=value.device)
        pruned = self.prune and self.prefix_scorer.supports_value_pruning
        width = min(n, self.beam_size + k - 1) if pruned else n
        # The frame: candidates by decreasing value (ties: lower index), cut to what the search can reach.
        _, frame = stable_topk(value, width)
        frame_value = value.gather(1, frame)
        frame_continue = continue_prob.gather(1, frame)
        frame_context = {name: tensor.gather(1, frame) for name, tensor in context.items()}
        state = BeamState(
            items=torch.empty(rows, 1, 0, dtype=torch.long, device=value.device),
            score=value.new_zeros(rows, 1),
            value=value.new_zeros(rows, 1),
            reach=value.new_ones(rows, 1),
            alive=torch.ones(rows, 1, dtype=torch.bool, device=value.device),
        )
        for step in range(k):
            limit = min(width, self.beam_size + step) if pruned else width
            state = self._step(
                state,
                frame_value[:, :limit],
                frame_continue[:, :limit],
                {name: tensor[:, :limit] for name, tensor in frame_context.items()},
            )
        final = self.prefix_scorer.final_score(state, frame_value, frame_continue, frame_context)
        final = final.masked_fill(~state.alive, float("-inf"))
        stuck = ~state.alive.any(1)
        if bool(stuck.any()):
            raise ValueError(f"the prefix scorer forbade every list of {k} items for request {int(stuck.nonzero()[0])}")
        best = final.argmax(1)
        chosen = state.items[torch.arange(rows, device=value.device), best]
        return frame.gather(1, chosen)

    def _step(self, state: BeamState, value: Tensor, continue_prob: Tensor, context: Mapping[str, Tensor]) -> BeamState:
        """Extend every beam by one candidate and keep the best ``beam_size`` extensions per request."""
        scores = self.prefix_scorer.extend(state, value, continue_prob, context)
        rows, width, size = scores.shape
        steps = state.items.shape[2]
        if steps:
            scores.scatter_(2, state.items, float("-inf"))
        if not bool(state.alive.all()):
            scores.masked_fill_(~state.alive.unsqueeze(2), float("-inf"))
        keep = min(self.beam_size, width * size)
        # Flat index = beam * size + frame position, so index order is (beam rank, value rank).
        top, flat = stable_topk(scores.reshape(rows, width * size), keep)
        parent = torch.div(flat, size, rounding_mode="floor")
        item = flat - parent * size
        items = torch.cat([state.items.gather(1, parent.unsqueeze(2).expand(rows, keep, steps)), item.unsqueeze(2)], 2)
        reach = state.reach.gather(1, parent)
        return BeamState(
            items=items,
            score=top,
            value=torch.addcmul(state.value.gather(1, parent), reach, value.gather(1, item)),
            reach=reach * continue_prob.gather(1, item),
            alive=top > float("-inf"),
        )
