import os
import time

import numpy as np
import pytest

from stcrank.data.recflow.time_features import time_codes


@pytest.fixture
def host_timezone():
    """Switch the process timezone and restore it afterwards."""
    before = os.environ.get("TZ")

    def use(zone: str) -> None:
        os.environ["TZ"] = zone
        time.tzset()

    yield use
    if before is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = before
    time.tzset()


def test_matches_localtime_in_shanghai_whatever_the_host_timezone(host_timezone):
    # China has had no daylight saving time since 1991, so Asia/Shanghai is UTC+8 from then on.
    stamps = np.random.default_rng(0).integers(700_000_000, 2_000_000_000, 2000)
    host_timezone("America/New_York")
    codes = time_codes(stamps)
    host_timezone("Asia/Shanghai")
    expected = np.array([[t.tm_wday, t.tm_hour, t.tm_min] for t in map(time.localtime, stamps.tolist())]).T
    assert np.array_equal(np.stack(codes), expected)


def test_known_values_and_ranges():
    # 2024-01-13 00:00 in UTC+8 is a Saturday (tm_wday 5); one second earlier is Friday 23:59.
    midnight = 1705075200  # 2024-01-13T00:00+08:00
    wday, hour, minute = time_codes(np.array([midnight, midnight - 1, midnight + 13 * 3600 + 7 * 60]))
    assert wday.tolist() == [5, 4, 5] and hour.tolist() == [0, 23, 13] and minute.tolist() == [0, 59, 7]
    wday, hour, minute = time_codes(np.arange(0, 14 * 86400, 61))
    assert (wday.min(), wday.max(), hour.max(), minute.max()) == (0, 6, 23, 59)
    assert wday.dtype == hour.dtype == minute.dtype == np.int8
