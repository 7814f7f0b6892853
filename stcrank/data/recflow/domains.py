"""The domain of every integer column of the RecFlow data: what values mean something, and how they are stored.

Every value the importer writes to the store is checked against its column's domain here (the spec,
``docs/data_formats.md``), whichever file it comes from: a Feather column, a column of the sequence arrays or of
the UBM stage arrays, an official test file. A value outside it is refused with a
:class:`~stcrank.data.recflow.errors.RecFlowFormatError` naming the file, the column, the range found and the
domain, instead of being wrapped, truncated or cast (a ``uint64`` time of ``2**64 - 1`` read as ``-1``, an
``effective_view`` of 300 stored as 44, a negative duration).

Times are bounded to before 2100 so that a column in the wrong unit (microseconds for milliseconds, milliseconds
for seconds) is refused rather than turned into wrong calendar codes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stcrank.data.recflow.errors import RecFlowFormatError
from stcrank.data.recflow.schema import (
    ALL_STAGE_COLUMNS,
    BINARY_FEEDBACK_COLUMNS,
    ITEM_ID_COLUMNS,
    SEQ_ARRAY_COLUMNS,
    STAGE_ARRAY_COLUMNS,
    STAGES,
    USER_COLUMNS,
)

_YEAR_2100_S = 4_102_444_800  # 2100-01-01T00:00:00Z


@dataclass(frozen=True)
class Domain:
    """The values a column may hold and the integer type it is stored as.

    Attributes:
        low: Smallest valid value.
        high: Largest valid value.
        dtype: The store's integer type (every value of the domain fits it).
        meaning: What a value is, for error messages.
    """

    low: int
    high: int
    dtype: type[np.integer]
    meaning: str

    def check(self, values: np.ndarray, path: str | Path, column: str, position: int | None = None) -> np.ndarray:
        """Check that every value lies in the domain and return them as :attr:`dtype`.

        Args:
            values: Integer values (any integer dtype, unsigned included).
            path: The file they come from (for the message).
            column: The column as the user knows it (for the message).
            position: The column's index in the arrays of a pickle, if it comes from one (for the message).

        Raises:
            RecFlowFormatError: Naming the file, the column, the range found and the domain.
        """
        where = f"column {column!r}" + (f" (index {position} of the arrays)" if position is not None else "")
        if values.dtype.kind not in "iu":
            raise RecFlowFormatError(f"{path}: {where} has dtype {values.dtype}; expected integers")
        if values.size:
            low, high = int(values.min()), int(values.max())
            if low < self.low or high > self.high:
                raise RecFlowFormatError(
                    f"{path}: {where} has values in [{low}, {high}]; expected {self.meaning} "
                    f"(in [{self.low}, {self.high}])"
                )
        return values.astype(self.dtype, copy=False)


INT32_MAX = int(np.iinfo(np.int32).max)
INT64_MAX = int(np.iinfo(np.int64).max)

ID = Domain(0, INT32_MAX, np.int32, "a 0-based id")
FLAG = Domain(0, 1, np.int8, "0 or 1")
REQUEST_ID = Domain(0, INT64_MAX, np.int64, "a non-negative request id")
TIME_MS = Domain(0, _YEAR_2100_S * 1000, np.int64, "a time in milliseconds since 1970 (before 2100)")
TIME_S = Domain(0, _YEAR_2100_S, np.int64, "a time in seconds since 1970 (before 2100)")
DURATION_MS = Domain(0, INT32_MAX, np.int32, "a non-negative duration in milliseconds")
POSITION = Domain(-1, INT32_MAX, np.int32, "a position within the stage, or -1 where the row has none")
ANY_INT32 = Domain(-INT32_MAX - 1, INT32_MAX, np.int32, "a 32-bit integer")
ANY_INT64 = Domain(-INT64_MAX - 1, INT64_MAX, np.int64, "a 64-bit integer")

ROW_DOMAINS: dict[str, Domain] = {
    "request_id": REQUEST_ID,
    "request_timestamp": TIME_MS,
    **dict.fromkeys((*USER_COLUMNS, *ITEM_ID_COLUMNS), ID),
    "upload_timestamp": TIME_S,
    "duration": DURATION_MS,
    **dict.fromkeys((*STAGES, *BINARY_FEEDBACK_COLUMNS), FLAG),
    "rank_index": POSITION,
    "rerank_index": POSITION,
    "playing_time": DURATION_MS,
}
"""Domains of the ``all_stage`` and ``realshow`` columns (and of the official test files' columns)."""
assert set(ROW_DOMAINS) == set(ALL_STAGE_COLUMNS)

SEQ_DOMAINS: dict[str, Domain] = {
    **dict.fromkeys(ITEM_ID_COLUMNS, ID),
    "upload_timestamp": TIME_S,
    "duration": DURATION_MS,
    "time_ms": TIME_MS,
    "playing_time": DURATION_MS,
    "request_id": REQUEST_ID,
}
"""Domains of the ``(50, 10)`` sequence arrays' columns (a padding row is all zeros, inside every domain)."""
assert set(SEQ_DOMAINS) == set(SEQ_ARRAY_COLUMNS)

STAGE_ARRAY_DOMAINS: dict[str, Domain] = {
    **dict.fromkeys(ITEM_ID_COLUMNS, ID),
    "duration": DURATION_MS,
    "upload_timestamp": TIME_S,
    "effective_view": FLAG,
}
"""Domains of the ``(n, 8)`` stage arrays' columns (``ubm_seq_request_id_dict``)."""
assert set(STAGE_ARRAY_DOMAINS) == set(STAGE_ARRAY_COLUMNS)


def check_columns(
    columns: Mapping[str, np.ndarray], domains: Mapping[str, Domain], path: str | Path
) -> dict[str, np.ndarray]:
    """Check every column against its domain and return them in their store types."""
    return {name: domains[name].check(values, path, name) for name, values in columns.items()}
