"""What each pickle of the RecFlow release may contain, checked item by item as the safe reader hands it over.

The release's pickles hold little, and exactly that is accepted:

* ``seq_effective_50_dict/{date}.pkl``: a dict request id -> integer array of shape ``(50, 10)``;
* ``ubm_seq_request_id_dict/{date}.pkl``: a dict request id -> dict stage name -> integer array ``(n, 8)``;
* ``others/id_cnt.pkl``: a dict feature name -> count.

A request id is an ``int`` in ``[0, 2**63)`` (a numpy integer scalar reads as one); a float, a bool, a string or an
out-of-range key is refused rather than coerced (a key ``k - 0.5`` must not become request ``k - 1``). Arrays must
be integer arrays of the expected shape, and unsigned values must fit int64 (a ``uint64`` ``2**64 - 1`` would
become ``-1``). The columns' value ranges are checked afterwards, per column
(:mod:`stcrank.data.recflow.domains`). Every refusal is a :class:`~stcrank.data.recflow.errors.RecFlowFormatError`
naming the file and what was found.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stcrank.data.recflow.errors import RecFlowFormatError
from stcrank.data.recflow.pickle_builders import describe
from stcrank.data.recflow.pickles import iter_dict_pickle, load_pickle
from stcrank.data.recflow.schema import SEQ_ARRAY_COLUMNS, SEQ_LEN, STAGE_ARRAY_COLUMNS, STAGE_CODE

SEQ_SHAPE = (SEQ_LEN, len(SEQ_ARRAY_COLUMNS))
"""Shape of one behaviour sequence array."""
STAGE_WIDTH = len(STAGE_ARRAY_COLUMNS)
"""Columns of a stage array."""
MAX_ID_COUNT = 2**31 - 1
"""Largest count ``id_cnt`` may give (the store's ids are int32)."""
_INT64_MAX = 2**63 - 1
_UNFLAGGED = STAGE_CODE["unflagged"]


def request_ids(path: Path, keys: list[Any]) -> np.ndarray:
    """The keys of a batch of items as int64 request ids, or an error naming the first key that is not one."""
    if set(map(type, keys)) - {int}:
        bad = next(k for k in keys if type(k) is not int)
        raise RecFlowFormatError(
            f"{path}: a key is {describe(bad)} ({type(bad).__name__}); expected int request ids (a float, bool or "
            "string key is refused, never rounded or converted)"
        )
    try:
        ids = np.fromiter(keys, dtype=np.int64, count=len(keys))
    except OverflowError:
        bad = next(k for k in keys if not 0 <= k <= _INT64_MAX)
        raise RecFlowFormatError(f"{path}: key {describe(bad)} is not a request id; expected 0 <= id < 2**63") from None
    if len(ids) and int(ids.min()) < 0:
        raise RecFlowFormatError(f"{path}: key {int(ids.min())} is not a request id; expected 0 <= id < 2**63")
    return ids


def _as_int64(path: Path, array: np.ndarray, what: str) -> np.ndarray:
    """An integer array as int64, refusing unsigned values that would wrap."""
    if array.dtype == np.int64:
        return array
    if array.dtype.kind == "u" and array.dtype.itemsize == 8 and array.size and int(array.max()) > _INT64_MAX:
        raise RecFlowFormatError(
            f"{path}: {what} of dtype uint64 holds {int(array.max())}, which does not fit int64; the value would "
            "wrap to a negative number"
        )
    return array.astype(np.int64)


def _integer_array(path: Path, value: Any, what: str) -> np.ndarray:
    if type(value) is not np.ndarray:
        raise RecFlowFormatError(f"{path}: {what} is {describe(value)}; expected an integer numpy array")
    if value.dtype.kind not in "iu":
        raise RecFlowFormatError(f"{path}: {what} has dtype {value.dtype}; expected an integer array")
    return value


def sequence_batches(path: str | Path, batch_items: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The items of a ``seq_effective_50_dict`` pickle, checked, in batches.

    Args:
        path: The ``.pkl`` file.
        batch_items: Items per batch.

    Yields:
        ``(request ids int64 [n], sequences int64 [n, 50, 10])`` in the file's order.

    Raises:
        RecFlowFormatError: A key that is not a request id, a value that is not an integer array of shape
            ``(50, 10)``, or anything the safe reader refuses.
    """
    path = Path(path)
    for items in iter_dict_pickle(path, batch_items=batch_items):
        keys = request_ids(path, [key for key, _ in items])
        values = [value for _, value in items]
        del items
        if set(map(type, values)) != {np.ndarray}:
            bad = next(v for v in values if type(v) is not np.ndarray)
            raise RecFlowFormatError(
                f"{path}: a value is {describe(bad)}; expected integer arrays of shape {SEQ_SHAPE}"
            )
        shapes = {value.shape for value in values}
        if shapes != {SEQ_SHAPE}:
            raise RecFlowFormatError(
                f"{path}: sequences have shapes {sorted(shapes)[:5]}; expected integer arrays of shape {SEQ_SHAPE}"
            )
        dtypes = {value.dtype for value in values}
        if any(dtype.kind not in "iu" for dtype in dtypes):
            raise RecFlowFormatError(
                f"{path}: sequences have dtypes {sorted(map(str, dtypes))}; expected integer arrays of shape "
                f"{SEQ_SHAPE}"
            )
        if dtypes == {np.dtype(np.int64)}:
            stacked = np.stack(values)
        else:  # mixed or narrower dtypes: convert each (a uint64 that does not fit is refused)
            pairs = zip(keys.tolist(), values, strict=True)
            stacked = np.stack([_as_int64(path, v, f"the sequence of request {k}") for k, v in pairs])
        yield keys, stacked


@dataclass
class UbmBatch:
    """Stage rows of a batch of ``ubm_seq_request_id_dict`` items.

    Attributes:
        request_id: The past request of every row, int64 ``[n]``.
        stage: The stage code of every row, int8 ``[n]``.
        matrix: The stage-array rows, int64 ``[n, 8]``.
        item: The position of every row's item in the batch, int64 ``[n]``.
        keys: The request ids of the batch's items (in file order, one per item).
        unknown: Stage names that are not stages (their arrays are dropped).
        n_unknown: How many stage entries were dropped.
    """

    request_id: np.ndarray
    stage: np.ndarray
    matrix: np.ndarray
    item: np.ndarray
    keys: np.ndarray
    unknown: set[str] = field(default_factory=set)
    n_unknown: int = 0


def ubm_batches(path: str | Path, batch_items: int) -> Iterator[UbmBatch]:
    """The items of a ``ubm_seq_request_id_dict`` pickle, checked and flattened into stage rows, in batches.

    Args:
        path: The ``.pkl`` file.
        batch_items: Items (requests) per batch.

    Yields:
        One :class:`UbmBatch` per batch of items. A stage name outside the stages is dropped and counted.

    Raises:
        RecFlowFormatError: A key that is not a request id, a value that is not a dict of stage name -> integer
            array ``(n, 8)``, or anything the safe reader refuses.
    """
    path = Path(path)
    for items in iter_dict_pickle(path, batch_items=batch_items):
        keys = request_ids(path, [key for key, _ in items])
        owners: list[int] = []
        positions: list[int] = []
        codes: list[int] = []
        arrays: list[np.ndarray] = []
        unknown: set[str] = set()
        n_unknown = 0
        # per-request Python is unavoidable here: the pickle is a dict of dicts
        for position, (request_id, (_, stages)) in enumerate(zip(keys.tolist(), items, strict=True)):
            if type(stages) is not dict:
                raise RecFlowFormatError(
                    f"{path}: the value of request {request_id} is {describe(stages)}; expected a dict stage -> array"
                )
            for stage, array in stages.items():
                code = STAGE_CODE.get(stage, -1) if type(stage) is str else -1
                if code < 0 or code == _UNFLAGGED:
                    unknown.add(describe(stage))
                    n_unknown += 1
                    continue
                array = _integer_array(path, array, f"stage {stage!r} of request {request_id}")
                if array.ndim != 2 or array.shape[1] != STAGE_WIDTH:
                    raise RecFlowFormatError(
                        f"{path}: stage {stage!r} of request {request_id} has shape {array.shape}; expected integer "
                        f"arrays (n, {STAGE_WIDTH}) with columns {list(STAGE_ARRAY_COLUMNS)}"
                    )
                owners.append(request_id)
                positions.append(position)
                codes.append(code)
                arrays.append(array if array.dtype == np.int64 else _as_int64(path, array, f"stage {stage!r}"))
        del items
        counts = np.fromiter(map(len, arrays), dtype=np.int64, count=len(arrays))
        matrix = np.concatenate(arrays) if arrays else np.zeros((0, STAGE_WIDTH), np.int64)
        yield UbmBatch(
            request_id=np.repeat(np.asarray(owners, dtype=np.int64), counts),
            stage=np.repeat(np.asarray(codes, dtype=np.int8), counts),
            matrix=matrix,
            item=np.repeat(np.asarray(positions, dtype=np.int64), counts),
            keys=keys,
            unknown=unknown,
            n_unknown=n_unknown,
        )


def read_id_cnt(path: str | Path) -> dict[str, int]:
    """``others/id_cnt.pkl``: feature name -> count, checked (every name a str, every count an int in range).

    Raises:
        RecFlowFormatError: If the file is not a dict of str -> int counts in ``[0, 2**31)``, or anything the safe
            reader refuses.
    """
    path = Path(path)
    raw = load_pickle(path)
    if type(raw) is not dict:
        raise RecFlowFormatError(f"{path}: holds {describe(raw)}; expected a dict feature name -> count")
    out: dict[str, int] = {}
    for name, count in raw.items():
        if type(name) is not str:
            raise RecFlowFormatError(f"{path}: a key is {describe(name)}; expected feature names (str)")
        if type(count) is not int or not 0 <= count <= MAX_ID_COUNT:
            raise RecFlowFormatError(
                f"{path}: {name!r} has count {describe(count)}; expected an int in [0, {MAX_ID_COUNT}] (ids are int32)"
            )
        out[name] = count
    return out
