"""The base of every stcrank task (a :class:`~lightning.pytorch.LightningModule`)."""

from __future__ import annotations

from lightning.pytorch import LightningModule


class BaseTask(LightningModule):
    """Base LightningModule of stcrank tasks.

    Subclasses build their network from ``feature_sizes`` (the vocabulary size of every categorical feature),
    which the command line links from the data module's ``feature_sizes`` when both are instantiated, so a
    config never repeats the dataset's vocabulary sizes.

    Attributes:
        monitor: The logged metric that checkpoints and early stopping watch by default.
        mode: ``"max"`` or ``"min"`` for :attr:`monitor`.
    """

    monitor: str = "val_loss"
    mode: str = "min"
