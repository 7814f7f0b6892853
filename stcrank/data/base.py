"""The base of every stcrank data module (a :class:`~lightning.pytorch.LightningDataModule`)."""

from __future__ import annotations

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
