"""Point-wise ranking task: train on exposures, evaluate AUC/LogLoss and stage-candidate Recall/NDCG."""

from __future__ import annotations

from collections.abc import Callable

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAUROC

from stcrank.checks import TASK, check_not_empty, check_positive
from stcrank.errors import ConfigError
from stcrank.metrics.functional import TIE_RULES
from stcrank.metrics.ranking import BinaryAUC, BinaryLogLoss, StageCandidateMetrics
from stcrank.models.base import RankingNetwork
from stcrank.options import resolve_plugin
from stcrank.plugins import Loss
from stcrank.tasks.base import BaseTask, require_feature_sizes
from stcrank.tasks.group_metrics import log_group_aucs, make_group_aucs, update_group_aucs
from stcrank.tasks.predictions import head_name, prediction_rows

EXPOSURES, CANDIDATES = 0, 1
"""Dataloader indices of evaluation: point-wise exposures, then per-request stage candidates."""

CANDIDATE_NAMES = {"recall": "recflow_recall", "ndcg": "recflow_ndcg", "norm_recall": "recall", "norm_ndcg": "ndcg"}
"""Logged name of each :class:`~stcrank.metrics.ranking.StageCandidateMetrics` key (before ``@K``)."""

TRAIN_AUC_THRESHOLDS = 1000
"""Bins of the training AUC (``train/auc``): constant memory over an epoch of any size, exact to about 1e-3."""


class RankingTask(BaseTask):
    """Train a :class:`~stcrank.models.base.RankingNetwork` on exposures and evaluate it as RecFlow does.

    The training batch decides how the loss is applied:

    - an exposures batch (``item``, ``label``): point-wise, ``loss(logits [B, 1], label [B, 1])``;
    - a list batch (``candidates``, e.g. the ``request_lists`` sample kind): list-wise,
      ``loss(score_candidates [B, C], batch[list_target], candidate_mask)`` (FS-LTR, PositiveRank);
    - an auxiliary batch (``aux_items``) with a loss that has ``pointwise_term`` and ``ranking_term``
      (``aux_ranking``): BCE on the exposure's logit plus ``alpha`` times the ranking term on the logits of the
      exposure and its stage items. Those come from the network's ``auxiliary_scores(batch) -> [B, 1 + K]`` when
      it has one (a separate scorer, e.g. DIN's auxiliary two-tower), else from ``score_candidates`` over
      ``[item; aux_items]`` (the same towers, e.g. DSSM).

    When training starts, the loss and the data module's training layout must fit: a loss that compares the items
    of a row (pair-wise, list-wise: ``Loss.compares_items``) on point-wise exposures would have no pair and no
    gradient, and stage items that the loss does not read would silently train the baseline; both stop with a
    :class:`~stcrank.errors.ConfigError` naming the option to change.

    Training logs ``train/loss`` (per step and per epoch) and, on point-wise batches, the epoch's ``train/auc``
    (binned into :data:`TRAIN_AUC_THRESHOLDS` thresholds).

    Evaluation takes two dataloaders: index 0 yields exposures (AUC and LogLoss, and beside the AUC the
    impression-weighted per-user and per-request GAUC ``gauc_user`` / ``gauc_request`` with the number of
    single-class users or requests they leave out, ``gauc_user_excluded`` / ``gauc_request_excluded``), index 1
    yields requests with their stage candidates (Recall@K and NDCG@K over the candidates). Two families of list
    metrics are logged:

    - ``recflow_recall@K`` / ``recflow_ndcg@K``: RecFlow's own definitions, micro-averaged over positives;
      ``recflow_ndcg`` has no ideal-DCG normalisation (the mean DCG gain per positive), as in the paper.
    - ``recall@K`` / ``ndcg@K``: the standard per-request averages, NDCG normalised by the ideal DCG.

    ``predict`` scores every stage candidate of each request of the data module's predict set (one row per
    request and item, see :mod:`stcrank.tasks.predictions`), the input of re-ranking and of ``stcrank tune``.

    Args:
        network: The network, called with ``feature_sizes`` (give it as ``class_path`` + ``init_args``).
        loss: A ``stcrank.losses`` plugin: an entry-point name, a class name with ``init_args``, or a class path.
        optimizer: The optimiser, called with the parameters (default: Adam with ``lr``).
        lr: Learning rate of the default optimiser.
        ks: Cut-offs of the candidate-list metrics.
        feature_sizes: Embedding-table sizes by feature name; linked from the data module by the command line.
        list_target: Batch key of the list-wise target: ``candidate_stage`` (cascade priority) or
            ``candidate_slot`` (slot code, for the rank-stage FS-LTR groups).
        ties: How tied candidate scores rank in Recall@K/NDCG@K: ``pessimistic`` (positives after negatives, the
            default: constant scores never gain) or ``expected`` (the expected value over all orderings of tied
            candidates).
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
        list_target: str = "candidate_stage",
        ties: str = "pessimistic",
    ) -> None:
        super().__init__()
        feature_sizes = require_feature_sizes("RankingTask", feature_sizes)
        check_positive("RankingTask", TASK, lr=lr, ks=ks)
        check_not_empty("RankingTask", TASK, ks=ks)
        if ties not in TIE_RULES:
            raise ConfigError(f"--model.ties {ties}: unknown; choose one of {list(TIE_RULES)}")
        self.ties = ties
        self.save_hyperparameters(ignore=["network", "loss", "optimizer"])
        self.network = network(feature_sizes)
        self.loss = resolve_plugin("losses", loss, "--model.loss")
        self.loss_name = loss if isinstance(loss, str) else type(self.loss).__name__
        self.optimizer = optimizer
        self.lr = lr
        self.ks = list(ks or [50, 100, 200])
        self.list_target = list_target
        self.val_metrics = self._make_metrics("val/")
        self.test_metrics = self._make_metrics("test/")
        self.train_auc = BinaryAUROC(thresholds=TRAIN_AUC_THRESHOLDS)
        self.head = "label"

    def metric_sets(self) -> dict[str, list[str]]:
        """AUC and LogLoss over the exposures; Recall@K and NDCG@K over each request's stage candidates."""
        lists = [f"{name}@{k}" for name in ("recall", "ndcg", "recflow_recall", "recflow_ndcg") for k in self.ks]
        gauc = ["gauc_user", "gauc_user_excluded", "gauc_request", "gauc_request_excluded"]
        return {"exposures": ["auc", *gauc, "logloss"], "stage candidates": lists}

    def setup(self, stage: str) -> None:
        """Name the prediction head after the data's label; before training, check the loss fits the batches."""
        datamodule = getattr(self.trainer, "datamodule", None)
        self.head = head_name(datamodule)
        if stage == "fit" and datamodule is not None:
            check_loss_fits_layout(self.loss, self.loss_name, datamodule)

    def _make_metrics(self, prefix: str) -> nn.ModuleDict:
        # One StageCandidateMetrics sorts each candidates batch once for every metric and cut-off.
        return nn.ModuleDict(
            {
                "exposures": MetricCollection({"auc": BinaryAUC(), "logloss": BinaryLogLoss()}, prefix=prefix),
                "candidates": StageCandidateMetrics(self.ks, self.ties),
                "groups": make_group_aucs(),
            }
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam with ``lr`` (RecFlow's protocol: no weight decay, no schedule), or the configured optimiser."""
        if self.optimizer is not None:
            return self.optimizer(self.parameters())
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One step on a batch of exposures, of request lists or of exposures with auxiliary stage items."""
        if "aux_items" in batch and hasattr(self.loss, "ranking_term"):
            loss, size = self._auxiliary_loss(batch), batch["label"].shape[0]
        elif "candidates" in batch:
            loss, size = self._list_loss(batch), batch["candidates"].shape[0]
        else:
            logits = self.network(batch).unsqueeze(1)
            target = batch["label"].unsqueeze(1)
            loss, size = self.loss(logits, target, torch.ones_like(target, dtype=torch.bool)), logits.shape[0]
            self.train_auc.update(torch.sigmoid(logits.detach()).squeeze(1), batch["label"].long())
            self.log("train/auc", self.train_auc, on_step=False, on_epoch=True, batch_size=size)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        return loss

    def _list_loss(self, batch: dict[str, Tensor]) -> Tensor:
        if self.list_target not in batch:
            raise KeyError(f"list_target {self.list_target!r} is not in the batch (keys: {sorted(batch)})")
        scores = self.network.score_candidates(batch)
        return self.loss(scores, batch[self.list_target].to(scores.dtype), batch["candidate_mask"])

    def _auxiliary_loss(self, batch: dict[str, Tensor]) -> Tensor:
        label = batch["label"].unsqueeze(1)
        target = torch.cat([label, torch.zeros_like(batch["aux_mask"], dtype=label.dtype)], dim=1)
        mask = torch.cat([torch.ones_like(label, dtype=torch.bool), batch["aux_mask"]], dim=1)
        auxiliary_scores = getattr(self.network, "auxiliary_scores", None)
        if auxiliary_scores is None:  # the same scorer ranks the stage items
            items = torch.cat([batch["item"].unsqueeze(1), batch["aux_items"]], dim=1)
            return self.loss(self.network.score_candidates({**batch, "candidates": items}), target, mask)
        main = self.network(batch).unsqueeze(1).expand(-1, mask.shape[1])
        pointwise = self.loss.pointwise_term(main, target, mask)
        return pointwise + self.loss.alpha * self.loss.ranking_term(auxiliary_scores(batch), target, mask)

    def _evaluation_step(self, metrics: nn.ModuleDict, batch: dict[str, Tensor], dataloader_idx: int) -> None:
        if dataloader_idx == EXPOSURES:
            # Metric objects logged from the step: Lightning computes, syncs across processes and resets them at
            # the end of the epoch.
            group = metrics["exposures"]
            probability, label = torch.sigmoid(self.network(batch)), batch["label"].long()
            group.update(probability, label)
            update_group_aucs(metrics["groups"], batch, probability, label)
            self.log_dict(group, add_dataloader_idx=False, batch_size=batch["label"].shape[0])
        else:
            # A dict-valued metric: accumulated here, computed and logged at the end of the epoch.
            scores = self.network.score_candidates(batch)
            metrics["candidates"].update(scores, batch["candidate_label"], batch["candidate_mask"])

    def _log_candidates(self, metric: StageCandidateMetrics, prefix: str) -> None:
        # compute() sums the states over processes (a collective), so every rank must call it or none: whether a
        # candidates batch was seen is decided over all processes.
        seen = torch.tensor(float(metric.update_count), device=self.device)
        if self.trainer.world_size > 1:
            seen = self.trainer.strategy.reduce(seen, reduce_op="sum")
        if float(seen) > 0:
            values = metric.compute()
            logged = {
                f"{prefix}{CANDIDATE_NAMES[key]}@{k}": values[f"{key}@{k}"]
                for k in metric.ks
                for key in CANDIDATE_NAMES
            }
            # Already global: no further reduction across processes.
            self.log_dict(logged, add_dataloader_idx=False, sync_dist=False)
        metric.reset()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        """Accumulate validation metrics."""
        self._evaluation_step(self.val_metrics, batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        """Log the validation GAUCs and Recall@K/NDCG@K (AUC/LogLoss are logged by Lightning)."""
        self._log_candidates(self.val_metrics["candidates"], "val/")
        log_group_aucs(self, self.val_metrics["groups"], "val/")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        """Accumulate test metrics."""
        self._evaluation_step(self.test_metrics, batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        """Log the test GAUCs and Recall@K/NDCG@K (AUC/LogLoss are logged by Lightning)."""
        self._log_candidates(self.test_metrics["candidates"], "test/")
        log_group_aucs(self, self.test_metrics["groups"], "test/")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """One row per scored item: ``request_id``, ``item_id``, ``pred_<head>``, ``label_<head>``, ``mask_<head>``.

        A candidates batch adds each candidate's cascade priority (``stage``); an exposures batch scores its
        exposures.
        """
        if "candidates" in batch:
            mask = batch["candidate_mask"]
            probability = torch.sigmoid(self.network.score_candidates(batch))
            return prediction_rows(
                mask,
                request_id=batch["request_id"].unsqueeze(1).expand_as(mask),
                item_id=batch["candidates"][..., 0] - 1,  # batches shift ids by +1 (0 is padding)
                predictions={self.head: probability},
                labels={self.head: batch["candidate_label"]},
                extra={"stage": batch["candidate_stage"]},
            )
        probability = torch.sigmoid(self.network(batch))
        return prediction_rows(
            torch.ones_like(probability, dtype=torch.bool),
            request_id=batch["request_id"],
            item_id=batch["item"][:, 0] - 1,
            predictions={self.head: probability},
            labels={self.head: batch["label"]},
        )


def check_loss_fits_layout(loss: Loss, loss_name: str, datamodule: object) -> None:
    """Refuse a loss and training batches that cannot train together (see :class:`RankingTask`).

    Args:
        loss: The loss.
        loss_name: The loss as the user named it (``fs_ltr``).
        datamodule: The data module; unchecked when it does not declare ``training_layout()``.

    Raises:
        ConfigError: Naming ``--model.loss`` and ``--data.sample_kind`` and what to change.
    """
    layout_of = getattr(datamodule, "training_layout", None)
    layout = layout_of() if callable(layout_of) else None
    if layout is None:
        return
    kind = getattr(datamodule, "sample_kind", "?")
    auxiliary = hasattr(loss, "ranking_term")

    def kinds(*layouts: str) -> str:
        names = datamodule.sample_kinds_of(*layouts) if hasattr(datamodule, "sample_kinds_of") else []
        if not names:
            return f"a data module whose samples are {' or '.join(layouts)}"
        return " or ".join(f"--data.sample_kind {name}" for name in names)

    if auxiliary and layout != "auxiliary":
        raise ConfigError(
            f"--model.loss {loss_name} ranks each exposure above stage items of its request, but "
            f"--data.sample_kind {kind} brings no stage items: use {kinds('auxiliary')}"
        )
    if layout == "point-wise" and getattr(loss, "compares_items", False):
        raise ConfigError(
            f"--model.loss {loss_name} compares the items of a list, but --data.sample_kind {kind} gives one "
            f"exposure per row: no pair, zero gradient. Use {kinds('lists')} (as "
            "configs/experiments/recflow/*/fsltr.yaml do), or a point-wise loss (--model.loss bce)"
        )
    if layout == "auxiliary" and not auxiliary:
        raise ConfigError(
            f"--data.sample_kind {kind} adds stage items to each exposure, but --model.loss {loss_name} does not "
            "read them (the run would train the baseline): use --model.loss aux_ranking, or --data.sample_kind "
            "exposures"
        )
