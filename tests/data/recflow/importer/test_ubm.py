"""The day's ubm table: values in their domain, in (request, stage) order without overflow, repeated keys as a dict."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pytest

from stcrank.data.recflow.errors import RecFlowFormatError
from stcrank.data.recflow.importer import import_recflow
from stcrank.data.recflow.store import RecFlowStore

DAY = "2024-01-13"


def _load(path):
    with open(path, "rb") as file:  # files written by the tests themselves
        return pickle.load(file)


def _dump(obj, path):
    with open(path, "wb") as file:
        pickle.dump(obj, file, protocol=4)


def _set_column(path, name, change):
    table = feather.read_table(path)
    values = change(table.column(name).to_numpy().copy())
    feather.write_feather(table.set_column(table.column_names.index(name), name, pa.array(values)), str(path))


def test_a_ubm_effective_view_of_300_is_refused_not_wrapped(make_release, tmp_path):
    release = make_release(days=1)
    path = release / "ubm_seq_request_id_dict" / f"{DAY}.pkl"
    ubm = _load(path)
    key = next(k for k, v in ubm.items() if "realshow" in v and len(v["realshow"]))
    ubm[key]["realshow"] = ubm[key]["realshow"].copy()
    ubm[key]["realshow"][0, 7] = 300
    _dump(ubm, path)
    with pytest.raises(
        RecFlowFormatError,
        match=r"'effective_view' \(index 7 of the arrays\) has values in \[0, 300\]; expected 0 or 1",
    ):
        import_recflow(src=str(release), dst=str(tmp_path / "store"))


@pytest.mark.parametrize("ubm", ["pickle", "all_stage"])
def test_request_ids_straddling_2_60_keep_their_ubm_rows(make_release, tmp_path, ubm):
    release = make_release(days=2, history_days=0)
    ids = np.unique(
        np.concatenate(
            [
                feather.read_table(release / "all_stage" / f"{d}.feather")["request_id"].to_numpy()
                for d in ("2024-01-13", "2024-01-14")
            ]
        )
    )
    offset = 2**60 - int(ids[len(ids) // 2])  # half of the requests below 2**60, half above
    for table in ("all_stage", "realshow"):
        for day in ("2024-01-13", "2024-01-14"):
            _set_column(release / table / f"{day}.feather", "request_id", lambda v: v + offset)
    for name in ("retrieval_test", "coarse_rank_test", "rank_test"):
        _set_column(release / "others" / f"{name}.feather", "request_id", lambda v: v + offset)
    for day in ("2024-01-13", "2024-01-14"):
        path = release / "seq_effective_50_dict" / f"{day}.pkl"
        seq = {}
        for key, value in _load(path).items():
            value = value.copy()
            value[:, 9] = np.where(value[:, 7] > 0, value[:, 9] + offset, 0)
            seq[key + offset] = value
        _dump(seq, path)
        path = release / "ubm_seq_request_id_dict" / f"{day}.pkl"
        _dump({key + offset: value for key, value in _load(path).items()}, path)
    import_recflow(src=str(release), dst=str(tmp_path / "store"), ubm=ubm)
    store = RecFlowStore(tmp_path / "store")
    expected = _load(release / "ubm_seq_request_id_dict" / "2024-01-14.pkl")
    requests = np.array(sorted(expected), dtype=np.int64)
    assert (requests < 2**60).any() and (requests >= 2**60).any()
    lists = store.ubm_stage_lists("2024-01-14", requests, ["rank_pos"])
    for i, request in enumerate(requests.tolist()):
        got = lists.columns["video_id"][lists.offsets[i] : lists.offsets[i + 1]]
        want = expected[request].get("rank_pos", np.zeros((0, 8), np.int64))[:, 0]
        assert got.tolist() == want.tolist(), request


def test_a_request_repeated_in_the_ubm_pickle_keeps_its_last_value(make_release, tmp_path):
    release = make_release(days=1)
    path = release / "ubm_seq_request_id_dict" / f"{DAY}.pkl"
    ubm = _load(path)
    first = next(iter(ubm))
    replacement = {"rank_pos": np.full((2, 8), 1, np.int64)}
    from stcrank.data.recflow.pickles import DictPickleWriter

    with DictPickleWriter(path) as writer:  # the same key twice in one dict pickle, the later value last
        writer.write(ubm.items())
        writer.write([(first, replacement)])
    assert pickle.loads(path.read_bytes())[first]["rank_pos"].tolist() == replacement["rank_pos"].tolist()
    import_recflow(src=str(release), dst=str(tmp_path / "store"))
    lists = RecFlowStore(tmp_path / "store").ubm_stage_lists(DAY, np.array([first]), ["rank_pos", "realshow"])
    assert lists.columns["video_id"].tolist() == [1, 1]
