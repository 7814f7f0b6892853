"""Point-wise baseline: the ``k`` candidates of highest value, best first."""

from __future__ import annotations

from torch import Tensor

from stcrank.plugins import Reranker
from stcrank.rerank.ordering import stable_topk
from stcrank.rerank.validation import check_batch, check_scores


class GreedyReranker(Reranker):
    """Top-``k`` candidates by value, in decreasing value (ties: lower index first).

    This is what ranking without look-ahead shows, and what beam search with ``beam_size=1`` and the
    point-wise prefix scorer returns. It ignores ``continue_prob``.
    """

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
        value, _ = check_scores(value, continue_prob)
        return stable_topk(value, k)[1]
