"""Group AUC (GAUC): the impression-weighted mean of per-user or per-request ROC AUCs.

``GAUC = sum_g n_g * AUC_g / sum_g n_g`` over the groups ``g`` (users or requests) that hold both classes, where
``n_g`` is the group's number of impressions (rows) and ``AUC_g`` its ROC AUC with tied scores counted as half
(the Mann-Whitney statistic with average ranks, as scikit-learn's ``roc_auc_score``). A group whose labels are
all of one class has no AUC: it is excluded, and the number of excluded groups is reported beside the value.
When no group holds both classes the GAUC is NaN, never ``0``.

The computation is vectorised: one stable sort by score, one stable sort by group, then segment sums; no Python
loop over groups.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from stcrank.metrics.functional import _binary_labels

__all__ = ["GroupAUC", "GroupAUCResult", "group_auc"]

MAX_EXACT_GROUP_ID = 2**53
"""Group ids are kept as float64 states (exact below this bound) so that DDP's gather of an empty shard, which
torchmetrics fills with a float tensor, cannot round them."""


class GroupAUCResult(NamedTuple):
    """GAUC and the groups it was computed over."""

    gauc: Tensor
    """Impression-weighted mean of the per-group AUCs, float64 scalar (NaN when no group has both classes)."""
    num_groups: Tensor
    """Groups that hold both classes (the ones averaged), int64 scalar."""
    num_excluded: Tensor
    """Groups whose labels are all of one class (left out of the average), int64 scalar."""


def _check_inputs(name: str, preds: Tensor, target: Tensor, groups: Tensor) -> Tensor:
    if not (preds.shape == target.shape == groups.shape):
        raise ValueError(
            f"{name}: preds, target and groups must have the same shape; got {tuple(preds.shape)}, "
            f"{tuple(target.shape)}, {tuple(groups.shape)}"
        )
    if bool(torch.isnan(preds).any()):
        raise ValueError(f"{name}: preds contains NaN scores; expected finite probabilities or logits")
    if groups.is_floating_point() or groups.dtype == torch.bool:
        raise ValueError(f"{name}: groups must be integer ids (user or request ids), got dtype {groups.dtype}")
    if groups.numel() and bool((groups.abs() >= MAX_EXACT_GROUP_ID).any()):
        raise ValueError(f"{name}: group ids must be below 2**53 in absolute value")
    try:
        return _binary_labels(target, None)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from error


def group_auc(preds: Tensor, target: Tensor, groups: Tensor) -> GroupAUCResult:
    """Impression-weighted GAUC of flat scores grouped by ``groups``.

    Args:
        preds: Scores (probabilities or logits), any shape; ties count as half a correctly ordered pair.
        target: 0/1 labels of the same shape.
        groups: Integer group id (user id or request id) of every row, same shape.

    Returns:
        The GAUC, the number of groups averaged and the number of single-class groups excluded.

    Raises:
        ValueError: When the shapes differ, ``preds`` holds NaN, ``groups`` is not integer or ``target`` holds a
            value other than 0 and 1.
    """
    labels = _check_inputs("group_auc", preds, target, groups)
    return _group_auc(preds.reshape(-1).double(), labels.reshape(-1).double(), groups.reshape(-1).double())


def _group_auc(scores: Tensor, labels: Tensor, groups: Tensor) -> GroupAUCResult:
    """:func:`group_auc` of validated flat float64 inputs."""
    zero = torch.zeros((), dtype=torch.long, device=scores.device)
    if scores.numel() == 0:
        return GroupAUCResult(torch.tensor(float("nan"), dtype=torch.float64), zero, zero.clone())
    # Sort by group, then by score within a group (two stable sorts).
    order = torch.argsort(scores, stable=True)
    order = order[torch.argsort(groups[order], stable=True)]
    group, score, label = groups[order], scores[order], labels[order]
    _, group_index, group_size = torch.unique_consecutive(group, return_inverse=True, return_counts=True)
    start = torch.cumsum(group_size, 0) - group_size
    rank = torch.arange(1, len(score) + 1, dtype=torch.float64, device=score.device) - start[group_index].double()
    # Tied scores within a group share their average rank.
    new_block = torch.ones_like(score, dtype=torch.bool)
    new_block[1:] = (group[1:] != group[:-1]) | (score[1:] != score[:-1])
    block = torch.cumsum(new_block.long(), 0) - 1
    num_blocks = int(block[-1]) + 1
    block_rank = torch.zeros(num_blocks, dtype=torch.float64, device=score.device).index_add_(0, block, rank)
    block_size = torch.bincount(block, minlength=num_blocks).double()
    average_rank = (block_rank / block_size)[block]
    num_groups = len(group_size)
    positives = torch.zeros(num_groups, dtype=torch.float64, device=score.device).index_add_(0, group_index, label)
    positive_rank = torch.zeros_like(positives).index_add_(0, group_index, average_rank * label)
    negatives = group_size.double() - positives
    both = (positives > 0) & (negatives > 0)
    pairs = (positives * negatives).clamp(min=1.0)
    auc = (positive_rank - positives * (positives + 1) / 2) / pairs
    weight = torch.where(both, group_size.double(), 0.0)
    total = weight.sum()
    gauc = (weight * torch.where(both, auc, 0.0)).sum() / total if total > 0 else torch.tensor(float("nan"))
    counted = both.sum()
    return GroupAUCResult(gauc.double(), counted, num_groups - counted)


class GroupAUC(Metric):
    """GAUC over users or requests (:func:`group_auc`) as a torchmetrics ``Metric``.

    A group's rows may arrive in different batches or on different processes, so the states are the rows
    themselves (``cat`` states, like torchmetrics' exact ``BinaryAUROC``): under DDP the synchronised result is
    exactly the GAUC of the union of all processes' rows, and ``merge_state`` of two shards equals one metric
    updated with both.

    ``compute()`` returns ``{"gauc": ..., "groups": ..., "excluded": ...}``: the value, the number of groups
    averaged and the number of single-class groups left out.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("preds", "target", "groups"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor, groups: Tensor) -> None:
        """Add rows.

        Args:
            preds: Scores, any shape.
            target: 0/1 labels, same shape.
            groups: Integer user or request id of every row, same shape.

        Raises:
            ValueError: As :func:`group_auc`.
        """
        labels = _check_inputs("GroupAUC", preds, target, groups)
        # float64 for all three: exact for ids below 2**53 and unchanged by DDP's padding of empty shards.
        self.preds.append(preds.detach().reshape(-1).double())
        self.target.append(labels.reshape(-1).double())
        self.groups.append(groups.reshape(-1).double())

    def compute(self) -> dict[str, Tensor]:
        """Return the GAUC (``gauc``), the groups averaged (``groups``) and the groups excluded (``excluded``)."""
        if isinstance(self.preds, list) and not self.preds:
            result = _group_auc(*(torch.zeros(0, dtype=torch.float64),) * 3)
        else:
            result = _group_auc(*(dim_zero_cat(state).double() for state in (self.preds, self.target, self.groups)))
        return {"gauc": result.gauc, "groups": result.num_groups, "excluded": result.num_excluded}
