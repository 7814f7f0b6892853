"""RecFlow's label: the effective view (watched at least 30 % of the video)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from stcrank.plugins import LabelDefinition, LabelOutput


class EffectiveViewLabel(LabelDefinition):
    """The ``effective_view`` column as a 0/1 target for every sample, with unit weights.

    This is the label of every RecFlow experiment. Unexposed stage rows carry ``effective_view = 0`` in the
    release, so stage candidates are negatives unless they were exposed and watched.

    Raises:
        ValueError: From :meth:`compute`, if ``effective_view`` holds NaN or a value other than 0 and 1.
    """

    task = "effective_view"

    @property
    def required_columns(self) -> tuple[str, ...]:
        """Only ``effective_view``."""
        return ("effective_view",)

    def compute(self, columns: Mapping[str, Tensor]) -> LabelOutput:
        """Return ``effective_view`` as a float target, every sample kept with weight 1.

        Args:
            columns: Must hold ``effective_view``, shape ``[N]``, of 0/1 values (any numeric dtype).
        """
        values = columns["effective_view"]
        if values.dim() != 1:
            raise ValueError(f"column 'effective_view' must be 1-D [N], got shape {tuple(values.shape)}")
        target = values.to(torch.float32)
        if torch.isnan(target).any():
            raise ValueError(
                f"column 'effective_view' has {int(torch.isnan(target).sum())} NaN values; expected 0/1 labels"
            )
        binary = (target == 0) | (target == 1)
        if not bool(binary.all()):
            bad = torch.unique(target[~binary])[:5].tolist()
            raise ValueError(f"column 'effective_view' has values {bad} other than 0 and 1; expected 0/1 labels")
        ones = torch.ones_like(target)
        return LabelOutput(target=target, mask=torch.ones_like(target, dtype=torch.bool), weight=ones)
