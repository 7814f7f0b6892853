import logging

import pytest

from stcrank.data.recflow.errors import RecFlowFormatError
from stcrank.data.recflow.importer.coverage import check_coverage


def test_a_join_under_the_minimum_stops_with_counts_and_the_option(tmp_path):
    with pytest.raises(
        RecFlowFormatError,
        match=r"x\.pkl: matches 3 of the 10 requests of d \(30\.0%\), under "
        r"--min_join_coverage 0\.5.*pass --min_join_coverage 0",
    ):
        check_coverage(tmp_path / "x.pkl", "d", 3, 10, "requests", "behaviour sequence", 0.5)


def test_a_partial_join_is_logged_and_a_full_one_is_quiet(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert check_coverage(tmp_path / "x.pkl", "d", 8, 10, "requests", "behaviour sequence", 0.5) == 0.8
    assert "2 of the 10 requests of d (20.0%) have no match there; they get no behaviour sequence" in caplog.text
    caplog.clear()
    assert check_coverage(tmp_path / "x.pkl", "d", 10, 10, "requests", "behaviour sequence", 0.5) == 1.0
    assert check_coverage(tmp_path / "x.pkl", "d", 0, 0, "requests", "behaviour sequence", 0.5) is None
    assert not caplog.text
