"""Point-wise baseline: the ``k`` candidates of highest value, best first."""

from __future__ import annotations

from torch import Tensor

from stcrank.plugins import Reranker
from stcrank.rerank.ordering import stable_topk
from stcrank.rerank.threads import RERANK_THREADS, intra_op_threads
from stcrank.rerank.validation import check_batch, check_scores


class GreedyReranker(Reranker):
    """Top-``k`` candidates by value, in decreasing value (ties: lower index first).

    This is what ranking without look-ahead shows, and what beam search with ``beam_size=1`` and the
    point-wise prefix scorer returns. It ignores ``continue_prob``.

    Args:
        threads: Torch intra-op threads while re-ranking (see :mod:`stcrank.rerank.threads`); None keeps the
            process's setting.
    """

    def __init__(self, threads: int | None = RERANK_THREADS) -> None:
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
        self.threads = threads

    def rerank(self, value: Tensor, continue_prob: Tensor, k: int) -> Tensor:
        """Return the ``k`` highest-value candidates of each request.

        Args:
            value: Value of each candidate, ``[R, n]``.
            continue_prob: Continuation probability of each candidate, ``[R, n]`` (checked, not used).
            k: List length.

        Returns:
            ``LongTensor[R, k]`` candidate indices in display order.

        Raises:
            TypeError: If ``k`` is not an int or a tensor is not floating point.
            ValueError: On mismatched shapes, ``k`` outside ``[1, n]``, or NaN or invalid values.
        """
        check_batch(value, continue_prob, k)
        with intra_op_threads(self.threads):
            value, _ = check_scores(value, continue_prob)
            return stable_topk(value, k)[1]
