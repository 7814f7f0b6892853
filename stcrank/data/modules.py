"""Every data module stcrank ships, imported together so that configs can name them by class name."""

from stcrank.data.recflow.datamodule import RecFlowDataModule

__all__ = ["RecFlowDataModule"]
