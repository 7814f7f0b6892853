"""Every value that reaches the store is in its column's domain, and every join of a day's files is checked."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pytest

from stcrank.data.recflow.errors import MissingDayError, RecFlowFormatError
from stcrank.data.recflow.importer import import_recflow

DAY = "2024-01-13"


def _uint64_max_last(values):
    out = values.astype(np.uint64)
    out[-1] = 2**64 - 1  # a time of uint64 max: read into int64 it would be -1
    return out


def _load(path):
    with open(path, "rb") as file:  # files written by the tests themselves
        return pickle.load(file)


def _dump(obj, path):
    with open(path, "wb") as file:
        pickle.dump(obj, file, protocol=4)


def _set_column(path, name, change, dtype=None):
    table = feather.read_table(path)
    values = change(table.column(name).to_numpy().copy())
    column = pa.array(values, type=dtype) if dtype is not None else pa.array(values)
    feather.write_feather(table.set_column(table.column_names.index(name), name, column), str(path))


@pytest.mark.parametrize(("chunk_rows", "shift"), [(None, -0.5), (53, -0.5), (53, 0.25)])
def test_float_keys_are_refused_not_rounded_onto_another_request(make_release, tmp_path, chunk_rows, shift):
    release = make_release(days=1)
    path = release / "seq_effective_50_dict" / f"{DAY}.pkl"
    seq = _load(path)
    _dump({(key + shift if i == 3 else key): value for i, (key, value) in enumerate(seq.items())}, path)
    with pytest.raises(RecFlowFormatError, match=r"seq_effective_50_dict/2024-01-13\.pkl: a key is .* \(float\)"):
        import_recflow(src=str(release), dst=str(tmp_path / "store"), chunk_rows=chunk_rows)


def test_another_days_sequences_stop_the_import_with_counts(make_release, tmp_path):
    release = make_release(days=2)
    folder = release / "seq_effective_50_dict"
    (folder / "2024-01-14.pkl").replace(folder / f"{DAY}.pkl")  # day 1's file is day 2's
    _dump(_load(release / "seq_effective_50_dict" / f"{DAY}.pkl"), folder / "2024-01-14.pkl")
    with pytest.raises(RecFlowFormatError, match=r"2024-01-13\.pkl: matches 0 of the \d+ requests of 2024-01-13"):
        import_recflow(src=str(release), dst=str(tmp_path / "a"))
    manifest = import_recflow(src=str(release), dst=str(tmp_path / "b"), min_join_coverage=0)  # on purpose
    rows = manifest["rows"][DAY]
    assert rows["sequence_coverage"] == 0 and rows["requests_without_sequence"] == rows["requests"] > 0


def test_an_empty_sequence_dict_stops_the_import(make_release, tmp_path):
    release = make_release(days=1)
    _dump({}, release / "seq_effective_50_dict" / f"{DAY}.pkl")
    with pytest.raises(RecFlowFormatError, match=r"matches 0 of the \d+ requests"):
        import_recflow(src=str(release), dst=str(tmp_path / "store"))


def test_a_partial_join_is_logged_with_counts(make_release, tmp_path, caplog):
    release = make_release(days=1)
    path = release / "seq_effective_50_dict" / f"{DAY}.pkl"
    seq = _load(path)
    _dump(dict(list(seq.items())[: len(seq) * 3 // 4]), path)
    with caplog.at_level(logging.WARNING):
        manifest = import_recflow(src=str(release), dst=str(tmp_path / "store"))
    rows = manifest["rows"][DAY]
    missing = rows["requests"] - len(seq) * 3 // 4
    assert f"{missing} of the {rows['requests']} requests of 2024-01-13" in caplog.text
    assert rows["sequence_coverage"] == pytest.approx(1 - missing / rows["requests"], abs=1e-6)
    assert rows["realshow_coverage"] == 1.0 and rows["ubm_coverage"] == 1.0 and rows["corpus_coverage"] == 1.0


def test_another_days_realshow_stops_the_import(make_release, tmp_path):
    release = make_release(days=2)
    (release / "realshow" / "2024-01-14.feather").replace(release / "realshow" / f"{DAY}.feather")
    (release / "all_stage" / "2024-01-14.feather").unlink()
    with pytest.raises(RecFlowFormatError, match=r"realshow/2024-01-13\.feather: matches 0 of the \d+ requests"):
        import_recflow(src=str(release), dst=str(tmp_path / "store"), on_missing_day="skip")


def test_another_days_ubm_pickle_stops_the_import(make_release, tmp_path):
    release = make_release(days=2, history_days=0)
    _dump(
        {key + 10**9: value for key, value in _load(release / "ubm_seq_request_id_dict" / f"{DAY}.pkl").items()},
        release / "ubm_seq_request_id_dict" / f"{DAY}.pkl",
    )
    with pytest.raises(RecFlowFormatError, match=r"ubm_seq_request_id_dict/2024-01-13\.pkl: matches 0 of the \d+ past"):
        import_recflow(src=str(release), dst=str(tmp_path / "store"))


@pytest.mark.parametrize("table", ["all_stage", "realshow"])
def test_a_day_without_rows_is_an_incomplete_day(make_release, tmp_path, table):
    release = make_release(days=2)
    path = release / table / f"{DAY}.feather"
    feather.write_feather(feather.read_table(path).slice(0, 0), str(path))
    with pytest.raises(MissingDayError, match=rf"day 2024-01-13 cannot be imported \(no rows in {table}/2024-01-13"):
        import_recflow(src=str(release), dst=str(tmp_path / "a"))
    manifest = import_recflow(src=str(release), dst=str(tmp_path / "b"), on_missing_day="skip")
    assert manifest["days"] == ["2024-01-14"] and "no rows" in manifest["skipped_days"][DAY]


@pytest.mark.parametrize(
    ("table", "column", "change", "dtype", "found"),
    [
        (
            "all_stage",
            "request_timestamp",
            _uint64_max_last,
            pa.uint64(),
            r"'request_timestamp' has values in \[\d+, 18446744073709551615\]; expected a time in milliseconds",
        ),
        ("realshow", "upload_timestamp", lambda v: v * 1000, None, r"'upload_timestamp' .* time in seconds"),
        (
            "all_stage",
            "duration",
            lambda v: -v,
            None,
            r"'duration' has values in \[-\d+, -\d+\]; expected a non-negative",
        ),
        ("realshow", "playing_time", lambda v: v - 10**6, None, r"'playing_time' .* non-negative duration"),
        ("all_stage", "rank_index", lambda v: v - 5, None, r"'rank_index' .* a position within the stage"),
        ("all_stage", "request_id", lambda v: v - 10**12, None, r"'request_id' .* a non-negative request id"),
        (
            "realshow",
            "effective_view",
            lambda v: v * 300,
            None,
            r"'effective_view' has values in \[0, 300\]; expected 0",
        ),
    ],
)
def test_feather_values_outside_their_domain_are_refused(make_release, tmp_path, table, column, change, dtype, found):
    release = make_release(days=1)
    path = release / table / f"{DAY}.feather"
    _set_column(path, column, change, dtype)
    with pytest.raises(RecFlowFormatError, match=found) as caught:
        import_recflow(src=str(release), dst=str(tmp_path / "store"))
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("column", "value", "found"),
    [
        (6, -40, r"column 'duration' \(index 6 of the arrays\) has values in \[-40, \d+\]"),
        (8, -1, r"column 'playing_time' \(index 8 of the arrays\) has values in \[-1, \d+\]"),
        (7, 2**62, r"column 'time_ms' \(index 7 of the arrays\) .* time in milliseconds"),
        (0, 2**40, r"column 'video_id' \(index 0 of the arrays\) .* 0-based id"),
    ],
)
def test_sequence_values_outside_their_domain_are_refused(make_release, tmp_path, column, value, found):
    release = make_release(days=1)
    path = release / "seq_effective_50_dict" / f"{DAY}.pkl"
    seq = _load(path)
    key = next(iter(seq))
    seq[key] = seq[key].copy()
    seq[key][-1, column] = value
    _dump(seq, path)
    with pytest.raises(RecFlowFormatError, match=found):
        import_recflow(src=str(release), dst=str(tmp_path / "store"))
