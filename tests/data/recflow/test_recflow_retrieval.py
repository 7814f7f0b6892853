import numpy as np
import pytest
import torch

from stcrank.data.recflow.retrieval import (
    EVAL_BATCH_KEYS,
    TRAIN_BATCH_KEYS,
    RecFlowRetrievalDataModule,
    pad_lists,
)
from stcrank.data.recflow.store import RecFlowStore
from stcrank_plugins.negative_samplers.stage import StageHardNegativeSampler


def _positives_by_request(store: RecFlowStore, day: str) -> dict[int, list[int]]:
    requests = store.requests(day, ["request_id"])["request_id"]
    data = store.exposures(day, ["request_row", "video_id", "effective_view"])
    out: dict[int, list[int]] = {}
    for row, video, view in zip(data["request_row"], data["video_id"], data["effective_view"], strict=True):
        if view == 1:
            out.setdefault(int(requests[row]), []).append(int(video) + 1)
    return out


def _stage_items(store: RecFlowStore, day: str, stage: str, clicked: int | None = None) -> dict[int, set[int]]:
    requests = store.requests(day, ["request_id"])["request_id"]
    lists = store.stage_lists(day, [stage], columns=("video_id", "effective_view"))
    out: dict[int, set[int]] = {}
    for r, rid in enumerate(requests):
        begin, end = lists.offsets[r], lists.offsets[r + 1]
        keep = np.ones(end - begin, dtype=bool)
        if clicked is not None:
            keep = lists.columns["effective_view"][begin:end] == clicked
        out[int(rid)] = {int(v) + 1 for v in lists.columns["video_id"][begin:end][keep]}
    return out


def test_pad_lists_gathers_csr_rows():
    offsets = torch.tensor([0, 2, 2, 5])
    values = torch.tensor([7, 8, 1, 2, 3])
    matrix, mask = pad_lists(offsets, values, torch.tensor([2, 1, 0]))
    assert matrix.tolist() == [[1, 2, 3], [0, 0, 0], [7, 8, 0]]
    assert mask.sum(dim=1).tolist() == [3, 0, 2]


def test_training_batches_are_the_effective_views_with_uniform_negatives(recflow_store):
    module = RecFlowRetrievalDataModule(str(recflow_store), batch_size=256, seed=3)
    store = module.store
    day = module.train_days[0]
    batches = list(module.train_dataloader())
    first_day = _positives_by_request(store, day)
    expected = sum(len(v) for d in module.train_days for v in _positives_by_request(store, d).values())
    assert sum(len(b["items"]) for b in batches) == expected  # every effective view once, nothing dropped
    batch = batches[0]
    assert tuple(batch) == TRAIN_BATCH_KEYS
    size = len(batch["items"])
    assert batch["items"].shape == (size, 201) and batch["seq"].shape == (size, 50)
    assert batch["label"][:, 0].eq(1).all() and batch["label"][:, 1:].eq(0).all()
    assert batch["item_priority"][:, 0].eq(6).all() and batch["item_priority"][:, 1:].eq(0).all()
    assert batch["item_mask"].all()
    corpus = torch.from_numpy(store.exposed_corpus(day).astype(np.int64) + 1)
    assert torch.isin(batch["items"][:, 1:], corpus).all()
    assert not (batch["items"][:, 1:] == batch["items"][:, :1]).any()
    for rid, target in zip(batch["request_id"].tolist(), batch["items"][:, 0].tolist(), strict=True):
        assert target in first_day[rid]
    # the sequence is the request's stored behaviour sequence
    request_id, columns, valid = store.sequences(day, ["video_id"])
    row = int(np.searchsorted(request_id, int(batch["request_id"][0])))
    assert batch["seq"][0].tolist() == ((columns["video_id"][row] + 1) * valid[row]).tolist()
    assert batch["seq_mask"][0].tolist() == valid[row].tolist()


def test_training_batches_are_reproducible_under_the_seed(recflow_store):
    def first(seed):
        return next(iter(RecFlowRetrievalDataModule(str(recflow_store), batch_size=64, seed=seed).train_dataloader()))

    a, b, c = first(1), first(1), first(2)
    assert all(torch.equal(a[k], b[k]) for k in TRAIN_BATCH_KEYS)
    assert not torch.equal(a["items"], c["items"])


@pytest.mark.parametrize("stage", ["prerank_neg", "rerank_pos", "exposure_neg", "realshow"])
def test_stage_negatives_come_from_the_examples_own_request(recflow_store, stage):
    sampler = StageHardNegativeSampler({stage: 3}, num_negatives=10)
    module = RecFlowRetrievalDataModule(str(recflow_store), batch_size=512, negative_sampler=sampler)
    day = module.train_days[0]
    if stage == "exposure_neg":
        pools = _stage_items(module.store, day, "realshow", clicked=0)
    else:
        pools = _stage_items(module.store, day, stage)
    batch = next(iter(module.train_dataloader()))
    assert batch["items"].shape[1] == 11
    hard, hard_mask = batch["items"][:, 8:], batch["item_mask"][:, 8:]
    assert (
        batch["item_priority"][:, 8:][hard_mask]
        .eq(1 if stage == "prerank_neg" else 4 if stage == "rerank_pos" else 5)
        .all()
    )
    empty = 0
    for rid, target, items, mask in zip(
        batch["request_id"].tolist(), batch["items"][:, 0].tolist(), hard.tolist(), hard_mask.tolist(), strict=True
    ):
        eligible = pools[rid] - {target}
        if eligible:
            assert all(mask) and set(items) <= eligible
        else:
            empty += 1
            assert not any(mask) and set(items) == {0}
    if stage == "exposure_neg":
        assert 0 < empty < len(hard)  # the generated funnel has requests with and without unwatched exposures


def test_evaluation_covers_every_request_with_a_positive_once(recflow_store):
    module = RecFlowRetrievalDataModule(str(recflow_store), eval_batch_size=50)
    expected = _positives_by_request(module.store, module.test_day)
    (loader,) = module.test_dataloader()
    seen: dict[int, list[int]] = {}
    for batch in loader:
        assert tuple(batch) == EVAL_BATCH_KEYS
        for rid, items, mask in zip(
            batch["request_id"].tolist(), batch["positives"].tolist(), batch["positive_mask"].tolist(), strict=True
        ):
            assert rid not in seen
            seen[rid] = [v for v, m in zip(items, mask, strict=True) if m]
    assert {k: sorted(v) for k, v in seen.items()} == {k: sorted(v) for k, v in expected.items()}
    # two processes split the requests without overlap or loss
    shards = [module.evaluation_dataloaders(module.test_day, rank, 2)[0] for rank in (0, 1)]
    ids = [set(torch.cat([b["request_id"] for b in shard]).tolist()) for shard in shards]
    assert not ids[0] & ids[1] and ids[0] | ids[1] == set(expected)


def test_retrieval_corpus_is_every_exposed_video(recflow_store):
    module = RecFlowRetrievalDataModule(str(recflow_store))
    store = module.store
    exposed = np.unique(np.concatenate([store.exposures(d, ["video_id"])["video_id"] for d in store.days]))
    corpus = module.retrieval_corpus()
    assert corpus.tolist() == (exposed.astype(np.int64) + 1).tolist()
    for day in store.days:
        assert set((store.exposures(day, ["video_id"])["video_id"] + 1).tolist()) <= set(corpus.tolist())


def test_unknown_pool_and_sample_kind_are_refused(recflow_store):
    class Odd(StageHardNegativeSampler):
        pool_names = ("corpus", "rank_top")

    module = RecFlowRetrievalDataModule(str(recflow_store), negative_sampler=Odd({"prerank_neg": 1}))
    with pytest.raises(ValueError, match="unknown negative pools"):
        next(iter(module.train_dataloader()))
    with pytest.raises(ValueError, match="sample_kind"):
        RecFlowRetrievalDataModule(str(recflow_store), sample_kind="pairs")
