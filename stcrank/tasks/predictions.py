"""What ``stcrank predict`` writes: one Parquet row per scored (request, item), for re-ranking and ``stcrank tune``.

Every task's ``predict_step`` returns its batch as flat columns of one length (:func:`prediction_rows`), and
:class:`PredictionWriter` appends them to one Parquet file as the batches come (memory stays bounded by a batch).

================== =========== ==================================================================================
column             Arrow type  meaning
================== =========== ==================================================================================
``request_id``     int64       the request (RecFlow: the raw request id; e-shop: the F or homepage request)
``item_id``        int64       the scored item, as in the raw logs (RecFlow ``video_id``, e-shop ``item_id``)
``pred_<head>``    float32     the prediction of each head: a probability (ranking, multi-task, ESMM) or the
                               retrieval score (SASRec inner product); ``<head>`` is the label's task
                               (``effective_view``, ``cvr``, ``vtr``...)
``label_<head>``   float32     the head's 0/1 label
``mask_<head>``    bool        whether the row counts for the head (its label applies)
``score_<name>``   float32     an output with no label of its own (e.g. an ESMM factor that no product isolates)
``stage``          int64       RecFlow ranking: the candidate's cascade priority (6 effective view ... 0 unflagged)
``rank``           int64       retrieval: the item's 1-based position in the request's retrieved list
``session_id``     int64       e-shop: the F session (also ``position``, ``visit_id`` where the batch has them)
================== =========== ==================================================================================

The ``pred_``/``label_``/``mask_`` triplets are exactly what :func:`stcrank.tuning.predictions.read_predictions`
reads, so the file is ``stcrank tune --predictions``'s input as it is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

from stcrank.errors import StcrankError

FORMAT_KEY, FORMAT_VERSION = b"stcrank.predictions", b"1"
"""Schema metadata of the file (the same key as :mod:`stcrank.tuning.predictions`)."""


def head_name(datamodule: object) -> str:
    """Name of a single-head task's prediction: the data module's label task (``effective_view``), else ``label``."""
    label = getattr(datamodule, "label", None)
    return str(getattr(label, "task", None) or "label")


def prediction_rows(
    keep: Tensor,
    *,
    request_id: Tensor,
    item_id: Tensor,
    predictions: Mapping[str, Tensor],
    labels: Mapping[str, Tensor] | None = None,
    masks: Mapping[str, Tensor] | None = None,
    scores: Mapping[str, Tensor] | None = None,
    extra: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Flatten a batch's outputs into prediction rows: the elements where ``keep`` holds, in row-major order.

    Args:
        keep: Bool of the outputs' shape (``[B]`` or ``[B, C]``): which elements are real rows.
        request_id: Request of each element, broadcast to ``keep``'s shape.
        item_id: Item of each element.
        predictions: Head -> prediction.
        labels: Head -> 0/1 label (heads without one are written as ``score_<head>``).
        masks: Head -> whether the row counts for the head; all true when not given.
        scores: Name -> an output without a label.
        extra: Other columns (``stage``, ``rank``...).

    Returns:
        Column name -> 1-D tensor, every column of the same length.
    """
    labels, masks = dict(labels or {}), dict(masks or {})

    def flat(values: Tensor) -> Tensor:
        return values.expand_as(keep)[keep].detach()

    out = {"request_id": flat(request_id).long(), "item_id": flat(item_id).long()}
    for head, value in predictions.items():
        if head not in labels:
            out[f"score_{head}"] = flat(value).float()
            continue
        out[f"pred_{head}"] = flat(value).float()
        out[f"label_{head}"] = flat(labels[head]).float()
        out[f"mask_{head}"] = (
            flat(masks[head]).bool() if head in masks else torch.ones_like(out[f"label_{head}"]).bool()
        )
    for name, value in (scores or {}).items():
        out[f"score_{name}"] = flat(value).float()
    for name, value in (extra or {}).items():
        out[name] = flat(value)
    return out


class PredictionsWriteError(StcrankError, RuntimeError):
    """``predict`` produced no row, or a task's rows do not form one table."""


class PredictionWriter(BasePredictionWriter):
    """Append every ``predict_step`` output (see :func:`prediction_rows`) to one Parquet file.

    The file is written under a temporary name and renamed when the run ends, so a reader never sees a partial
    file. Under several processes, rank ``r`` writes ``<stem>.rank<r>.parquet`` beside ``path``.

    Args:
        path: The Parquet file to write.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(write_interval="batch")
        self.path = Path(path)
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._partial: Path | None = None

    def target(self, rank: int, world_size: int) -> Path:
        """The file this process writes."""
        if world_size <= 1:
            return self.path
        return self.path.with_name(f"{self.path.stem}.rank{rank}{self.path.suffix}")

    def write_on_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Append one batch's rows."""
        if not isinstance(prediction, Mapping) or not prediction:
            raise PredictionsWriteError(
                f"{type(pl_module).__name__}.predict_step must return a dict of 1-D columns, got {type(prediction)}"
            )
        columns = {name: value.detach().cpu().numpy() for name, value in prediction.items()}
        lengths = {name: value.shape for name, value in columns.items()}
        if any(len(shape) != 1 for shape in lengths.values()) or len({s[0] for s in lengths.values()}) != 1:
            raise PredictionsWriteError(f"predict_step must return 1-D columns of one length, got shapes {lengths}")
        table = pa.table(columns)
        if self._writer is None:
            target = self.target(trainer.global_rank, trainer.world_size)
            target.parent.mkdir(parents=True, exist_ok=True)
            self._partial = target.with_name(f".{target.name}.partial")
            schema = table.schema.with_metadata({FORMAT_KEY: FORMAT_VERSION})
            self._writer = pq.ParquetWriter(self._partial, schema)
        elif table.schema.names != self._writer.schema.names:
            raise PredictionsWriteError(
                f"predict batches disagree on their columns: {self._writer.schema.names} then {table.schema.names}"
            )
        self._writer.write_table(table.cast(self._writer.schema))
        self.rows += table.num_rows

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        """Start a new file."""
        self.rows, self._writer, self._partial = 0, None, None

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """Drop the partial file of a run that failed."""
        if self._writer is not None:
            self._writer.close()
            Path(self._partial).unlink(missing_ok=True)
            self._writer = None

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        """Close the file and move it into place."""
        if self._writer is None:
            raise PredictionsWriteError("predict scored no row: the data module's predict set is empty")
        self._writer.close()
        os.replace(self._partial, self.target(trainer.global_rank, trainer.world_size))
        self._writer = None
