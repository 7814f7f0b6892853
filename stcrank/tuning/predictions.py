"""Cached validation predictions: the one Parquet file that ensemble tuning reads.

A model writes the file once (after a validation or predict run) with :func:`write_predictions`; every tuning
trial then works on tensors held in memory. The layout is one row per scored sample and, for every task ``t``:

============== ======================== =============================================================
column         Arrow type               meaning
============== ======================== =============================================================
``pred_<t>``   float16/32/64            predicted probability (any finite score is accepted)
``label_<t>``  bool, integer or float   0/1 label; never NaN; must be 0 or 1 wherever ``mask_<t>`` holds
``mask_<t>``   bool                     whether the sample takes part in task ``t``'s metric
============== ======================== =============================================================

Optional integer columns ``request_id``, ``session_id`` and ``position`` (and any other extra column a writer adds)
are carried along for objectives that need them (a per-request metric, a simulator). No column may hold nulls.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from stcrank.errors import StcrankError
from stcrank.io import atomic_path

__all__ = [
    "ID_COLUMNS",
    "CachedPredictions",
    "PredictionsFileError",
    "predicted_tasks",
    "read_predictions",
    "synthetic_predictions",
    "write_predictions",
]

PRED, LABEL, MASK = "pred_", "label_", "mask_"
ID_COLUMNS: tuple[str, ...] = ("request_id", "session_id", "position")
"""Optional columns that, when present, must hold integers."""
FORMAT_KEY, FORMAT_VERSION = b"stcrank.predictions", b"1"


class PredictionsFileError(StcrankError, ValueError):
    """A cached-predictions file is missing, unreadable, or lacks a column of the expected type and content.

    The message names the file, the column at fault and what was expected.
    """


@dataclass(frozen=True)
class CachedPredictions:
    """Validation predictions of several tasks, loaded once and held as tensors of one length ``N``.

    Attributes:
        path: The file they were read from.
        predictions: Predicted score per task, float64 ``[N]``.
        labels: Label per task, bool ``[N]`` (meaningful where the task's mask holds).
        masks: Whether each row takes part in the task's metric, bool ``[N]``.
        extra: The other columns that were read (``request_id``...), as tensors ``[N]``.
    """

    path: Path
    predictions: dict[str, Tensor]
    labels: dict[str, Tensor]
    masks: dict[str, Tensor]
    extra: dict[str, Tensor] = field(default_factory=dict)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The task names, in file order."""
        return tuple(self.predictions)

    @property
    def num_rows(self) -> int:
        """Number of rows ``N``."""
        return next(iter(self.predictions.values())).numel()


def _fail(source: str, column: str | None, message: str) -> PredictionsFileError:
    where = f"{source}: column {column!r}: " if column else f"{source}: "
    return PredictionsFileError(where + message)


def _first_rows(bad: np.ndarray) -> str:
    rows = np.flatnonzero(bad)
    shown = ", ".join(str(row) for row in rows[:5])
    return f"{rows.size} row(s), first at row(s) {shown}"


def _check_type(source: str, column: str, arrow_type: pa.DataType) -> None:
    if column.startswith(PRED):
        ok, expected = pa.types.is_floating(arrow_type), "a floating-point type (float32 or float64)"
    elif column.startswith(LABEL):
        ok = pa.types.is_floating(arrow_type) or pa.types.is_integer(arrow_type) or pa.types.is_boolean(arrow_type)
        expected = "0/1 labels of type bool, integer or float"
    elif column.startswith(MASK):
        ok, expected = pa.types.is_boolean(arrow_type), "type bool"
    elif column in ID_COLUMNS:
        ok, expected = pa.types.is_integer(arrow_type), "an integer type"
    else:
        ok = pa.types.is_floating(arrow_type) or pa.types.is_integer(arrow_type) or pa.types.is_boolean(arrow_type)
        expected = "a numeric or bool type"
    if not ok:
        raise _fail(source, column, f"expected {expected}, found {arrow_type}")


def _check_values(source: str, tasks: Sequence[str], columns: Mapping[str, np.ndarray]) -> None:
    """Check the content of already type-checked columns: finite scores, 0/1 labels, usable masks."""
    for task in tasks:
        pred, label, mask = columns[PRED + task], columns[LABEL + task], columns[MASK + task]
        bad = ~np.isfinite(pred)
        if bad.any():
            raise _fail(source, PRED + task, f"expected finite predictions, found NaN/inf in {_first_rows(bad)}")
        if label.dtype.kind == "f":
            bad = np.isnan(label)
            if bad.any():
                raise _fail(
                    source,
                    LABEL + task,
                    f"expected 0/1 labels, found NaN in {_first_rows(bad)}; set {MASK + task} to false to exclude "
                    "a row and give it any 0/1 label",
                )
        if label.dtype.kind != "b":
            bad = mask & (label != 0) & (label != 1)
            if bad.any():
                found = np.unique(label[bad])[:5].tolist()
                raise _fail(
                    source,
                    LABEL + task,
                    f"expected 0/1 labels where {MASK + task} is true, found {found} in {_first_rows(bad)}",
                )
        if not mask.any():
            raise _fail(source, MASK + task, "selects no row; task metrics need at least one positive and one negative")


def _tasks_of(names: Sequence[str]) -> list[str]:
    return [name[len(PRED) :] for name in names if name.startswith(PRED)]


def _read_schema(path: Path) -> pa.Schema:
    if not path.is_file():
        raise _fail(str(path), None, "file not found (expected a Parquet file of cached validation predictions)")
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as error:
        raise _fail(str(path), None, f"cannot read as Parquet (corrupt or truncated?): {error}") from error


def predicted_tasks(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """The tasks of a cached-predictions file (its ``pred_<task>`` columns, in file order), reading only the schema.

    Raises:
        PredictionsFileError: If the file is missing, not Parquet, or has no ``pred_<task>`` column.
    """
    path = Path(path)
    names = _read_schema(path).names
    tasks = _tasks_of(names)
    if not tasks:
        raise _fail(str(path), None, f"no '{PRED}<task>' column; found columns {names}")
    return tuple(tasks)


def read_predictions(path: str | os.PathLike[str], tasks: Sequence[str] | None = None) -> CachedPredictions:
    """Read and validate a cached-predictions file.

    Args:
        path: The Parquet file written by :func:`write_predictions` (or by any tool, in the same layout).
        tasks: The tasks to load; every task of the file (every ``pred_<task>`` column, in file order) when None.

    Returns:
        The predictions (upcast to float64, so that ensemble values are compared exactly), labels and masks of
        the tasks, plus the optional id columns present in the file.

    Raises:
        PredictionsFileError: If the file is missing or not Parquet, holds no row, lacks a column of a requested
            task, or a column has the wrong type, a null, a NaN or a label other than 0/1.
    """
    path = Path(path)
    source = str(path)
    schema = _read_schema(path)
    available = _tasks_of(schema.names)
    if tasks is None:
        if not available:
            raise _fail(source, None, f"no '{PRED}<task>' column; found columns {schema.names}")
        tasks = available
    tasks = list(tasks)
    if not tasks or len(set(tasks)) != len(tasks):
        raise _fail(source, None, f"expected a non-empty list of distinct task names, got {tasks}")
    wanted = [prefix + task for task in tasks for prefix in (PRED, LABEL, MASK)]
    missing = [column for column in wanted if column not in schema.names]
    if missing:
        raise _fail(
            source,
            missing[0],
            f"missing; every task needs {PRED}/{LABEL}/{MASK}<task> columns (missing: {missing}; "
            f"tasks in the file: {available})",
        )
    extras = [name for name in schema.names if name not in wanted and not name.startswith((PRED, LABEL, MASK))]
    for column in wanted + extras:
        _check_type(source, column, schema.field(column).type)
    try:
        table = pq.read_table(path, columns=wanted + extras)
    except (pa.ArrowException, OSError) as error:
        raise _fail(source, None, f"cannot read as Parquet (corrupt or truncated?): {error}") from error
    if table.num_rows == 0:
        raise _fail(source, None, "holds no row")
    columns: dict[str, np.ndarray] = {}
    for column in wanted + extras:
        chunked = table.column(column)
        if chunked.null_count:
            raise _fail(source, column, f"expected no nulls, found {chunked.null_count}")
        columns[column] = chunked.to_numpy()
    _check_values(source, tasks, columns)
    return CachedPredictions(
        path=path,
        predictions={task: torch.from_numpy(columns[PRED + task].astype(np.float64)) for task in tasks},
        labels={task: torch.from_numpy(columns[LABEL + task].astype(bool)) for task in tasks},
        masks={task: torch.from_numpy(columns[MASK + task].copy()) for task in tasks},
        extra={name: torch.from_numpy(np.array(columns[name])) for name in extras},  # writable copies
    )


def _to_numpy(source: str, column: str, tensor: Tensor, length: int | None) -> np.ndarray:
    if not isinstance(tensor, Tensor):
        raise _fail(source, column, f"expected a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() != 1:
        raise _fail(source, column, f"expected a 1-D tensor, got shape {tuple(tensor.shape)}")
    if length is not None and tensor.numel() != length:
        raise _fail(source, column, f"expected {length} rows like the other columns, got {tensor.numel()}")
    tensor = tensor.detach().cpu()
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()  # Parquet has no bfloat16; float32 keeps every value
    return tensor.numpy()


def write_predictions(
    path: str | os.PathLike[str],
    predictions: Mapping[str, Tensor],
    labels: Mapping[str, Tensor],
    masks: Mapping[str, Tensor],
    extra: Mapping[str, Tensor] | None = None,
) -> Path:
    """Write cached validation predictions, validated exactly as :func:`read_predictions` will check them.

    The file is written to a temporary name and renamed, so a reader never sees a half-written file.

    Args:
        path: Destination Parquet file; parent folders are created.
        predictions: Predicted probability per task, 1-D float tensors of one length ``N``.
        labels: 0/1 label per task (bool, integer or float), ``[N]``.
        masks: Bool ``[N]`` per task: ``True`` where the sample counts for that task.
        extra: Other columns to keep, e.g. ``request_id``, ``session_id``, ``position`` (integers), ``[N]`` each.

    Returns:
        The written path.

    Raises:
        PredictionsFileError: If the three mappings name different tasks, a tensor is not 1-D or has another
            length, a mask is not bool, a prediction is not finite, or a label is NaN or not 0/1.
        stcrank.io.OutputError: If the file cannot be written (a full disk...); nothing is left behind.
    """
    path = Path(path)
    source = str(path)
    tasks = list(predictions)
    if not tasks:
        raise _fail(source, None, "expected predictions of at least one task")
    if set(labels) != set(tasks) or set(masks) != set(tasks):
        raise _fail(
            source,
            None,
            f"predictions, labels and masks must name the same tasks; got {sorted(predictions)}, "
            f"{sorted(labels)} and {sorted(masks)}",
        )
    columns: dict[str, np.ndarray] = {}
    length: int | None = None
    for task in tasks:
        for prefix, tensors in ((PRED, predictions), (LABEL, labels), (MASK, masks)):
            columns[prefix + task] = _to_numpy(source, prefix + task, tensors[task], length)
            length = columns[prefix + task].size
    for name, tensor in (extra or {}).items():
        if name.startswith((PRED, LABEL, MASK)) or name in columns:
            raise _fail(source, name, f"extra column names may not start with {PRED!r}, {LABEL!r} or {MASK!r}")
        columns[name] = _to_numpy(source, name, tensor, length)
    if length == 0:
        raise _fail(source, None, "expected at least one row")
    table = pa.table(columns)
    for name in table.column_names:
        _check_type(source, name, table.schema.field(name).type)
    _check_values(source, tasks, columns)
    table = table.replace_schema_metadata({FORMAT_KEY: FORMAT_VERSION})
    with atomic_path(path, "the predictions file") as temporary:
        pq.write_table(table, temporary)
    return path


def synthetic_predictions(
    path: str | os.PathLike[str],
    *,
    rows: int = 100_000,
    tasks: Sequence[str] = ("vtr", "cvr", "sdr"),
    list_length: int = 10,
    noise: float = 0.7,
    seed: int = 0,
) -> Path:
    """Write a synthetic cached-predictions file, for trying ``stcrank tune`` and for tests and benchmarks.

    Every task's true logit mixes a factor shared by all tasks with one of its own; labels are drawn from the
    true probabilities, and predictions are the true logits plus Gaussian noise, so no single task's prediction
    ranks every task's labels best and the weights matter. Rows form requests of ``list_length`` items; the
    ``sdr`` task (if named) counts only the first item of each request (first-position selection), the others
    count every row.

    Args:
        path: Destination Parquet file.
        rows: Number of rows.
        tasks: Task names; ``vtr``, ``cvr`` and ``sdr`` get realistic base rates (30%, 3%, 70%), others 30%.
        list_length: Items per request.
        noise: Standard deviation of the prediction noise on the logit scale.
        seed: Random seed.

    Returns:
        The written path.
    """
    generator = np.random.default_rng(seed)
    base_rates = {"vtr": 0.3, "cvr": 0.03, "sdr": 0.7}
    shared = generator.standard_normal(rows)
    position = np.arange(rows) % list_length
    request_id = np.arange(rows) // list_length
    predictions, labels, masks = {}, {}, {}
    for index, task in enumerate(tasks):
        rate = base_rates.get(task, 0.3)
        share = 0.3 + 0.5 * index / max(1, len(tasks) - 1)  # tasks differ in how much they follow the shared factor
        own = generator.standard_normal(rows)
        logit = np.log(rate / (1 - rate)) + np.sqrt(share) * shared + np.sqrt(1 - share) * own
        labels[task] = torch.from_numpy(generator.random(rows) < 1 / (1 + np.exp(-logit)))
        predicted = logit + noise * generator.standard_normal(rows)
        predictions[task] = torch.from_numpy((1 / (1 + np.exp(-predicted))).astype(np.float32))
        masks[task] = torch.from_numpy(position == 0 if task == "sdr" else np.ones(rows, dtype=bool))
    extra = {
        "request_id": torch.from_numpy(request_id),
        "session_id": torch.from_numpy(request_id // 3),
        "position": torch.from_numpy(position),
    }
    return write_predictions(path, predictions, labels, masks, extra)
