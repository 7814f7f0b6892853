"""Point-wise ranking task: train on exposures, evaluate AUC/LogLoss and stage-candidate Recall/NDCG."""

from __future__ import annotations

from collections.abc import Callable

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import BinaryAUROC

from stcrank import registry
from stcrank.metrics.ranking import BinaryLogLoss, NormalizedNDCG, NormalizedRecall, RecFlowNDCG, RecFlowRecall
from stcrank.models.base import RankingNetwork
from stcrank.plugins import Loss
from stcrank.tasks.base import BaseTask

EXPOSURES, CANDIDATES = 0, 1
"""Dataloader indices of evaluation: point-wise exposures, then per-request stage candidates."""


class RankingTask(BaseTask):
    """Train a :class:`~stcrank.models.base.RankingNetwork` on exposures and evaluate it as RecFlow does.

    Evaluation takes two dataloaders: index 0 yields exposures (AUC and LogLoss), index 1 yields requests with
    their stage candidates (Recall@K and NDCG@K over the candidates). Two families of list metrics are logged:

    - ``recflow_recall@K`` / ``recflow_ndcg@K``: RecFlow's own definitions, micro-averaged over positives;
      ``recflow_ndcg`` has no ideal-DCG normalisation (the mean DCG gain per positive), as in the paper.
    - ``recall@K`` / ``ndcg@K``: the standard per-request averages, NDCG normalised by the ideal DCG.

    Args:
        network: The network, called with ``feature_sizes`` (give it as ``class_path`` + ``init_args``).
        loss: A ``stcrank.losses`` plugin: an entry-point name, a class name with ``init_args``, or a class path.
        optimizer: The optimiser, called with the parameters (default: Adam with ``lr``).
        lr: Learning rate of the default optimiser.
        ks: Cut-offs of the candidate-list metrics.
        feature_sizes: Embedding-table sizes by feature name; linked from the data module by the command line.
    """

    monitor = "val/auc"
    mode = "max"

    def __init__(
        self,
        network: Callable[[dict[str, int]], RankingNetwork],
        loss: Loss | str = "bce",
        optimizer: OptimizerCallable | None = None,
        lr: float = 1e-2,
        ks: list[int] | None = None,
        feature_sizes: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        if feature_sizes is None:
            raise ValueError("RankingTask needs feature_sizes (the command line links them from the data module)")
        self.save_hyperparameters(ignore=["network", "loss", "optimizer"])
        self.network = network(feature_sizes)
        self.loss = registry.resolve("losses", loss)
        self.optimizer = optimizer
        self.lr = lr
        self.ks = list(ks or [50, 100, 200])
        self.val_metrics = self._make_metrics("val/")
        self.test_metrics = self._make_metrics("test/")

    def _make_metrics(self, prefix: str) -> nn.ModuleDict:
        lists: dict[str, Metric] = {}
        for k in self.ks:
            lists[f"recflow_recall@{k}"] = RecFlowRecall(k)
            lists[f"recflow_ndcg@{k}"] = RecFlowNDCG(k)
            lists[f"recall@{k}"] = NormalizedRecall(k)
            lists[f"ndcg@{k}"] = NormalizedNDCG(k)
        return nn.ModuleDict(
            {
                "exposures": MetricCollection({"auc": BinaryAUROC(), "logloss": BinaryLogLoss()}, prefix=prefix),
                "candidates": MetricCollection(lists, prefix=prefix),
            }
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam with ``lr`` (RecFlow's protocol: no weight decay, no schedule), or the configured optimiser."""
        if self.optimizer is not None:
            return self.optimizer(self.parameters())
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One step on a batch of exposures."""
        logits = self.network(batch).unsqueeze(1)
        target = batch["label"].unsqueeze(1)
        loss = self.loss(logits, target, torch.ones_like(target, dtype=torch.bool))
        self.log("train/loss", loss, prog_bar=True, batch_size=logits.shape[0])
        return loss

    def _evaluation_step(self, metrics: nn.ModuleDict, batch: dict[str, Tensor], dataloader_idx: int) -> None:
        # Metric objects are logged from the step: Lightning computes, syncs across processes and resets them at
        # the end of the epoch, and files each group under the dataloader that fed it.
        if dataloader_idx == EXPOSURES:
            group = metrics["exposures"]
            group.update(torch.sigmoid(self.network(batch)), batch["label"].long())
        else:
            group = metrics["candidates"]
            group.update(self.network.score_candidates(batch), batch["candidate_label"], batch["candidate_mask"])
        self.log_dict(group, add_dataloader_idx=False, batch_size=batch["user"].shape[0])

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        """Accumulate validation metrics."""
        self._evaluation_step(self.val_metrics, batch, dataloader_idx)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        """Accumulate test metrics."""
        self._evaluation_step(self.test_metrics, batch, dataloader_idx)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """Predicted probabilities: per exposure, or per candidate for a candidates batch."""
        logits = self.network.score_candidates(batch) if "candidates" in batch else self.network(batch)
        return {"request_id": batch["request_id"], "probability": torch.sigmoid(logits)}
