"""Two-stage cascade task: a retrieval tower and a pre-rank tower trained jointly on fixed candidate lists.

This is LCRON's two-stage benchmark on RecFlow (``kwai/LCRON``, ``run_train2.py``): for each request the first
stage (a DSSM two-tower, "retrieval") keeps 30 of the 40 candidates, the second stage (a DIN, "pre-rank") keeps
20 of those, and the system should keep the ranking stage's 10 top items. Both towers score every candidate of
the batch and one :class:`~stcrank_plugins.losses.two_stage.common.TwoStageLoss` sees both scores at once, so a
loss may couple the stages (ICC, RankFlow, LCRON) or train each on its own (BCE, FS-RankNet, FS-LambdaLoss, ARF).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor

from stcrank import registry
from stcrank.errors import ConfigError
from stcrank.metrics.cascade import CascadeMetrics
from stcrank.models.base import RankingNetwork
from stcrank.plugins import Loss
from stcrank.tasks.base import BaseTask

__all__ = ["TwoStageCascadeTask"]


class TwoStageCascadeTask(BaseTask):
    """Train a first-stage and a second-stage network jointly with a two-stage cascade loss.

    Training and evaluation batches are cascade lists (:class:`~stcrank.data.recflow.cascade_lists.LCRONDataModule`):
    ``candidates``, ``candidate_mask`` and the graded ``candidate_relevance``. Each step scores every candidate with
    both networks (``score_candidates``) and calls ``loss(scores [B, 2, L], relevance, mask)``. The optimiser
    covers both networks and the loss's own parameters (LCRON's and ARF's learned weights), as the reference's
    three Adam optimisers with one learning rate do.

    Evaluation logs :class:`~stcrank.metrics.cascade.CascadeMetrics` under ``val/`` and ``test/``:
    ``retrieval_ndcg@10``, ``prerank_ndcg@10``, ``retrieval_recall@10@30``, ``prerank_recall@10@20`` and
    ``joint_recall`` (with the default cut-offs).

    Args:
        first_network: The first-stage (retrieval) network, called with ``feature_sizes`` (LCRON: a DSSM).
        second_network: The second-stage (pre-rank) network, called with ``feature_sizes`` (LCRON: a DIN).
        loss: A two-stage ``stcrank.losses`` plugin (``two_stage_bce``, ``icc``, ``rankflow``, ``fs_ranknet``,
            ``fs_lambdaloss``, ``arf``, ``lcron``) by name, class name with ``init_args``, or class path.
        optimizer: The optimiser, called with the parameters (default: Adam with ``lr``).
        lr: Learning rate of the default optimiser (reference: 0.01).
        ground_truth_size: Ground-truth items per request in the metrics (reference: 10).
        first_k: Items the first stage keeps (reference: 30).
        second_k: Items the second stage keeps (reference: 20).
        ndcg_k: Cut-off of the per-stage NDCG (reference: 10).
        feature_sizes: Embedding-table sizes by feature name; linked from the data module by the command line.
    """

    monitor = "val/joint_recall"
    mode = "max"

    def __init__(
        self,
        first_network: Callable[[dict[str, int]], RankingNetwork],
        second_network: Callable[[dict[str, int]], RankingNetwork],
        loss: Loss | str = "two_stage_bce",
        optimizer: OptimizerCallable | None = None,
        lr: float = 1e-2,
        ground_truth_size: int = 10,
        first_k: int = 30,
        second_k: int = 20,
        ndcg_k: int = 10,
        feature_sizes: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        if feature_sizes is None:
            raise ValueError(
                "TwoStageCascadeTask needs feature_sizes (the command line links them from the data module)"
            )
        if second_k > first_k:
            raise ConfigError(f"--model.second_k ({second_k}) must not exceed --model.first_k ({first_k})")
        self.save_hyperparameters(ignore=["first_network", "second_network", "loss", "optimizer"])
        self.first_network = first_network(feature_sizes)
        self.second_network = second_network(feature_sizes)
        self.loss = registry.resolve("losses", loss)
        if not hasattr(self.loss, "cascade_loss"):
            raise ConfigError(
                f"--model.loss {type(self.loss).__name__} is not a two-stage loss (it must take scores [B, 2, L]); "
                "choose two_stage_bce, icc, rankflow, fs_ranknet, fs_lambdaloss, arf or lcron"
            )
        self.optimizer = optimizer
        self.lr = lr
        metric_args = {"size": ground_truth_size, "first_k": first_k, "second_k": second_k, "ndcg_k": ndcg_k}
        self.val_metrics = CascadeMetrics(**metric_args)
        self.test_metrics = CascadeMetrics(**metric_args)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam with ``lr`` over both networks and the loss's parameters, or the configured optimiser."""
        if self.optimizer is not None:
            return self.optimizer(self.parameters())
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def stage_scores(self, batch: dict[str, Tensor]) -> Tensor:
        """Both networks' logits of every candidate, ``[B, 2, L]`` (first stage, then second)."""
        return torch.stack([self.first_network.score_candidates(batch), self.second_network.score_candidates(batch)], 1)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One joint step of both towers on a batch of cascade lists."""
        scores = self.stage_scores(batch)
        loss = self.loss(scores, batch["candidate_relevance"], batch["candidate_mask"])
        self.log("train/loss", loss, prog_bar=True, batch_size=scores.shape[0])
        return loss

    def _evaluate(self, metric: CascadeMetrics, batch: dict[str, Tensor]) -> None:
        scores = self.stage_scores(batch)
        metric.update(scores[:, 0], scores[:, 1], batch["candidate_relevance"], batch["candidate_mask"])

    def _log(self, metric: CascadeMetrics, prefix: str) -> None:
        # compute() sums the states over processes (a collective), so every rank calls it or none: whether a
        # batch was seen is decided over all processes. Nothing seen logs nothing rather than zeros.
        seen = torch.tensor(float(metric.update_count), device=self.device)
        if self.trainer.world_size > 1:
            seen = self.trainer.strategy.reduce(seen, reduce_op="sum")
        if float(seen) > 0:
            values = metric.compute()
            self.log_dict({f"{prefix}{name}": value for name, value in values.items()}, sync_dist=False)
        metric.reset()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Accumulate the validation metrics."""
        self._evaluate(self.val_metrics, batch)

    def on_validation_epoch_end(self) -> None:
        """Log the validation cascade metrics."""
        self._log(self.val_metrics, "val/")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Accumulate the test metrics."""
        self._evaluate(self.test_metrics, batch)

    def on_test_epoch_end(self) -> None:
        """Log the test cascade metrics."""
        self._log(self.test_metrics, "test/")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Both stages' logits of every candidate (``[B, 2, L]``) with the request ids."""
        return {"request_id": batch["request_id"], "scores": self.stage_scores(batch)}
