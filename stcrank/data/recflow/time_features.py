"""Calendar codes (weekday, hour, minute) of timestamps, in UTC+8 whatever the host's timezone.

The reference code derives them with :func:`time.localtime`, which makes the features depend on the machine's
timezone; RecFlow was logged in China, so stcrank fixes the offset to UTC+8 (Asia/Shanghai has no daylight
saving time) and computes the codes with integer arithmetic on whole arrays.
"""

from __future__ import annotations

import numpy as np

UTC_OFFSET_SECONDS = 8 * 3600
"""Offset of the timezone the codes are computed in (UTC+8)."""

_SECONDS_PER_DAY = 86_400
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday; Monday is 0 as in time.struct_time.tm_wday


def time_codes(seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weekday, hour and minute of Unix timestamps in UTC+8.

    Args:
        seconds: Unix timestamps in seconds (any integer dtype).

    Returns:
        ``(wday, hour, minute)`` as int8 arrays: ``wday`` in 0..6 with Monday = 0 (``tm_wday``), ``hour`` in
        0..23, ``minute`` in 0..59. Unlike the reference code, the codes are 0-based; the batch shifts them by
        +1 together with every id, so that 0 is padding.
    """
    local = np.asarray(seconds, dtype=np.int64) + UTC_OFFSET_SECONDS
    # These arrays are a day's worth of rows: divisions by constants (numpy divides by a scalar fast), in place
    # where it can, instead of modulo operations and table lookups.
    days = local // _SECONDS_PER_DAY
    local -= days * _SECONDS_PER_DAY  # the second of the day
    minute = local.astype(np.int32)
    minute //= 60  # the minute of the day
    hour = minute // 60
    minute -= hour * 60
    days += _EPOCH_WEEKDAY
    weeks = days // 7
    weeks *= 7
    days -= weeks
    return days.astype(np.int8), hour.astype(np.int8), minute.astype(np.int8)


def day_start_seconds(date_ordinal_days: int) -> int:
    """Unix time (seconds) of midnight UTC+8 of a date given as days since 1970-01-01."""
    return date_ordinal_days * _SECONDS_PER_DAY - UTC_OFFSET_SECONDS
