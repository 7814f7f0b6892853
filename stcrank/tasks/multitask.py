"""Multi-task ranking: one head per task, masked and weighted BCE per task, AUC per task (STCRank 3.1)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics.classification import BinaryAUROC

from stcrank.checks import TASK, check_non_negative, check_positive
from stcrank.errors import ConfigError
from stcrank.metrics.ranking import BinaryAUC
from stcrank.tasks.base import BaseTask, require_feature_sizes
from stcrank.tasks.group_metrics import GROUPINGS, log_group_aucs, make_group_aucs, update_group_aucs
from stcrank.tasks.predictions import prediction_rows

ID_KEYS: tuple[str, ...] = ("request_id", "session_id", "position")
"""Batch keys carried into the cached predictions file."""

PREDICTION_KEYS: tuple[str, ...] = ("session_id", "position", "visit_id")
"""Batch keys carried into ``stcrank predict``'s rows besides ``request_id`` and ``item_id``."""

TRAIN_AUC_THRESHOLDS = 1000
"""Bins of the training AUC of each task (``train/auc_<t>``): constant memory over an epoch."""

logger = logging.getLogger(__name__)


def masked_task_loss(logits: Tensor, target: Tensor, mask: Tensor, weight: Tensor) -> Tensor:
    """One task's loss ``sum_i m_i z_i BCE(y_i, p_i) / max(1, sum_i m_i z_i)`` (standard BCE sign).

    Args:
        logits: Logits ``[B]``.
        target: 0/1 labels ``[B]``.
        mask: Bool ``[B]``: whether the sample belongs to the task.
        weight: Sample weights ``[B]``.

    Returns:
        The scalar loss (0 when no sample counts).
    """
    z = mask.to(logits.dtype) * weight.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none")
    return (z * bce).sum() / torch.clamp(z.sum(), min=1.0)


class MultiTaskRankingTask(BaseTask):
    """Train a multi-head network (e.g. :class:`~stcrank.models.mmoe.MMoE`) on page views with per-task labels.

    Loss: ``L = sum_t lambda_t * sum_i m_ti z_ti BCE(y_ti, p_ti) / max(1, sum_i m_ti z_ti)``, with the label,
    mask and weight of each task read from the batch (``label_<t>``, ``mask_<t>``, ``weight_<t>``, see
    :mod:`stcrank.data.eshop.datamodule`). Evaluation logs ``val/auc_<t>`` and ``test/auc_<t>`` (AUC of the
    task's prediction on its samples: mask true and weight above 0; NaN when those labels are all of one class),
    their sum ``val/auc_sum`` and ``val/loss``, and beside each AUC the impression-weighted per-user and
    per-request GAUC ``gauc_user_<t>`` / ``gauc_request_<t>`` with the number of single-class users or requests
    left out (``gauc_user_excluded_<t>``, ``gauc_request_excluded_<t>``). Training logs ``train/loss`` (per step
    and per epoch), each task's part ``train/loss_<t>`` and the epoch's ``train/auc_<t>`` (binned).

    When training starts, the heads and the data module's labels must match one to one, and every head needs
    training samples of both classes: a head without labels, labels without a head, or a constant label stop
    with a :class:`~stcrank.errors.ConfigError` (a constant validation or test label only warns: its AUC is NaN).

    ``predict`` returns one row per sample (``request_id``, ``item_id``, ``pred_<t>``, ``label_<t>``,
    ``mask_<t>``; see :mod:`stcrank.tasks.predictions`), which ``stcrank predict`` writes as the cached
    predictions ``stcrank tune`` reads. With ``predictions_path`` set, the task also writes them itself in the
    layout of :func:`stcrank.tuning.predictions.write_predictions`.

    Args:
        network: The network, called with ``feature_sizes``; it must have a ``tasks`` list and return one logit
            per task.
        loss_weights: ``lambda_t`` per task (1 for a task not named).
        optimizer: The optimiser, called with the parameters (default: Adam with ``lr``).
        lr: Learning rate of the default optimiser.
        feature_sizes: Embedding-table sizes by feature name; linked from the data module by the command line.
        predictions_path: Where ``predict`` writes the cached predictions (Parquet); nothing is written when None.
    """

    monitor = "val/auc_sum"
    mode = "max"

    def __init__(
        self,
        network: Callable[[dict[str, int]], nn.Module],
        loss_weights: dict[str, float] | None = None,
        optimizer: OptimizerCallable | None = None,
        lr: float = 1e-3,
        feature_sizes: dict[str, int] | None = None,
        predictions_path: str | None = None,
    ) -> None:
        super().__init__()
        feature_sizes = require_feature_sizes(type(self).__name__, feature_sizes)
        check_positive("MultiTaskRankingTask", TASK, lr=lr)
        weights = {f"loss_weights.{task}": weight for task, weight in (loss_weights or {}).items()}
        check_non_negative("MultiTaskRankingTask", TASK, **weights)
        self.save_hyperparameters(ignore=["network", "optimizer"])
        self.network = network(feature_sizes)
        self.tasks: list[str] = list(self.network.tasks)
        unknown = sorted(set(loss_weights or {}) - set(self.tasks))
        if unknown:
            raise ConfigError(
                f"--model.loss_weights names tasks {unknown} the network has no head for (heads: {self.tasks})"
            )
        self.loss_weights = {task: float((loss_weights or {}).get(task, 1.0)) for task in self.tasks}
        self.optimizer = optimizer
        self.lr = lr
        self.predictions_path = predictions_path
        self.val_auc = nn.ModuleDict({task: BinaryAUC() for task in self.tasks})
        self.test_auc = nn.ModuleDict({task: BinaryAUC() for task in self.tasks})
        self.val_gauc = nn.ModuleDict({task: make_group_aucs() for task in self.tasks})
        self.test_gauc = nn.ModuleDict({task: make_group_aucs() for task in self.tasks})
        self.train_auc = nn.ModuleDict({task: BinaryAUROC(thresholds=TRAIN_AUC_THRESHOLDS) for task in self.tasks})
        self._predicted: list[dict[str, Tensor]] = []

    def metric_sets(self) -> dict[str, list[str]]:
        """Every metric is over the data module's samples of the split (e-shop page views or exposures)."""
        parts = ("", "_excluded")
        gauc = [f"gauc_{grouping}{part}_{task}" for task in self.tasks for grouping in GROUPINGS for part in parts]
        return {"samples": [*(f"auc_{task}" for task in self.tasks), *gauc, "auc_sum", "loss"]}

    def describe_loss(self) -> str:
        """The masked BCE of the heads."""
        return f"the masked BCE of heads {self.tasks}"

    def setup(self, stage: str) -> None:
        """Before training, check that heads and labels match and that every head's labels are not constant."""
        datamodule = getattr(self.trainer, "datamodule", None)
        labelled = getattr(datamodule, "tasks", None)
        if stage != "fit" or labelled is None:
            return
        check_heads_match_labels(self.tasks, list(labelled))
        splits = getattr(datamodule, "splits", {})
        for split, samples in splits.items():
            columns = getattr(samples, "columns", None)
            if columns is not None:
                check_labels_vary(self.tasks, columns, split)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam with ``lr``, or the configured optimiser."""
        if self.optimizer is not None:
            return self.optimizer(self.parameters())
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def _check_batch(self, batch: dict[str, Tensor]) -> None:
        missing = [t for t in self.tasks if f"label_{t}" not in batch]
        if missing:
            raise ConfigError(
                f"the network has heads {self.tasks} but the data gives no label for {missing}: add them to "
                "--data.labels, or remove them from --model.network.tasks"
            )

    def _loss(self, logits: dict[str, Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        parts = {
            task: masked_task_loss(logits[task], batch[f"label_{task}"], batch[f"mask_{task}"], batch[f"weight_{task}"])
            for task in self.tasks
        }
        total = sum(self.loss_weights[task] * part for task, part in parts.items())
        return total, parts

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One optimisation step on a batch of page views."""
        self._check_batch(batch)
        logits = self.network(batch)
        loss, parts = self._loss(logits, batch)
        size = batch[f"label_{self.tasks[0]}"].shape[0]
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        for task, part in parts.items():
            self.log(f"train/loss_{task}", part, on_step=False, on_epoch=True, batch_size=size)
            keep = batch[f"mask_{task}"] & (batch[f"weight_{task}"] > 0)
            if bool(keep.any()):
                probability = torch.sigmoid(logits[task].detach()[keep])
                self.train_auc[task].update(probability, batch[f"label_{task}"][keep].long())
                self.log(f"train/auc_{task}", self.train_auc[task], on_step=False, on_epoch=True, batch_size=size)
        return loss

    def _evaluation_step(
        self, metrics: nn.ModuleDict, groups: nn.ModuleDict, prefix: str, batch: dict[str, Tensor]
    ) -> None:
        self._check_batch(batch)
        logits = self.network(batch)
        loss, _ = self._loss(logits, batch)
        size = batch[f"label_{self.tasks[0]}"].shape[0]
        self.log(f"{prefix}/loss", loss, batch_size=size)
        for task in self.tasks:
            keep = batch[f"mask_{task}"] & (batch[f"weight_{task}"] > 0)
            if bool(keep.any()):
                probability, label = torch.sigmoid(logits[task][keep]), batch[f"label_{task}"][keep].long()
                metrics[task].update(probability, label)
                update_group_aucs(groups[task], batch, probability, label, keep)
            # Metric objects are logged from the step: Lightning computes and resets them at the epoch's end.
            self.log(f"{prefix}/auc_{task}", metrics[task], batch_size=size)

    def _log_sum(self, metrics: nn.ModuleDict, prefix: str) -> None:
        # Whether a task had samples is decided over all processes: compute() synchronises, so every rank must
        # call it for the same tasks (a rank whose share holds no sample of a task still takes part).
        counts = torch.tensor([float(metrics[task].update_count) for task in self.tasks], device=self.device)
        if self.trainer.world_size > 1:
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
        had = dict(zip(self.tasks, counts.tolist(), strict=True))
        values = [metrics[task].compute() for task in self.tasks if had[task] > 0]
        if values:
            self.log(f"{prefix}/auc_sum", torch.stack(values).sum())

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Accumulate the validation loss and per-task AUCs."""
        self._evaluation_step(self.val_auc, self.val_gauc, "val", batch)

    def on_validation_epoch_end(self) -> None:
        """Log the sum of the validation AUCs (the default checkpoint monitor) and each head's GAUCs."""
        self._log_sum(self.val_auc, "val")
        for task in self.tasks:
            log_group_aucs(self, self.val_gauc[task], "val/", f"_{task}")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Accumulate the test loss and per-task AUCs."""
        self._evaluation_step(self.test_auc, self.test_gauc, "test", batch)

    def on_test_epoch_end(self) -> None:
        """Log the sum of the test AUCs and each head's GAUCs."""
        self._log_sum(self.test_auc, "test")
        for task in self.tasks:
            log_group_aucs(self, self.test_gauc[task], "test/", f"_{task}")

    def predict_probabilities(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Predicted probability of every task, of the batch columns' shape."""
        return {task: torch.sigmoid(logit) for task, logit in self.network(batch).items()}

    def prediction_labels(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The label and mask of every predicted output that has one (the heads whose labels the batch has)."""
        labels, masks = {}, {}
        for task in self.tasks:
            if f"label_{task}" in batch:
                labels[task] = batch[f"label_{task}"]
                masks[task] = batch[f"mask_{task}"] & (batch[f"weight_{task}"] > 0)
        return labels, masks

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """One row per sample: ``request_id``, ``item_id``, and ``pred_<t>``/``label_<t>``/``mask_<t>`` per head.

        Outputs without a label (none for MMoE; ESMM factors that no product isolates) are ``score_<name>``; the
        batch's ``session_id``, ``position`` and ``visit_id`` are kept.
        """
        probabilities = self.predict_probabilities(batch)
        labels, masks = self.prediction_labels(batch)
        reference = next(iter(probabilities.values()))
        out = prediction_rows(
            torch.ones_like(reference, dtype=torch.bool),
            request_id=batch["request_id"],
            item_id=batch["item_id"] if "item_id" in batch else torch.zeros_like(batch["request_id"]),
            predictions=probabilities,
            labels=labels,
            masks=masks,
            extra={key: batch[key] for key in PREDICTION_KEYS if key in batch},
        )
        if self.predictions_path is not None:
            self._predicted.append({k: v.detach().cpu() for k, v in out.items()})
        return out

    def on_predict_epoch_start(self) -> None:
        """Start collecting the predictions of a new run."""
        self._predicted = []

    def on_predict_epoch_end(self) -> None:
        """Write the cached predictions file when ``predictions_path`` is set."""
        if self.predictions_path is None or not self._predicted:
            return
        write_prediction_batches(self.predictions_path, self._predicted, self.tasks)
        self._predicted = []


def check_heads_match_labels(heads: list[str], labelled: list[str]) -> None:
    """Refuse heads without labels and labels without heads (a head never trained, a label never used).

    Raises:
        ConfigError: Naming ``--model.network.tasks`` and ``--data.labels``.
    """
    unlabelled = [task for task in heads if task not in labelled]
    unused = [task for task in labelled if task not in heads]
    if unlabelled:
        raise ConfigError(
            f"the network has heads {unlabelled} with no label in --data.labels ({labelled}): add their labels, or "
            f"remove them from --model.network.tasks ({heads})"
        )
    if unused:
        raise ConfigError(
            f"--data.labels defines {unused}, but the network has no head for them (--model.network.tasks {heads}): "
            "they would be ignored; add the heads, or remove the labels"
        )


def check_labels_vary(tasks: list[str], columns: dict[str, Tensor], split: str) -> None:
    """Refuse a head whose training labels are all of one class (or absent); warn for an evaluation split.

    Args:
        tasks: The heads.
        columns: The split's columns (``label_<t>``, ``mask_<t>``, ``weight_<t>``).
        split: ``train``, ``val``, ``test``...

    Raises:
        ConfigError: For the training split.
    """
    for task in tasks:
        if f"label_{task}" not in columns:
            continue
        keep = columns[f"mask_{task}"] & (columns[f"weight_{task}"] > 0)
        labels = columns[f"label_{task}"][keep]
        values = sorted({float(v) for v in labels.unique()}) if labels.numel() else []
        if len(values) >= 2:
            continue
        found = "no sample" if not values else f"label {values[0]:g} on all {labels.numel()} samples"
        message = f"task {task!r} has {found} in the {split} split (--data.labels.{task})"
        if split == "train":
            raise ConfigError(f"{message}: the head cannot learn; change the label definition or its settings")
        logger.warning("%s: its AUC will be NaN", message)


def write_prediction_batches(path: str | Path, batches: list[dict[str, Tensor]], tasks: list[str]) -> Path:
    """Concatenate ``predict_step`` outputs and write them as a cached-predictions file.

    Args:
        path: Destination Parquet file.
        batches: Outputs of :meth:`MultiTaskRankingTask.predict_step`, with labels.
        tasks: The tasks to write.

    Returns:
        The written path.

    Raises:
        KeyError: If the batches carry no labels for a task (predict on a labelled split).
    """
    from stcrank.tuning.predictions import write_predictions

    columns = {key: torch.cat([b[key] for b in batches]) for key in batches[0]}
    missing = [t for t in tasks if f"label_{t}" not in columns]
    if missing:
        raise KeyError(f"cannot write cached predictions: no labels for tasks {missing}")
    return write_predictions(
        path,
        predictions={t: columns[f"pred_{t}"] for t in tasks},
        labels={t: columns[f"label_{t}"] for t in tasks},
        masks={t: columns[f"mask_{t}"] for t in tasks},
        extra={key: columns[key] for key in ID_KEYS if key in columns},
    )
