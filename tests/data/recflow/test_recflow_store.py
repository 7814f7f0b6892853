import json

import numpy as np
import pytest

from stcrank.data.recflow.errors import RecFlowFormatError
from stcrank.data.recflow.schema import N_STAGES, STAGE_CODE
from stcrank.data.recflow.store import RecFlowStore, read_manifest

DAY = "2024-01-14"


@pytest.fixture(scope="module")
def store(recflow_store):
    return RecFlowStore(recflow_store)


def test_manifest_is_required_and_checked(tmp_path, recflow_store):
    with pytest.raises(RecFlowFormatError, match="not a RecFlow store"):
        read_manifest(tmp_path)
    manifest = json.loads((recflow_store / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(RecFlowFormatError, match="version 99"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(RecFlowFormatError, match="corrupt manifest"):
        read_manifest(tmp_path)


@pytest.mark.parametrize(
    ("change", "found"),
    [
        ({"days": ["../../etc"]}, "'days' is not a list of YYYY-MM-DD dates"),
        ({"test_day": "2030-01-01"}, "'test_day' is not one of the days"),
        ({"feature_sizes": {"video_id": "big"}}, "'feature_sizes' is not a map of positive ints"),
        ({"files": {"../outside.parquet": {"rows": 1, "bytes": 1, "sha256": "x"}}}, "lies outside the store"),
        ({"files": {"days/2024-01-13/requests.parquet": {"rows": "1"}}}, "lacks its rows, bytes or sha256"),
        ({"files": None}, "'files' is missing"),
    ],
)
def test_a_manifest_that_would_lead_reads_astray_is_refused(tmp_path, recflow_store, change, found):
    manifest = json.loads((recflow_store / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, **change}))
    with pytest.raises(RecFlowFormatError, match=found):
        RecFlowStore(tmp_path)


def test_days_and_errors(store):
    assert store.days == ["2024-01-13", "2024-01-14", "2024-01-15"] and store.test_day == "2024-01-15"
    assert store.feature_sizes["hour"] == 26
    with pytest.raises(ValueError, match="not in the store"):
        store.requests("2024-02-01")
    with pytest.raises(ValueError, match="unknown stage"):
        store.stage_lists(DAY, ["exposed"])


def test_stage_offsets_index_the_candidates(store):
    offsets = store.stage_offsets(DAY)
    stage = store.candidates(DAY, ["stage"])["stage"]
    assert offsets.shape[1] == N_STAGES + 1 and offsets[-1, -1] == len(stage) and offsets[0, 0] == 0
    assert np.array_equal(offsets[1:, 0], offsets[:-1, -1])
    for request in (0, 7, len(offsets) - 1):
        for code in range(N_STAGES):
            assert np.all(stage[offsets[request, code] : offsets[request, code + 1]] == code)


def test_stage_lists_are_csr_per_request(store):
    lists = store.stage_lists(DAY, ["rank_pos", "prerank_neg"], columns=["video_id", "author_id"])
    offsets = store.stage_offsets(DAY)
    video = store.candidates(DAY, ["video_id"])["video_id"]
    assert len(lists.offsets) == len(lists.request_id) + 1
    for request in (0, 3, len(offsets) - 1):
        expected = np.concatenate(
            [
                video[offsets[request, STAGE_CODE["rank_pos"]] : offsets[request, STAGE_CODE["rank_pos"] + 1]],
                video[offsets[request, STAGE_CODE["prerank_neg"]] : offsets[request, STAGE_CODE["prerank_neg"] + 1]],
            ]
        )
        got = lists.columns["video_id"][lists.offsets[request] : lists.offsets[request + 1]]
        assert np.array_equal(got, expected)
    assert set(np.unique(lists.columns["stage"]).tolist()) == {STAGE_CODE["rank_pos"], STAGE_CODE["prerank_neg"]}


def test_exposed_corpus_accumulates(store):
    corpora = [store.exposed_corpus(day) for day in store.days]
    seen = np.zeros(0, dtype=np.int64)
    for day, corpus in zip(store.days, corpora, strict=True):
        seen = np.union1d(seen, store.exposures(day, ["video_id"])["video_id"])
        assert np.array_equal(corpus, seen)


def test_sequences(store):
    request_id, values, valid = store.sequences(DAY, ["video_id", "request_id"])
    assert np.array_equal(request_id, store.requests(DAY, ["request_id"])["request_id"])
    assert values["video_id"].shape == valid.shape == (len(request_id), 50)
    assert np.all(values["video_id"][~valid] == 0) and np.all((values["request_id"] < request_id[:, None])[valid])
    with pytest.raises(ValueError, match="unknown sequence columns"):
        store.sequences(DAY, ["colour"])
