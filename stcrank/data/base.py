"""The base of every stcrank data module (a :class:`~lightning.pytorch.LightningDataModule`)."""

from __future__ import annotations

from typing import ClassVar

import torch
from lightning.pytorch import LightningDataModule


class BaseDataModule(LightningDataModule):
    """Base LightningDataModule of stcrank datasets.

    Subclasses expose :attr:`feature_sizes`, known without loading the data (from the store's manifest), which
    the command line passes to the task as its ``feature_sizes`` argument.

    A module whose training samples come in several layouts declares them in :attr:`SAMPLE_LAYOUTS` (sample kind
    -> layout) and its current ``sample_kind``; tasks check that their loss fits :meth:`training_layout`:

    * ``"point-wise"``: one scored item per row (an exposure), e.g. for BCE;
    * ``"lists"``: several scored items per row (a request's candidates, a target with sampled negatives), for
      pair-wise and list-wise losses;
    * ``"auxiliary"``: an exposure with stage items of its request, for the auxiliary ranking loss.
    """

    SAMPLE_LAYOUTS: ClassVar[dict[str, str]] = {}
    """Training sample kind -> its layout (``"point-wise"``, ``"lists"`` or ``"auxiliary"``)."""

    def training_layout(self) -> str | None:
        """The layout of the training samples (see the class docstring); None when the module does not say."""
        return self.SAMPLE_LAYOUTS.get(getattr(self, "sample_kind", None))

    def sample_kinds_of(self, *layouts: str) -> list[str]:
        """The sample kinds of this module whose samples have one of ``layouts``."""
        return [kind for kind, layout in self.SAMPLE_LAYOUTS.items() if layout in layouts]

    @property
    def feature_sizes(self) -> dict[str, int]:
        """Embedding-table size of every categorical feature, padding row included."""
        raise NotImplementedError(f"{type(self).__name__} does not describe its features")

    def distributed_rank(self) -> tuple[int, int]:
        """This process's rank and the number of processes.

        From the attached trainer, else from ``torch.distributed``, else ``(0, 1)`` (a loader built outside a
        trainer, e.g. in a test or a script).
        """
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return int(trainer.global_rank), int(trainer.world_size)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1
