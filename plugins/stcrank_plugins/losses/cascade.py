"""Cascade (full-stage) learning-to-rank losses: FS-LTR (``fs_ltr``) and PositiveRank (``positive_rank``).

The target of every item is its cascade priority, a non-negative integer (RecFlow: click 6, realshow 5,
rerank_pos/rank_pos 4, rerank_neg/rank_neg 3, coarse_neg 2, prerank_neg 1, random 0). Items of higher priority
should score higher: each ordered pair ``(i, j)`` of real items of a row whose levels are paired contributes the
RankNet/BPR term ``l_ij = softplus(-(s_i - s_j))`` (RecFlow paper, Eq. 1).

Compared with the RecFlow reference code, padded and missing items (mask ``False``) never enter a pair (the
reference pairs them as priority-0 negatives), equal priorities never pair, and a batch without any pair gives
``0`` instead of NaN.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from stcrank.plugins import Loss
from stcrank_plugins.losses.pairwise import PairBatch, gather_pairs, weighted_pair_mean
from stcrank_plugins.losses.pointwise import check_loss_inputs, zero_loss

__all__ = ["FSLTRLoss", "PositiveRankLoss", "priority_levels"]


def priority_levels(name: str, target: Tensor, mask: Tensor) -> Tensor:
    """Return priorities as int64 (0 under padding) after checking they are non-negative integers.

    Args:
        name: The loss's name, used in the messages.
        target: Priorities, ``[B, L]``.
        mask: Bool ``[B, L]``, ``True`` on real items.

    Returns:
        Int64 ``[B, L]`` priorities.

    Raises:
        ValueError: When a real item's priority is negative or not an integer.
    """
    real = target[mask]
    if target.is_floating_point() and bool((real != torch.round(real)).any()):
        raise ValueError(f"{name}: target must hold integer priorities on real items, found non-integer values")
    if bool((real < 0).any()):
        raise ValueError(f"{name}: priorities must be non-negative, found {int(real.min())}")
    return torch.where(mask, target, torch.zeros_like(target)).long()


def _check_levels(name: str, what: str, levels: list[int]) -> None:
    for level in levels:
        if isinstance(level, bool) or not isinstance(level, int) or level < 0:
            raise ValueError(f"{name}: {what} must be non-negative integer priorities, got {level!r}")


class FSLTRLoss(Loss):
    r"""Full-stage learning to rank: a RankNet loss over every ordered pair of cascade priorities.

    With ``P(i, j)`` the pairing rule (by default ``p_i > p_j``; with ``negatives_of``, ``p_j`` is listed in
    ``negatives_of[p_i]``), ``a(p)`` the weight of level ``p`` (``priority_weights``, default 1), ``z_i`` the
    optional sample weight of item ``i`` and ``l_ij = softplus(-(s_i - s_j))``:

    * ``normalize="pairs"`` (RecFlow's retrieval and coarse form)::

        L = sum_{b, i, j} P(i, j) z_i a(p_i) l_ij / sum_{b, i, j} P(i, j) z_i

      The level weight is indexed by the higher item and scales the numerator only: the denominator counts
      every pair, as in the reference code.

    * ``normalize="group"`` (RecFlow's rank-stage form, one group per level of the higher item)::

        L = sum_g a(g) * sum_{p_i = g} P(i, j) z_i l_ij / sum_{p_i = g} P(i, j) z_i

      Groups without a pair in the batch contribute nothing.

    The rank-stage group loss of RecFlow (click vs the 46 realshow/rerank/rank items, realshow vs the 40
    rerank/rank items, rerank_pos vs the 20 negatives, rank_pos vs the 20 negatives, weighted 1, 0.5, 0.05,
    0.05) is this class with one code per group, e.g. rank_neg 0, rerank_neg 1, rank_pos 2, rerank_pos 3,
    realshow 4, click 5, ``negatives_of={5: [0, 1, 2, 3, 4], 4: [0, 1, 2, 3], 3: [0, 1], 2: [0, 1]}``,
    ``priority_weights={5: 1.0, 4: 0.5, 3: 0.05, 2: 0.05}`` and ``normalize="group"``. With all slots filled
    its denominators are the reference's ``46 #click``, ``40 #realshow`` and ``20 #rerank_pos``/``#rank_pos``.

    Args:
        priority_weights: Weight of pairs by the level of their higher item; unlisted levels weigh 1.
        negatives_of: Which levels each level is paired against (a level is never paired with itself);
            levels that are not keys have no pairs. ``None`` pairs every level against all lower levels.
        normalize: ``"pairs"`` or ``"group"``, see above.
    """

    compares_items = True

    def __init__(
        self,
        priority_weights: dict[int, float] | None = None,
        negatives_of: dict[int, list[int]] | None = None,
        normalize: Literal["pairs", "group"] = "pairs",
    ) -> None:
        super().__init__()
        if normalize not in ("pairs", "group"):
            raise ValueError(f"FSLTRLoss: normalize must be 'pairs' or 'group', got {normalize!r}")
        self.normalize = normalize
        self.priority_weights = dict(priority_weights or {})
        self.negatives_of = None if negatives_of is None else {a: list(b) for a, b in negatives_of.items()}
        _check_levels("FSLTRLoss", "priority_weights keys", list(self.priority_weights))
        for level, value in self.priority_weights.items():
            if not torch.isfinite(torch.tensor(float(value))):
                raise ValueError(f"FSLTRLoss: the weight of priority {level} must be finite, got {value!r}")
        levels = list(self.priority_weights)
        if self.negatives_of is not None:
            for level, lower in self.negatives_of.items():
                _check_levels("FSLTRLoss", "negatives_of keys and values", [level, *lower])
                if level in lower:
                    raise ValueError(f"FSLTRLoss: negatives_of[{level}] lists {level} itself; equal levels never pair")
                levels += [level, *lower]
        # Dense lookup tables over levels 0..top; levels above top weigh 1 and (with negatives_of) never pair.
        self.top = max(levels, default=0)
        table = torch.ones(self.top + 1)
        for level, value in self.priority_weights.items():
            table[level] = float(value)
        self.register_buffer("level_weight", table, persistent=False)
        pairs = torch.zeros(self.top + 1, self.top + 1, dtype=torch.bool)
        for level, lower in (self.negatives_of or {}).items():
            pairs[level, lower] = True
        self.register_buffer("pair_table", pairs, persistent=False)

    def _weight_of(self, levels: Tensor) -> Tensor:
        # .to(): the tables follow the data even when the loss module itself was not moved to its device.
        table = self.level_weight.to(levels.device)
        return torch.where(levels <= self.top, table[levels.clamp(max=self.top)], torch.ones_like(table[0]))

    def pairs(self, scores: Tensor, levels: Tensor, mask: Tensor, weight: Tensor | None = None) -> PairBatch:
        """Form the pairs of a batch under this loss's pairing rule.

        Args:
            scores: Logits, ``[B, L]``.
            levels: Int64 priorities, ``[B, L]``.
            mask: Bool ``[B, L]``.
            weight: Optional per-item sample weights.

        Returns:
            The pairs, see :func:`~stcrank_plugins.losses.pairwise.gather_pairs`.
        """
        if self.negatives_of is None:
            # An item can be higher only if some real item of its row has a lower level.
            row_min = levels.masked_fill(~mask, torch.iinfo(torch.long).max).amin(dim=1, keepdim=True)
            return gather_pairs(scores, levels, mask, mask & (levels > row_min), lambda ti, tj: ti > tj, weight)
        top = self.top
        table = self.pair_table.to(levels.device)

        def rule(ti: Tensor, tj: Tensor) -> Tensor:
            return (ti <= top) & (tj <= top) & table[ti.clamp(max=top), tj.clamp(max=top)]

        has_lower = table.any(dim=1)[levels.clamp(max=top)] & (levels <= top)
        return gather_pairs(scores, levels, mask, mask & has_lower, rule, weight)

    def forward(self, scores: Tensor, target: Tensor, mask: Tensor, weight: Tensor | None = None) -> Tensor:
        """Compute the loss.

        Args:
            scores: Logits, ``[B, L]``.
            target: Cascade priority of each item (non-negative integers), ``[B, L]``.
            mask: Bool ``[B, L]``, ``True`` on real items.
            weight: Optional per-item sample weights, ``[B, L]`` (the higher item's weight weighs its pairs).

        Returns:
            A scalar tensor, ``0`` with a gradient when the batch has no pair.

        Raises:
            ValueError: On mismatched shapes, or NaN, negative or non-integer priorities on real items.
        """
        check_loss_inputs("FSLTRLoss", scores, target, mask, weight)
        levels = priority_levels("FSLTRLoss", target, mask)
        pairs = self.pairs(scores, levels, mask, weight)
        level_weight = self._weight_of(pairs.upper_target).to(scores.dtype)
        if self.normalize == "pairs":
            return weighted_pair_mean(pairs, scores, level_weight)

        pair_weight = pairs.valid.to(scores.dtype) * pairs.upper_weight.unsqueeze(2)
        if not bool(pair_weight.sum() > 0):
            return zero_loss(scores)
        groups = pairs.upper_target.reshape(-1)
        size = int(groups.max()) + 1
        numerator = scores.new_zeros(size).index_add_(0, groups, (pair_weight * pairs.loss).sum(2).reshape(-1))
        denominator = scores.new_zeros(size).index_add_(0, groups, pair_weight.sum(2).reshape(-1))
        group_weight = self._weight_of(torch.arange(size, device=scores.device)).to(scores.dtype)
        # Divide by 1 where a group is empty (its numerator is 0) so no 0/0 reaches the gradient.
        safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
        return (group_weight * numerator / safe).sum()


class PositiveRankLoss(Loss):
    """PositiveRank: positives must outrank every other real item of their row, nothing else is ranked.

    ``L = sum_{b, i: p_i = P} sum_{j: p_j != P} z_i softplus(-(s_i - s_j)) / sum z_i [pair]`` over real items,
    where ``P`` is the positive level (RecFlow's click priority 6). It is the RecFlow paper's contrast to FS-LTR:
    the user preference alone, without the order among the later stages. A batch without pairs gives ``0``.

    Args:
        positive_level: Priority of the positive items.
    """

    compares_items = True

    def __init__(self, positive_level: int = 6) -> None:
        super().__init__()
        _check_levels("PositiveRankLoss", "positive_level", [positive_level])
        self.positive_level = positive_level

    def forward(self, scores: Tensor, target: Tensor, mask: Tensor, weight: Tensor | None = None) -> Tensor:
        """Compute the loss.

        Args:
            scores: Logits, ``[B, L]``.
            target: Cascade priority of each item (non-negative integers), ``[B, L]``.
            mask: Bool ``[B, L]``, ``True`` on real items.
            weight: Optional per-item sample weights, ``[B, L]`` (the positive's weight weighs its pairs).

        Returns:
            A scalar tensor.

        Raises:
            ValueError: On mismatched shapes, or NaN, negative or non-integer priorities on real items.
        """
        check_loss_inputs("PositiveRankLoss", scores, target, mask, weight)
        levels = priority_levels("PositiveRankLoss", target, mask)
        top = self.positive_level
        pairs = gather_pairs(scores, levels, mask, levels == top, lambda ti, tj: (ti == top) & (tj != top), weight)
        return weighted_pair_mean(pairs, scores)
