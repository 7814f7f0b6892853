"""E-shop F-stage labels (STCRank 3.3): purchase (cvr), watch-time threshold (vtr) and swipe-down (sdr).

Each switch of the paper's Table 4/5 ablations is an argument, so every row of those tables is a config.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from stcrank.plugins import LabelDefinition, LabelOutput


def _flag(columns: Mapping[str, Tensor], name: str) -> Tensor:
    """A 0/1 column as bool, with a clear error on the wrong shape or on values other than 0/1."""
    values = columns[name]
    if values.dim() != 1:
        raise ValueError(f"column {name!r} must be 1-D [N], got shape {tuple(values.shape)}")
    if values.dtype == torch.bool:
        return values
    if values.is_floating_point() and bool(torch.isnan(values).any()):
        raise ValueError(f"column {name!r} has {int(torch.isnan(values).sum())} NaN value(s); expected 0/1 flags")
    binary = (values == 0) | (values == 1)
    if not bool(binary.all()):
        bad = torch.unique(values[~binary])[:5].tolist()
        raise ValueError(f"column {name!r} has values {bad} other than 0 and 1; expected 0/1 flags")
    return values != 0


class PurchaseLabel(LabelDefinition):
    """``cvr``: y = the user bought the viewed item, on every page view, weight 1 (post-exposure conversion)."""

    task = "cvr"

    @property
    def required_columns(self) -> tuple[str, ...]:
        """Only ``purchase``."""
        return ("purchase",)

    def compute(self, columns: Mapping[str, Tensor]) -> LabelOutput:
        """Return the purchase flag as the target of every sample.

        Args:
            columns: Must hold ``purchase`` (``[N]``, bool or 0/1).
        """
        target = _flag(columns, "purchase").to(torch.float32)
        return LabelOutput(target, torch.ones_like(target, dtype=torch.bool), torch.ones_like(target))


class WatchThresholdLabel(LabelDefinition):
    """``vtr``: y = 1(watch time > ``threshold_s``) on every page view.

    The paper's baseline uses 25 s, MOC 5 s and its ablation 2 s (Table 5); any positive value works.

    Args:
        threshold_s: The threshold ``tau`` in seconds.

    Raises:
        ValueError: If ``threshold_s`` is not a finite positive number.
    """

    task = "vtr"

    def __init__(self, threshold_s: float = 25.0) -> None:
        if not math.isfinite(threshold_s) or threshold_s <= 0:
            raise ValueError(f"threshold_s must be a finite number > 0, got {threshold_s}")
        self.threshold_s = float(threshold_s)

    @property
    def required_columns(self) -> tuple[str, ...]:
        """Only ``watch_time``."""
        return ("watch_time",)

    def compute(self, columns: Mapping[str, Tensor]) -> LabelOutput:
        """Return ``1(watch_time > threshold_s)`` for every sample.

        Args:
            columns: Must hold ``watch_time`` (``[N]``, seconds, not NaN, not negative).
        """
        watch = columns["watch_time"]
        if watch.dim() != 1:
            raise ValueError(f"column 'watch_time' must be 1-D [N], got shape {tuple(watch.shape)}")
        watch = watch.to(torch.float64)
        if bool(torch.isnan(watch).any()):
            raise ValueError(f"column 'watch_time' has {int(torch.isnan(watch).sum())} NaN value(s); expected seconds")
        if watch.numel() and float(watch.min()) < 0:
            raise ValueError("column 'watch_time' has negative values; expected seconds >= 0")
        target = (watch > self.threshold_s).to(torch.float32)
        return LabelOutput(target, torch.ones_like(target, dtype=torch.bool), torch.ones_like(target))


class SwipeDownLabel(LabelDefinition):
    """``sdr``: y = the user swiped to the next item (eq. 5), with MOC's two independent switches (eq. 6).

    Args:
        first_position_only: Keep only the page views at the first position of their request's list (mask
            ``page_position == 1``); the other views are left out of the task.
        drop_exit_after_purchase: Conflict filtering: weight 0 where the user did not swipe down and purchased
            (an exit after a purchase is no sign of disinterest).
    """

    task = "sdr"

    def __init__(self, first_position_only: bool = False, drop_exit_after_purchase: bool = False) -> None:
        self.first_position_only = first_position_only
        self.drop_exit_after_purchase = drop_exit_after_purchase

    @property
    def required_columns(self) -> tuple[str, ...]:
        """``swipe_down``, plus ``page_position`` and ``purchase`` when their switch is on."""
        names = ["swipe_down"]
        if self.first_position_only:
            names.append("page_position")
        if self.drop_exit_after_purchase:
            names.append("purchase")
        return tuple(names)

    def compute(self, columns: Mapping[str, Tensor]) -> LabelOutput:
        """Return the swipe-down flag, masked and weighted by the switches.

        Args:
            columns: ``swipe_down`` (``[N]`` flags); ``page_position`` (1-based) and ``purchase`` when needed.
        """
        swiped = _flag(columns, "swipe_down")
        target = swiped.to(torch.float32)
        mask = torch.ones_like(swiped)
        if self.first_position_only:
            position = columns["page_position"]
            if position.shape != swiped.shape:
                raise ValueError(
                    f"column 'page_position' must have shape {tuple(swiped.shape)}, got {tuple(position.shape)}"
                )
            mask = position == 1
        weight = torch.ones_like(target)
        if self.drop_exit_after_purchase:
            weight = torch.where(~swiped & _flag(columns, "purchase"), 0.0, 1.0)
        return LabelOutput(target, mask, weight)
