import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pytest

from stcrank.data.recflow.errors import RecFlowFormatError
from stcrank.data.recflow.official import (
    ReleaseLayout,
    feather_column_names,
    iter_feather_columns,
    iter_feather_tables,
    read_feather_columns,
)


def _write(path, columns, **options):
    feather.write_feather(pa.table(columns), str(path), **options)
    return path


def test_reads_checks_and_narrows(tmp_path):
    path = _write(
        tmp_path / "a.feather",
        {"id": np.arange(5), "flag": np.array([0, 1, 1, 0, 1]), "ts": np.arange(5) * 10**12},
        chunksize=2,
    )
    out = read_feather_columns(path, {"id": "id", "flag": "binary", "ts": "int64"})
    assert out["id"].dtype == np.int32 and out["flag"].dtype == np.int8 and out["ts"].dtype == np.int64
    assert out["id"].tolist() == [0, 1, 2, 3, 4] and out["ts"][-1] == 4 * 10**12
    assert read_feather_columns(path, ["id"])["id"].dtype == np.int64
    assert feather_column_names(path) == ["id", "flag", "ts"]


@pytest.mark.filterwarnings("ignore:Feather V1 files are deprecated:DeprecationWarning")
def test_feather_v1_files_are_accepted(tmp_path):
    path = _write(tmp_path / "v1.feather", {"id": np.arange(4)}, version=1)
    assert read_feather_columns(path, {"id": "id"})["id"].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("columns", "kinds", "message"),
    [
        ({"id": np.arange(3)}, {"other": "id"}, "missing column 'other'"),
        ({"id": np.array([0.0, 1.0])}, {"id": "id"}, "column 'id' has type double; expected an integer"),
        ({"id": pa.array([1, None], pa.int64())}, {"id": "id"}, "column 'id' has null values"),
        ({"id": np.array([0, -2])}, {"id": "id"}, "column 'id' has values in \\[-2, 0\\]; expected a 0-based id"),
        ({"flag": np.array([0, 2])}, {"flag": "binary"}, "column 'flag' has values in \\[0, 2\\]; expected 0 or 1"),
        ({"n": np.array([0, 2**40])}, {"n": "int32"}, "column 'n' has values in .*expected a 32-bit integer"),
    ],
)
def test_bad_columns_name_the_file_and_the_column(tmp_path, columns, kinds, message):
    path = _write(tmp_path / "bad.feather", columns)
    with pytest.raises(RecFlowFormatError, match=message) as caught:
        read_feather_columns(path, kinds)
    assert str(path) in str(caught.value)


def test_truncated_and_missing_files(tmp_path):
    path = _write(tmp_path / "cut.feather", {"id": np.arange(10_000)})
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(RecFlowFormatError, match="truncated or corrupt") as caught:
        read_feather_columns(path, {"id": "id"})
    assert str(path) in str(caught.value)
    with pytest.raises(RecFlowFormatError, match="not found"):
        read_feather_columns(tmp_path / "absent.feather", ["id"])


def test_layout_finds_days_gaps_and_both_test_file_names(tmp_path):
    for day in ("2024-01-13", "2024-01-15"):
        for folder, suffix in (("all_stage", "feather"), ("realshow", "feather"), ("seq_effective_50_dict", "pkl")):
            (tmp_path / folder).mkdir(exist_ok=True)
            (tmp_path / folder / f"{day}.{suffix}").write_bytes(b"")
    (tmp_path / "all_stage" / "notes.feather").write_bytes(b"")
    (tmp_path / "others").mkdir()
    (tmp_path / "others" / "recall_test.feather").write_bytes(b"")
    layout = ReleaseLayout(tmp_path)
    assert layout.dates_found() == ["2024-01-13", "2024-01-15"]
    assert layout.calendar() == ["2024-01-13", "2024-01-14", "2024-01-15"]
    assert [p.name for p in layout.day("2024-01-14").missing()] == ["2024-01-14.feather"] * 2 + ["2024-01-14.pkl"]
    assert layout.test_file("retrieval_test").name == "recall_test.feather"
    assert layout.test_file("rank_test") is None
    with pytest.raises(RecFlowFormatError, match="no such directory"):
        ReleaseLayout(tmp_path / "nowhere")


@pytest.mark.parametrize("chunk_rows", [1, 3, 7, 10, 100, None])
def test_chunks_of_uneven_record_batches_hold_every_row_once(tmp_path, chunk_rows):
    ids = np.arange(23)
    path = tmp_path / "a.feather"
    bounds = ((0, 2), (2, 11), (11, 11), (11, 23))
    batches = [pa.record_batch({"id": ids[a:b], "flag": ids[a:b] % 2}) for a, b in bounds]
    with pa.ipc.new_file(str(path), batches[0].schema) as writer:  # record batches of 2, 9, 0 and 12 rows
        for batch in batches:
            writer.write_batch(batch)
    chunks = list(iter_feather_columns(path, {"id": "id", "flag": "binary"}, chunk_rows, reserve=4))
    assert np.concatenate([c["id"] for c in chunks]).tolist() == ids.tolist()
    assert all(c["flag"].dtype == np.int8 and c["id"].dtype == np.int32 for c in chunks)
    if chunk_rows is not None:  # at least chunk_rows rows, but for the last; less than a record batch more
        assert all(len(c["id"]) >= chunk_rows for c in chunks[:-1])
        assert all(len(c["id"]) < chunk_rows + 12 for c in chunks)
    tables = list(iter_feather_tables(path, {"flag": "binary", "id": "id"}, chunk_rows))
    assert [t.num_rows for t in tables] == [len(c["id"]) for c in chunks]
    assert all(t.schema.names == ["flag", "id"] and t.schema.types == [pa.int64()] * 2 for t in tables)


def test_a_chunk_takes_rows_in_front_without_a_copy_when_they_fit(tmp_path):
    path = _write(tmp_path / "a.feather", {"id": np.arange(10, 20)}, chunksize=5)
    first, second = iter_feather_columns(path, {"id": "id"}, 5, reserve=3)
    joined = second.with_head({"id": first["id"][-2:]})
    assert joined["id"].tolist() == [13, 14, *range(15, 20)]
    assert np.shares_memory(joined["id"], second["id"])  # written into the free rows before the chunk
    assert first["id"].tolist() == list(range(10, 15))  # the head's own rows are untouched
    big = second.with_head({"id": np.arange(2)})  # only one free row left: concatenated
    assert big["id"].tolist() == [0, 1, *range(15, 20)] and not np.shares_memory(big["id"], second["id"])
