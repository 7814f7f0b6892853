"""The base of every stcrank data module (a :class:`~lightning.pytorch.LightningDataModule`)."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningDataModule


class BaseDataModule(LightningDataModule):
    """Base LightningDataModule of stcrank datasets.

    Subclasses expose :attr:`feature_sizes`, known without loading the data (from the store's manifest), which
    the command line passes to the task as its ``feature_sizes`` argument.
    """

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
