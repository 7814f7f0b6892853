"""Abstract bases of the five plugin kinds.

Every plugin, built-in or third-party, subclasses one of these and is declared under the matching entry-point
group (see :mod:`stcrank.registry`). They are real :class:`abc.ABC` classes, not protocols, so that
jsonargparse can resolve a plugin's short class name in a config.

All plugins work on whole batches of tensors: no per-sample Python.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn


class Loss(nn.Module, ABC):
    """A training objective over a batch of scored lists (group ``stcrank.losses``).

    One contract covers point-wise, pair-wise and list-wise losses: every example is a list of ``L`` scored
    items (``L == 1`` for a point-wise batch of exposures).

    Attributes:
        compares_items: Whether the loss compares the items of a row with each other (pair-wise, list-wise).
            On rows of a single item such a loss has no pair and no gradient, so tasks refuse to train it on
            point-wise data (the data module's training layout says which it gives).
    """

    compares_items: ClassVar[bool] = False

    @abstractmethod
    def forward(self, scores: Tensor, target: Tensor, mask: Tensor, weight: Tensor | None = None) -> Tensor:
        """Compute the loss.

        Args:
            scores: Logits, shape ``[B, L]``.
            target: What the item should score: a 0/1 label for point-wise losses, a priority (higher is
                better) for cascade losses, shape ``[B, L]``.
            mask: Boolean, ``True`` on real items, ``False`` on padding, shape ``[B, L]``.
            weight: Optional per-item sample weight, shape ``[B, L]``.

        Returns:
            A scalar tensor.
        """


class LabelOutput(NamedTuple):
    """Training target of one task: the label, where it is defined, and how much each sample weighs."""

    target: Tensor
    """Float label per sample, shape ``[N]``."""
    mask: Tensor
    """Boolean, ``True`` where the sample takes part in this task's loss and metrics."""
    weight: Tensor
    """Float sample weight, shape ``[N]`` (zero drops a sample from the loss but keeps it in the data)."""


class LabelDefinition(ABC):
    """Turns logged feedback columns into a task's label, mask and weight (group ``stcrank.labels``)."""

    task: str = "label"
    """Name of the task this label feeds (``"cvr"``, ``"vtr"``, ``"sdr"``, ``"effective_view"``...)."""

    @property
    @abstractmethod
    def required_columns(self) -> tuple[str, ...]:
        """Names of the logged columns this definition reads."""

    @abstractmethod
    def compute(self, columns: Mapping[str, Tensor]) -> LabelOutput:
        """Compute the label of every sample at once.

        Args:
            columns: The logged columns by name, each a tensor of shape ``[N]``.

        Returns:
            The label, mask and weight of the ``N`` samples.
        """

    def __call__(self, columns: Mapping[str, Tensor]) -> LabelOutput:
        """Check that the required columns are present, then :meth:`compute`."""
        missing = [name for name in self.required_columns if name not in columns]
        if missing:
            raise KeyError(
                f"label {type(self).__name__} needs columns {list(self.required_columns)}; missing {missing}"
            )
        return self.compute(columns)


class NegativeSampler(ABC):
    """Chooses negative items for each training example (group ``stcrank.negative_samplers``).

    Samplers draw item ids from pools the data module hands them (the day's exposed corpus, the stage lists of
    each example's request) and return them with the cascade priority of each drawn item, so that the same
    draw feeds a sampled-softmax/BPR loss (priorities ignored) or a cascade loss (priorities used).

    Attributes:
        pool_names: The pools this sampler reads, which the data module builds for it.
    """

    pool_names: tuple[str, ...] = ("corpus",)

    @abstractmethod
    def sample(self, pools: Mapping[str, Tensor], targets: Tensor, generator: torch.Generator) -> SampledNegatives:
        """Draw negatives for a batch.

        Args:
            pools: Candidate pools by name. ``"corpus"`` is a 1-D tensor of item ids; stage pools
                (``"prerank_neg"``, ``"rank_pos"``...) are ``[B, S]`` item ids with 0 as padding.
            targets: The positive item of each example, shape ``[B]``; never returned as a negative.
            generator: The random generator to draw from (determinism under a seed).

        Returns:
            The drawn items and their priorities.
        """


class SampledNegatives(NamedTuple):
    """Negatives drawn for a batch."""

    items: Tensor
    """Item ids, shape ``[B, N]``."""
    priority: Tensor
    """Cascade priority of each item, shape ``[B, N]`` (0 for random negatives)."""
    mask: Tensor
    """Boolean, ``False`` where no item could be drawn (an empty stage), shape ``[B, N]``."""


class Ensemble(ABC):
    """Combines per-task predictions into one ranking value (group ``stcrank.ensembles``)."""

    @property
    @abstractmethod
    def tasks(self) -> tuple[str, ...]:
        """Names of the predictions this formula reads."""

    @abstractmethod
    def combine(self, predictions: Mapping[str, Tensor]) -> Tensor:
        """Combine predicted probabilities.

        Args:
            predictions: Probability per task name, each of the same shape.

        Returns:
            The ranking value, same shape as each prediction.
        """

    def __call__(self, predictions: Mapping[str, Tensor]) -> Tensor:
        """Check that every needed prediction is present, then :meth:`combine`."""
        missing = [name for name in self.tasks if name not in predictions]
        if missing:
            raise KeyError(f"ensemble {type(self).__name__} needs predictions {list(self.tasks)}; missing {missing}")
        return self.combine(predictions)


class Reranker(ABC):
    """Chooses and orders ``k`` of ``n`` candidates per request (group ``stcrank.rerankers``).

    The objective is the expected value of a list shown in an immersive feed where the user continues past
    item ``i`` with probability ``continue_prob[i]``: ``V = sum_i v_i * prod_{j<i} continue_prob_j`` (see
    :func:`stcrank.rerank.sequence_value`).
    """

    @abstractmethod
    def rerank(self, value: Tensor, continue_prob: Tensor, k: int) -> Tensor:
        """Re-rank a batch of requests.

        Args:
            value: Value of showing each candidate, shape ``[R, n]``.
            continue_prob: Probability that the user continues after each candidate, in ``[0, 1]``, ``[R, n]``.
            k: Length of the list to return, ``1 <= k <= n``.

        Returns:
            The chosen candidate indices in display order, ``LongTensor[R, k]``.
        """

    def __call__(self, value: Tensor, continue_prob: Tensor, k: int) -> Tensor:
        """Validate the shapes and ``k``, then :meth:`rerank` on detached inputs without autograd.

        A re-ranker returns indices, which carry no gradient: inputs that require grad (scores straight from a
        model) are accepted, and no graph is built.
        """
        if value.shape != continue_prob.shape or value.dim() != 2:
            raise ValueError(
                f"value and continue_prob must both be [R, n]; got {tuple(value.shape)} and "
                f"{tuple(continue_prob.shape)}"
            )
        if not 1 <= k <= value.shape[1]:
            raise ValueError(f"k must be in [1, n={value.shape[1]}], got {k}")
        with torch.no_grad():
            return self.rerank(value.detach(), continue_prob.detach(), k)
