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
        self.val_metrics = self._make_metrics()
        self.test_metrics = self._make_metrics()
        self._updated: set[tuple[str, str]] = set()

    def _make_metrics(self) -> nn.ModuleDict:
        lists: dict[str, Metric] = {}
        for k in self.ks:
            lists[f"recflow_recall@{k}"] = RecFlowRecall(k)
            lists[f"recflow_ndcg@{k}"] = RecFlowNDCG(k)
            lists[f"recall@{k}"] = NormalizedRecall(k)
            lists[f"ndcg@{k}"] = NormalizedNDCG(k)
        return nn.ModuleDict(
            {
                "exposures": MetricCollection({"auc": BinaryAUROC(), "logloss": BinaryLogLoss()}),
                "candidates": MetricCollection(lists),
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

    def _evaluation_step(self, prefix: str, batch: dict[str, Tensor], dataloader_idx: int) -> None:
        metrics = self.val_metrics if prefix == "val" else self.test_metrics
        if dataloader_idx == EXPOSURES:
            metrics["exposures"].update(torch.sigmoid(self.network(batch)), batch["label"].long())
            self._updated.add((prefix, "exposures"))
        else:
            scores = self.network.score_candidates(batch)
            metrics["candidates"].update(scores, batch["candidate_label"], batch["candidate_mask"])
            self._updated.add((prefix, "candidates"))

    def _log_evaluation(self, prefix: str) -> None:
        metrics = self.val_metrics if prefix == "val" else self.test_metrics
        for name, group in metrics.items():
            # Only groups that saw data: a data module may offer exposures without candidates.
            if (prefix, name) in self._updated:
                self.log_dict({f"{prefix}/{metric}": value for metric, value in group.compute().items()})
            group.reset()
            self._updated.discard((prefix, name))

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        """Accumulate validation metrics."""
        self._evaluation_step("val", batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        """Log and reset validation metrics."""
        self._log_evaluation("val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        """Accumulate test metrics."""
        self._evaluation_step("test", batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        """Log and reset test metrics."""
        self._log_evaluation("test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """Predicted probabilities: per exposure, or per candidate for a candidates batch."""
        logits = self.network.score_candidates(batch) if "candidates" in batch else self.network(batch)
        return {"request_id": batch["request_id"], "probability": torch.sigmoid(logits)}
