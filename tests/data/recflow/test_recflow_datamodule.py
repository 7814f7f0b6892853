import itertools
import json
import logging
from collections import Counter

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from stcrank.data.recflow.datamodule import RecFlowDataModule
from stcrank.data.recflow.schema import CANDIDATE_BATCH_KEYS, EXPOSURE_BATCH_KEYS, ITEM_FEATURES, USER_FEATURES
from stcrank.data.recflow.store import RecFlowStore
from stcrank.errors import ConfigError


def _exposure_keys(store, days):
    keys = Counter()
    for day in days:
        data = store.exposures(day, ["request_id", "video_id"])
        keys.update(zip(data["request_id"].tolist(), (data["video_id"] + 1).tolist(), strict=True))
    return keys


def _batch_keys(batches):
    return Counter(
        pair for b in batches for pair in zip(b["request_id"].tolist(), b["item"][:, 0].tolist(), strict=True)
    )


def _day_of_request(store):
    return {int(r): day for day in store.days for r in store.requests(day, ["request_id"])["request_id"]}


def test_batches_follow_the_contract(recflow_store):
    module = RecFlowDataModule(str(recflow_store), batch_size=100, eval_batch_size=16)
    sizes = module.feature_sizes
    assert sizes == json.loads((recflow_store / "manifest.json").read_text())["feature_sizes"]
    batch = next(iter(module.train_dataloader()))
    assert list(batch) == list(EXPOSURE_BATCH_KEYS)
    b = len(batch["label"])
    r = len(batch["user"])  # request-level tensors are held once per request of the batch
    assert 0 < r <= b <= 100
    expected = {
        "context": ((r, 3), torch.int64),
        "user": ((r, 5), torch.int64),
        "item": ((b, 8), torch.int64),
        "seq": ((r, 50, 5), torch.int64),
        "seq_mask": ((r, 50), torch.bool),
        "label": ((b,), torch.float32),
        "request_id": ((b,), torch.int64),
        "request_slot": ((b,), torch.int64),
    }
    assert {k: (tuple(v.shape), v.dtype) for k, v in batch.items()} == expected
    assert sorted(set(batch["request_slot"].tolist())) == list(range(r))
    distinct = batch["request_id"].new_zeros(r).index_copy_(0, batch["request_slot"], batch["request_id"])
    assert len(set(distinct.tolist())) == r  # one slot per distinct request
    for j, name in enumerate(USER_FEATURES):
        assert batch["user"][:, j].min() >= 1 and batch["user"][:, j].max() < sizes[name]
    for j, name in enumerate(ITEM_FEATURES):
        table = {"upload_wday": "wday", "upload_hour": "hour", "upload_minute": "minute"}.get(name, name)
        assert batch["item"][:, j].min() >= 1 and batch["item"][:, j].max() < sizes[table]
    candidates = module.test_dataloader()[1]
    cand = next(iter(candidates))
    assert list(cand) == list(CANDIDATE_BATCH_KEYS)
    r, c = cand["candidate_mask"].shape
    assert r <= 16 and cand["candidates"].shape == (r, c, 8) and cand["candidate_label"].dtype == torch.float32
    assert cand["candidate_stage"].dtype == torch.int64 and cand["seq"].shape == (r, 50, 5)
    assert c == int(cand["candidate_mask"].sum(1).max())


def test_one_epoch_covers_every_training_exposure_once_day_by_day(recflow_store):
    store = RecFlowStore(recflow_store)
    module = RecFlowDataModule(str(recflow_store), batch_size=128, seed=5)
    batches = list(module.train_dataloader())
    assert _batch_keys(batches) == _exposure_keys(store, store.train_days)
    day_of = _day_of_request(store)
    days = [{day_of[r] for r in b["request_id"].tolist()} for b in batches]
    assert all(len(d) == 1 for d in days)  # a batch never mixes days
    visited = [d.pop() for d in days]
    assert visited == sorted(visited)  # chronological
    first_day = torch.cat([b["request_id"] for b, d in zip(batches, visited, strict=True) if d == store.days[0]])
    stored = store.exposures(store.days[0], ["request_id"])["request_id"]
    assert not np.array_equal(first_day.numpy(), stored)  # shuffled within the day


def test_grouped_requests_cover_every_exposure_once_with_fewer_requests_per_batch(recflow_store):
    store = RecFlowStore(recflow_store)
    plain = list(RecFlowDataModule(str(recflow_store), batch_size=128, seed=5).train_dataloader())
    module = RecFlowDataModule(str(recflow_store), batch_size=128, seed=5, group_requests=True)
    batches = list(module.train_dataloader())
    assert _batch_keys(batches) == _exposure_keys(store, store.train_days)
    # whole requests: each request's exposures are consecutive in the epoch (one run per request and day)
    order = torch.cat([b["request_id"] for b in batches]).numpy()
    runs = 1 + int(np.count_nonzero(np.diff(order)))
    assert runs == len(np.unique(order))
    assert sum(len(b["seq"]) for b in batches) < 0.6 * sum(len(b["seq"]) for b in plain)
    requests = [b["request_id"] for b in batches if b["request_id"].numel()]
    assert not all(bool((r[1:] >= r[:-1]).all()) for r in requests)  # requests shuffled, not in store order


def test_deterministic_under_the_seed_and_reshuffled_per_epoch(recflow_store):
    def run(seed, epoch=0):
        loader = RecFlowDataModule(str(recflow_store), batch_size=128, seed=seed).train_dataloader()
        loader.sampler.set_epoch(epoch)
        return [b["request_id"] for b in loader]

    a, b, c, d = run(1), run(1), run(2), run(1, epoch=1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[0], d[0])
    assert sorted(torch.cat(a).tolist()) == sorted(torch.cat(d).tolist())


def test_two_ranks_get_disjoint_complete_shares(recflow_store):
    store = RecFlowStore(recflow_store)
    module = RecFlowDataModule(str(recflow_store), batch_size=64, eval_batch_size=32)
    train = [list(module.train_dataloader(rank=r, world_size=2)) for r in range(2)]
    assert len(train[0]) == len(train[1])
    shares = [_batch_keys(batches) for batches in train]
    assert not set(shares[0]) & set(shares[1])
    assert shares[0] + shares[1] == _exposure_keys(store, store.train_days)
    evaluation = [module.evaluation_dataloaders(store.test_day, rank=r, world_size=2) for r in range(2)]
    exposures = [_batch_keys(loaders[0]) for loaders in evaluation]
    assert exposures[0] + exposures[1] == _exposure_keys(store, [store.test_day])
    requests = [torch.cat([b["request_id"] for b in loaders[1]]).tolist() for loaders in evaluation]
    assert len(requests[0] + requests[1]) == len(set(requests[0] + requests[1]))
    assert set(requests[0] + requests[1]) == set(store.requests(store.test_day, ["request_id"])["request_id"].tolist())


def test_candidate_stages_and_training_on_requests(recflow_store):
    coarse = RecFlowDataModule(
        str(recflow_store), eval_batch_size=64, candidate_stages=["realshow", "rank_neg", "coarse_neg"]
    )
    stages = torch.cat([b["candidate_stage"][b["candidate_mask"]] for b in coarse.test_dataloader()[1]])
    assert set(stages.unique().tolist()) == {2, 3, 5, 6}
    requests = RecFlowDataModule(str(recflow_store), batch_size=32, sample_kind="requests")
    batch = next(iter(requests.train_dataloader()))
    assert list(batch) == list(CANDIDATE_BATCH_KEYS)


def test_invalid_arguments(recflow_store):
    with pytest.raises(ValueError, match="sample_kind"):
        RecFlowDataModule(str(recflow_store), sample_kind="pairs")
    with pytest.raises(ValueError, match="candidate_stages"):
        RecFlowDataModule(str(recflow_store), candidate_stages=["shown"])
    with pytest.raises(ValueError, match=r"--data\.train_days 2023-01-01: no such day in the store"):
        RecFlowDataModule(str(recflow_store), train_days=["2023-01-01"])
    with pytest.raises(Exception, match="unknown plugin"):
        RecFlowDataModule(str(recflow_store), label="no_such_label")


@pytest.mark.parametrize(
    ("days", "message"),
    [
        (lambda d: {"train_days": [d["test_day"], *d["train_days"]]}, r"--data\.train_days includes the test day"),
        (
            lambda d: {"train_days": d["train_days"], "test_day": d["train_days"][0]},
            r"test day .* \(--data\.test_day\)",
        ),
        (lambda d: {"train_days": d["train_days"][:1], "val_day": d["train_days"][0]}, "includes the validation day"),
        (lambda d: {"train_days": d["train_days"][:1] * 2}, r"--data\.train_days repeats"),
    ],
    ids=["test-day", "given-test-day", "val-day", "repeated"],
)
def test_overlapping_days_are_refused(recflow_store, days, message):
    manifest = json.loads((recflow_store / "manifest.json").read_text())
    with pytest.raises(ConfigError, match=message):
        RecFlowDataModule(str(recflow_store), **days(manifest))


def test_validating_on_the_test_day_is_allowed_with_a_warning(recflow_store, caplog):
    test_day = json.loads((recflow_store / "manifest.json").read_text())["test_day"]
    with caplog.at_level(logging.WARNING, logger="stcrank.data.recflow.datamodule"):
        module = RecFlowDataModule(str(recflow_store), val_day=test_day)
    assert module.val_day == test_day and test_day not in module.train_days
    assert f"--data.val_day is the test day {test_day}" in caplog.text and "biases the test score" in caplog.text


@pytest.mark.parametrize(
    "setting",
    [{"batch_size": 0}, {"eval_batch_size": -1}, {"num_workers": -1}, {"chunk_rows": 0}, {"max_candidates": 0}],
    ids=lambda setting: next(iter(setting)),
)
def test_non_positive_sizes_are_refused_naming_the_option(recflow_store, setting):
    with pytest.raises(ConfigError, match=rf"^RecFlowDataModule: --data\.{next(iter(setting))} must"):
        RecFlowDataModule(str(recflow_store), **setting)


def test_helpers_for_samplers(recflow_store):
    module = RecFlowDataModule(str(recflow_store))
    store = RecFlowStore(recflow_store)
    corpus = module.exposed_corpus(store.days[1])
    assert corpus.dtype == torch.int64 and corpus.min() >= 1
    assert torch.equal(corpus - 1, torch.from_numpy(store.exposed_corpus(store.days[1]).astype(np.int64)))
    lists = module.stage_lists(store.days[0], ["prerank_neg"])
    assert len(lists.offsets) == len(lists.request_id) + 1
    request_id, seq, mask = module.request_sequences(store.days[0])
    assert seq.shape == (len(request_id), 50, 5) and mask.shape == (len(request_id), 50)


class _Recorder(pl.LightningModule):
    """Fits a logistic regression on the item id and records what each step saw."""

    def __init__(self, sizes):
        super().__init__()
        self.embedding = torch.nn.Embedding(sizes["video_id"], 1)
        self.seen = {}

    def training_step(self, batch, batch_idx):
        self.seen.setdefault(self.current_epoch, []).append(batch["request_id"].clone())
        logits = self.embedding(batch["item"][:, 0]).squeeze(-1)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["label"])

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        self.seen.setdefault(f"test{dataloader_idx}", []).append(batch["request_id"].clone())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
def test_lightning_fits_two_epochs_and_tests_on_two_loaders(recflow_store, tmp_path):
    module = RecFlowDataModule(str(recflow_store), batch_size=512, eval_batch_size=128, seed=0)
    model = _Recorder(module.feature_sizes)
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=module)
    first, second = (torch.cat(model.seen[e]) for e in (0, 1))
    assert sorted(first.tolist()) == sorted(second.tolist()) and not torch.equal(first, second)
    trainer.test(model, datamodule=module, verbose=False)
    store = RecFlowStore(recflow_store)
    assert len(torch.cat(model.seen["test0"])) == len(store.exposures(store.test_day, ["request_id"])["request_id"])
    assert len(torch.cat(model.seen["test1"])) == len(store.requests(store.test_day, ["request_id"])["request_id"])


def test_worker_processes_keep_the_order(recflow_store):
    def run(workers):
        module = RecFlowDataModule(str(recflow_store), batch_size=256, num_workers=workers)
        return [b["request_id"] for b in module.train_dataloader()]

    assert all(torch.equal(a, b) for a, b in zip(run(0), run(2), strict=True))


def test_day_parts_bound_memory_and_yield_every_sample_once(recflow_store):
    store = RecFlowStore(recflow_store)
    day = store.train_days[0]
    total = int(store.requests(day, ["stage_count"])["stage_count"].sum())
    chunk_rows = total // 7
    parts = store.day_parts(day, chunk_rows)
    assert (
        len(parts) >= 7
        and parts[0].start == 0
        and parts[-1].stop == len(store.requests(day, ["request_id"])["request_id"])
    )
    assert all(a.stop == b.start and a.candidate_stop == b.candidate_start for a, b in itertools.pairwise(parts))
    assert all(p.candidate_stop - p.candidate_start <= chunk_rows or p.stop - p.start == 1 for p in parts)
    # a part view sees only its requests, candidates and exposures, aligned with each other
    view = store.part(parts[2])
    offsets = view.stage_offsets(day)
    assert offsets[0, 0] == 0 and offsets[-1, -1] == parts[2].candidate_stop - parts[2].candidate_start
    exposures = view.exposures(day, ["request_row", "request_id"])
    requests = view.requests(day, ["request_id"])["request_id"]
    assert np.array_equal(requests[exposures["request_row"]], exposures["request_id"])

    chunked = RecFlowDataModule(str(recflow_store), batch_size=50, chunk_rows=chunk_rows, seed=3)
    whole = RecFlowDataModule(str(recflow_store), batch_size=50, chunk_rows=None, seed=3)
    for kind in ("exposures", "requests"):
        chunked.sample_kind = whole.sample_kind = kind
        for epoch in range(2):
            loaders = [m.train_dataloader() for m in (chunked, whole)]
            for loader in loaders:
                loader.sampler.set_epoch(epoch)
            got, expected = ([b for b in loader] for loader in loaders)
            if kind == "exposures":
                assert _batch_keys(got) == _batch_keys(expected) == _exposure_keys(store, store.train_days)
            else:
                ids = Counter(r for b in got for r in b["request_id"].tolist())
                assert ids == Counter(r for b in expected for r in b["request_id"].tolist())
                assert set(ids.values()) == {1}
                n_candidates = sum(int(b["candidate_mask"].sum()) for b in got)
                assert n_candidates == sum(int(b["candidate_mask"].sum()) for b in expected)
            # the day order is kept: every batch of a day comes before the next day's
            days = [_day_of_request(store)[int(b["request_id"][0])] for b in got]
            assert days == sorted(days)
    # a day that fits in one part behaves exactly as before
    one = RecFlowDataModule(str(recflow_store), batch_size=50, chunk_rows=10**9, seed=3)
    whole.sample_kind = "exposures"
    first, second = next(iter(one.train_dataloader())), next(iter(whole.train_dataloader()))
    assert all(torch.equal(first[k], second[k]) for k in first)
