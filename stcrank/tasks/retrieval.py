"""Retrieval task: train a two-tower sequence model on sampled negatives, evaluate full-corpus top-K retrieval."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from stcrank.checks import TASK, check_not_empty, check_positive
from stcrank.errors import ConfigError
from stcrank.metrics.ranking import CorpusRetrievalMetrics
from stcrank.metrics.retrieval import topk_over_corpus
from stcrank.options import resolve_plugin
from stcrank.plugins import Loss
from stcrank.tasks.base import BaseTask, require_feature_sizes
from stcrank.tasks.predictions import head_name, prediction_rows


class RetrievalNetwork(Protocol):
    """What :class:`RetrievalTask` needs of a network (e.g. :class:`~stcrank.models.sasrec.SASRec`)."""

    def __call__(self, seq: Tensor, seq_mask: Tensor, items: Tensor) -> Tensor:
        """Scores ``[B, N]`` of items ``[B, N]`` for the users of sequences ``[B, L]``."""

    def user_vector(self, seq: Tensor, seq_mask: Tensor) -> Tensor:
        """User vectors ``[B, d]``."""

    def item_vectors(self, items: Tensor) -> Tensor:
        """Item vectors ``[..., d]`` of item ids ``[...]``."""


class RetrievalTask(BaseTask):
    """Train a retrieval network on positives with sampled negatives; evaluate it by full-corpus retrieval.

    Training batches come from :class:`~stcrank.data.recflow.retrieval.RecFlowRetrievalDataModule`: each row is a
    target and its negatives (``items``), with a 0/1 ``label`` and a cascade ``item_priority``. The loss sees
    ``scores [B, 1+N]``, the target chosen by ``target`` and ``item_mask``: ``"label"`` for BPR (the target above
    every negative), ``"priority"`` for a cascade loss such as FS-LTR (every item above the lower priorities).

    Evaluation retrieves, for every request, the top ``max(ks)`` items of the data module's
    :meth:`~stcrank.data.recflow.retrieval.RecFlowRetrievalDataModule.retrieval_corpus` by inner product
    (exactly, chunk by chunk; the ``B x corpus`` score matrix is never built) and logs RecFlow's
    ``recflow_recall@K`` and ``recflow_ndcg@K`` (micro-averaged over positives, NDCG without IDCG), summed across
    processes. When the corpus is smaller than ``max(ks)``, the list holds the whole corpus.

    Training logs ``train/loss`` (per step and per epoch) and the epoch's ``train/sampled_auc``: the share of
    (target, real sampled negative) pairs in which the target scores higher.

    ``predict`` writes the top ``max(ks)`` items retrieved for each request of the data module's predict set, one
    row per (request, item) with its 1-based ``rank`` and score (see :mod:`stcrank.tasks.predictions`).

    Args:
        network: The network, called with ``feature_sizes`` (give it as ``class_path`` + ``init_args``); it must
            provide ``user_vector``, ``item_vectors`` and ``forward(seq, seq_mask, items)``.
        loss: A ``stcrank.losses`` plugin: an entry-point name, a class name with ``init_args``, or a class path.
        target: What the loss compares: ``"label"`` (1 on the target, 0 on negatives) or ``"priority"``.
        optimizer: The optimiser, called with the parameters (default: Adam with ``lr``).
        lr: Learning rate of the default optimiser (RecFlow: 0.1).
        ks: Cut-offs of the retrieval metrics.
        chunk_size: Corpus rows scored at a time during evaluation.
        feature_sizes: Embedding-table sizes by feature name; linked from the data module by the command line.
    """

    monitor = "val/recflow_recall@1000"
    mode = "max"

    def __init__(
        self,
        network: Callable[[dict[str, int]], nn.Module],
        loss: Loss | str = "bpr",
        target: Literal["label", "priority"] = "label",
        optimizer: OptimizerCallable | None = None,
        lr: float = 0.1,
        ks: list[int] | None = None,
        chunk_size: int = 65536,
        feature_sizes: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        feature_sizes = require_feature_sizes("RetrievalTask", feature_sizes)
        if target not in ("label", "priority"):
            raise ConfigError(f"--model.target {target}: choose label or priority")
        check_positive("RetrievalTask", TASK, lr=lr, ks=ks, chunk_size=chunk_size)
        check_not_empty("RetrievalTask", TASK, ks=ks)
        self.save_hyperparameters(ignore=["network", "loss", "optimizer"])
        self.network = network(feature_sizes)
        for method in ("user_vector", "item_vectors"):
            if not callable(getattr(self.network, method, None)):
                raise ConfigError(
                    f"--model.network {type(self.network).__name__} has no {method}(): RetrievalTask needs a "
                    "two-tower retrieval network such as SASRec"
                )
        self.loss = resolve_plugin("losses", loss, "--model.loss")
        self.loss_name = loss if isinstance(loss, str) else type(self.loss).__name__
        self.target = target
        self.optimizer = optimizer
        self.lr = lr
        self.ks = sorted(ks or [50, 100, 500, 1000])
        self.chunk_size = chunk_size
        self.val_metrics = CorpusRetrievalMetrics(self.ks)
        self.test_metrics = CorpusRetrievalMetrics(self.ks)
        self._corpus: tuple[Tensor, Tensor] | None = None
        self.head = "label"

    def metric_sets(self) -> dict[str, list[str]]:
        """Recall@K and NDCG@K of each request's retrieval from the whole corpus."""
        names = [f"recflow_{name}@{k}" for name in ("recall", "ndcg") for k in self.ks]
        return {"requests (retrieved from the whole corpus)": names}

    def setup(self, stage: str) -> None:
        """Name the prediction head after the data's label; before training, check that rows hold negatives."""
        datamodule = getattr(self.trainer, "datamodule", None)
        self.head = head_name(datamodule)
        layout_of = getattr(datamodule, "training_layout", None)
        if stage == "fit" and callable(layout_of) and layout_of() not in (None, "lists"):
            kind = getattr(datamodule, "sample_kind", "?")
            raise ConfigError(
                f"RetrievalTask trains on targets with sampled negatives, but --data.sample_kind {kind} gives "
                "other samples: use --data.sample_kind retrieval"
            )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam with ``lr`` (RecFlow's protocol: no weight decay, no schedule), or the configured optimiser."""
        if self.optimizer is not None:
            return self.optimizer(self.parameters())
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One step on a batch of targets with their negatives."""
        scores = self.network(batch["seq"], batch["seq_mask"], batch["items"])
        target = batch["label"] if self.target == "label" else batch["item_priority"].to(scores.dtype)
        loss = self.loss(scores, target, batch["item_mask"])
        size = scores.shape[0]
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        with torch.no_grad():
            negatives = batch["item_mask"][:, 1:]
            wins = (scores[:, :1] > scores[:, 1:]) & negatives
            pairs = negatives.sum()
            if bool(pairs > 0):
                sampled_auc = wins.sum().float() / pairs.float()
                self.log("train/sampled_auc", sampled_auc, on_step=False, on_epoch=True, batch_size=int(pairs))
        return loss

    # -- evaluation ------------------------------------------------------------------------------------------------

    def corpus_ids(self) -> Tensor:
        """The sorted item ids to retrieve from, read from the data module's ``retrieval_corpus()``."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not callable(getattr(datamodule, "retrieval_corpus", None)):
            raise RuntimeError(
                "RetrievalTask evaluates against the data module's retrieval_corpus(); run it with a "
                "RecFlowRetrievalDataModule (trainer.test(task, datamodule=...))"
            )
        ids = datamodule.retrieval_corpus().long()
        if ids.dim() != 1 or ids.numel() == 0:
            raise ValueError(f"retrieval_corpus() must be a non-empty 1-D tensor of item ids, got {tuple(ids.shape)}")
        if bool((ids[1:] <= ids[:-1]).any()):
            ids = torch.unique(ids)  # sorted unique, as the positive lookup needs
        return ids

    def _prepare_corpus(self) -> None:
        ids = self.corpus_ids().to(self.device)
        with torch.no_grad():
            vectors = torch.cat([self.network.item_vectors(part) for part in ids.split(self.chunk_size)])
        self._corpus = (ids, vectors.float())

    def on_validation_epoch_start(self) -> None:
        """Embed the corpus once for the epoch."""
        self._prepare_corpus()

    def on_test_epoch_start(self) -> None:
        """Embed the corpus once for the epoch."""
        self._prepare_corpus()

    def retrieve(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Top-``max(ks)`` corpus rows of each request of an evaluation batch.

        Returns:
            ``(scores, rows)``, both ``[B, max(ks)]``, best first; slots beyond the corpus size hold ``-inf`` and
            ``-1``.
        """
        if self._corpus is None:
            self._prepare_corpus()
        ids, vectors = self._corpus
        longest = self.ks[-1]
        users = self.network.user_vector(batch["seq"], batch["seq_mask"]).float()
        scores, rows = topk_over_corpus(users, vectors, min(longest, len(ids)), self.chunk_size)
        missing = longest - rows.shape[1]
        if missing > 0:
            rows = torch.cat([rows, rows.new_full((rows.shape[0], missing), -1)], dim=1)
            scores = torch.cat([scores, scores.new_full((scores.shape[0], missing), float("-inf"))], dim=1)
        return scores, rows

    def _positive_rows(self, positives: Tensor, mask: Tensor) -> Tensor:
        """Corpus row of each positive item, ``-1`` for padding and items outside the corpus (always misses)."""
        ids = self._corpus[0]
        slot = torch.searchsorted(ids, positives).clamp(max=len(ids) - 1)
        found = (ids[slot] == positives) & mask
        return torch.where(found, slot, torch.full_like(slot, -1))

    def _evaluation_step(self, metric: CorpusRetrievalMetrics, batch: dict[str, Tensor]) -> None:
        if batch["seq"].shape[0] == 0:
            return  # a rank's empty share of a tiny day
        _, rows = self.retrieve(batch)
        metric.update(rows, self._positive_rows(batch["positives"], batch["positive_mask"]), batch["positive_mask"])

    def _log_epoch(self, metric: CorpusRetrievalMetrics, prefix: str) -> None:
        # compute() sums the states over processes, so every rank logs the same global values.
        values = metric.compute()
        self.log_dict({f"{prefix}recflow_{name}": value.float() for name, value in values.items()}, sync_dist=False)
        metric.reset()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        """Accumulate validation metrics."""
        self._evaluation_step(self.val_metrics, batch)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        """Accumulate test metrics."""
        self._evaluation_step(self.test_metrics, batch)

    def on_validation_epoch_end(self) -> None:
        """Log ``val/recflow_recall@K`` and ``val/recflow_ndcg@K``."""
        self._log_epoch(self.val_metrics, "val/")
        self._corpus = None

    def on_test_epoch_end(self) -> None:
        """Log ``test/recflow_recall@K`` and ``test/recflow_ndcg@K``."""
        self._log_epoch(self.test_metrics, "test/")
        self._corpus = None

    def on_predict_epoch_start(self) -> None:
        """Embed the corpus once for the run."""
        self._prepare_corpus()

    def on_predict_epoch_end(self) -> None:
        """Free the corpus vectors."""
        self._corpus = None

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """One row per retrieved (request, item), best first: ``rank``, the score, and whether it is a positive."""
        scores, rows = self.retrieve(batch)
        items = torch.where(rows >= 0, self._corpus[0][rows.clamp(min=0)], torch.zeros_like(rows))
        positives = batch["positives"].masked_fill(~batch["positive_mask"], -1)
        hit = (items.unsqueeze(2) == positives.unsqueeze(1)).any(dim=2)
        rank = torch.arange(1, rows.shape[1] + 1, device=rows.device).expand_as(rows)
        return prediction_rows(
            rows >= 0,
            request_id=batch["request_id"].unsqueeze(1).expand_as(rows),
            item_id=items - 1,  # batches shift ids by +1 (0 is padding)
            predictions={self.head: scores},
            labels={self.head: hit},
            extra={"rank": rank},
        )
