"""Prefix scorers: how a beam search values the one-item extensions of each partial list.

Beam search keeps, per request, the ``B`` best partial lists (beams) and at every step extends each of them by
one not-yet-chosen candidate. A :class:`PrefixScorer` decides what "best" means. The point-wise scorer values a
prefix by the sequence value ``V`` of :func:`stcrank.rerank.sequence_value`, which is exactly what the
``exact`` re-ranker maximises; a context-aware scorer can look at the items already in a prefix (their
categories, sellers, ...) and value the next item accordingly, which no per-item formula can express and is the
reason beam search exists next to the exact solver.

Scorers see the candidates in the search's *frame*: a per-request permutation (and, with pruning, a subset)
of the candidates, the same for ``value``, ``continue_prob``, every context tensor and ``BeamState.items``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor


class BeamState(NamedTuple):
    """The beams of a batch of requests after ``t`` steps (``W`` beams per request)."""

    items: Tensor
    """Frame positions of the chosen candidates in display order, ``LongTensor[R, W, t]``."""
    score: Tensor
    """The prefix scorer's score of each beam, ``[R, W]``."""
    value: Tensor
    """Sequence value ``V`` of each beam under the per-item value and continuation, ``[R, W]``."""
    reach: Tensor
    """Probability that the slot after the beam is seen, ``prod continue_prob`` over its items, ``[R, W]``."""
    alive: Tensor
    """Boolean, ``False`` for beam slots that hold no admissible prefix, ``[R, W]``."""


class PrefixScorer(ABC):
    """Scores the one-item extensions of every beam.

    Subclasses implement :meth:`extend`; :meth:`final_score` picks the returned list among the full beams.
    """

    supports_value_pruning: ClassVar[bool] = False
    """Whether the extension score of a beam is non-decreasing in the candidate's value and depends on nothing
    else of the candidate. Only then may the search restrict itself to the top ``B + k - 1`` candidates by
    value (an exact pruning for the point-wise scorer)."""

    required_context: ClassVar[tuple[str, ...]] = ()
    """Names of the per-candidate context tensors (``[R, n]``) the scorer reads."""

    @abstractmethod
    def extend(self, state: BeamState, value: Tensor, continue_prob: Tensor, context: Mapping[str, Tensor]) -> Tensor:
        """Score appending each candidate to each beam.

        Args:
            state: The current beams.
            value: Candidate values in the frame, ``[R, N]``.
            continue_prob: Candidate continuation probabilities in the frame, ``[R, N]``.
            context: The context tensors named in :attr:`required_context`, in the frame, each ``[R, N]``.

        Returns:
            A new tensor ``[R, W, N]``: the score of each beam extended by each candidate (higher is better;
            ``-inf`` forbids the extension). The search masks already chosen candidates and dead beams itself
            and may modify the returned tensor in place.
        """

    def final_score(
        self, state: BeamState, value: Tensor, continue_prob: Tensor, context: Mapping[str, Tensor]
    ) -> Tensor:
        """Score the full beams; the best one is returned.

        The default is the sequence value ``V`` of each list. A scorer whose score models the list's true
        worth (not only a search heuristic) returns ``state.score`` instead.

        Args:
            state: The beams after the last step.
            value: Candidate values in the frame, ``[R, N]``.
            continue_prob: Candidate continuation probabilities in the frame, ``[R, N]``.
            context: The context tensors named in :attr:`required_context`, in the frame.

        Returns:
            ``[R, W]`` scores.
        """
        return state.value


class PointwisePrefixScorer(PrefixScorer):
    """The prefix's sequence value: extending beam ``b`` by ``j`` scores ``V_b + P_b * value_j``.

    With this scorer the search ranks prefixes exactly as the paper's beam search does, and the final beam's
    score is the list's sequence value.
    """

    supports_value_pruning: ClassVar[bool] = True

    def extend(self, state: BeamState, value: Tensor, continue_prob: Tensor, context: Mapping[str, Tensor]) -> Tensor:
        """Score ``V_b + P_b * value_j`` for every beam ``b`` and candidate ``j``.

        Args:
            state: The current beams.
            value: Candidate values in the frame, ``[R, N]``.
            continue_prob: Unused: the next item's continuation only matters for the slots after it.
            context: Unused.

        Returns:
            ``[R, W, N]`` extension scores.
        """
        return torch.addcmul(state.score.unsqueeze(2), state.reach.unsqueeze(2), value.unsqueeze(1))


class CategoryDiversityScorer(PrefixScorer):
    """Sequence value with a penalty for repeating a category already in the prefix.

    An item whose category already appears ``c`` times in the prefix is worth ``value - penalty * c`` in its
    slot: ``V_b + P_b * (value_j - penalty * c_bj)``. The score depends on the prefix's items, so the exact
    solver cannot optimise it, and the value pruning does not apply. It needs the context tensor
    ``"category"`` (integer category per candidate, ``[R, n]``) and returns the list with the best penalised
    value.

    Args:
        penalty: Value lost per earlier item of the same category, ``>= 0``.
    """

    required_context: ClassVar[tuple[str, ...]] = ("category",)

    def __init__(self, penalty: float = 0.1) -> None:
        if not penalty >= 0:
            raise ValueError(f"penalty must be >= 0, got {penalty}")
        self.penalty = float(penalty)

    def _repeats(self, items: Tensor, category: Tensor) -> Tensor:
        """Count, per beam and candidate, the prefix items sharing the candidate's category: ``[R, W, N]``."""
        rows, width, steps = items.shape
        if steps == 0:
            return torch.zeros(rows, width, category.shape[1], dtype=torch.long, device=category.device)
        chosen = category.gather(1, items.reshape(rows, width * steps)).view(rows, width, steps, 1)
        return (chosen == category[:, None, None, :]).sum(2)

    def extend(self, state: BeamState, value: Tensor, continue_prob: Tensor, context: Mapping[str, Tensor]) -> Tensor:
        """Score ``V_b + P_b * (value_j - penalty * repeats_bj)``.

        Args:
            state: The current beams.
            value: Candidate values in the frame, ``[R, N]``.
            continue_prob: Unused.
            context: ``{"category": LongTensor[R, N]}`` in the frame.

        Returns:
            ``[R, W, N]`` extension scores.
        """
        repeats = self._repeats(state.items, context["category"]).to(value.dtype)
        worth = value.unsqueeze(1) - self.penalty * repeats
        return torch.addcmul(state.score.unsqueeze(2), state.reach.unsqueeze(2), worth)

    def final_score(
        self, state: BeamState, value: Tensor, continue_prob: Tensor, context: Mapping[str, Tensor]
    ) -> Tensor:
        """Return the penalised value of each full list (the objective this scorer models).

        Args:
            state: The beams after the last step.
            value: Unused.
            continue_prob: Unused.
            context: Unused.

        Returns:
            ``state.score``, ``[R, W]``.
        """
        return state.score


PREFIX_SCORERS: dict[str, type[PrefixScorer]] = {
    "pointwise": PointwisePrefixScorer,
    "category_diversity": CategoryDiversityScorer,
}
"""Prefix scorers by short name (built with their default arguments)."""


def resolve_prefix_scorer(scorer: PrefixScorer | str) -> PrefixScorer:
    """Return ``scorer`` itself, or build the scorer registered under that short name.

    Args:
        scorer: A :class:`PrefixScorer` instance or a key of :data:`PREFIX_SCORERS`.

    Raises:
        ValueError: If the name is unknown.
        TypeError: If ``scorer`` is neither a name nor a :class:`PrefixScorer`.
    """
    if isinstance(scorer, PrefixScorer):
        return scorer
    if isinstance(scorer, str):
        if scorer not in PREFIX_SCORERS:
            raise ValueError(f"unknown prefix scorer {scorer!r}; the available names are: {sorted(PREFIX_SCORERS)}")
        return PREFIX_SCORERS[scorer]()
    raise TypeError(f"prefix_scorer must be a PrefixScorer or a name, got {type(scorer).__name__}")
