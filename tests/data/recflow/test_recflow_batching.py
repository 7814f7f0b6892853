import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from stcrank.data.recflow.batching import DayBatches, DayBatchSampler, SampleKind

SIZES = [1000, 0, 37, 513]


def _keys(sampler):
    return [(day, rows.copy()) for day, rows in sampler]


def test_every_row_once_per_epoch_day_by_day_shuffled_within_days():
    sampler = DayBatchSampler(SIZES, 64, shuffle=True, seed=3)
    keys = _keys(sampler)
    assert len(keys) == len(sampler)
    days = [day for day, _ in keys]
    assert days == sorted(days)
    for day, size in enumerate(SIZES):
        rows = np.concatenate([rows for d, rows in keys if d == day] or [np.zeros(0, int)])
        assert sorted(rows.tolist()) == list(range(size))
        if size > 1:
            assert rows.tolist() != list(range(size))
    assert all(0 < len(rows) <= 64 for _, rows in keys)


def test_seeded_and_reshuffled_every_epoch():
    first = _keys(DayBatchSampler(SIZES, 64, shuffle=True, seed=3))
    again = _keys(DayBatchSampler(SIZES, 64, shuffle=True, seed=3))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    sampler = DayBatchSampler(SIZES, 64, shuffle=True, seed=3)
    sampler.set_epoch(1)
    second = _keys(sampler)
    assert not np.array_equal(first[0][1], second[0][1])
    assert sorted(np.concatenate([r for _, r in first]).tolist()) == sorted(
        np.concatenate([r for _, r in second]).tolist()
    )


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_get_disjoint_complete_shares_in_equal_numbers_of_batches(shuffle, world_size):
    samplers = [
        DayBatchSampler(SIZES, 50, shuffle=shuffle, seed=1, rank=r, world_size=world_size) for r in range(world_size)
    ]
    per_rank = [_keys(s) for s in samplers]
    assert len({len(keys) for keys in per_rank}) == 1 and len(per_rank[0]) == len(samplers[0])
    for day, size in enumerate(SIZES):
        shares = [np.concatenate([rows for d, rows in keys if d == day] or [np.zeros(0, int)]) for keys in per_rank]
        together = np.concatenate(shares)
        assert sorted(together.tolist()) == list(range(size))  # disjoint and complete: no padding, no drop
        if not shuffle and size:
            assert all(np.all(np.diff(share) == 1) for share in shares if len(share))  # contiguous blocks
    assert all(len(rows) <= 50 for keys in per_rank for _, rows in keys)


def _requests_of(size, day):
    # 1 to 6 samples per request, requests in order (as in the store's exposures)
    rng = np.random.default_rng(day)
    return np.repeat(np.arange(size), rng.integers(1, 7, size))[:size]


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_whole_requests_shuffled_together(world_size):
    requests = {day: _requests_of(size, day) for day, size in enumerate(SIZES)}
    samplers = [
        DayBatchSampler(SIZES, 64, shuffle=True, seed=3, rank=r, world_size=world_size, requests=requests.__getitem__)
        for r in range(world_size)
    ]
    per_rank = [_keys(s) for s in samplers]
    assert len({len(keys) for keys in per_rank}) == 1 and len(per_rank[0]) == len(samplers[0])
    assert all(len(rows) <= 64 for keys in per_rank for _, rows in keys)
    for day, size in enumerate(SIZES):
        shares = [np.concatenate([rows for d, rows in keys if d == day] or [np.zeros(0, int)]) for keys in per_rank]
        assert sorted(np.concatenate(shares).tolist()) == list(range(size))  # every sample once
        order = np.concatenate(shares)
        runs = np.flatnonzero(np.diff(requests[day][order])) + 1 if size else []
        # a request's samples are consecutive: one run per request
        assert len(runs) + (1 if size else 0) == len(np.unique(requests[day]))
        if size > 10:
            assert requests[day][order].tolist() != sorted(requests[day][order].tolist())  # requests shuffled
    # requests per batch: about one per 3.5 samples, not one per sample
    batches = [(len(np.unique(requests[day][rows])), len(rows)) for keys in per_rank for day, rows in keys]
    assert all(distinct <= 0.6 * rows for distinct, rows in batches if rows >= 20)


def test_whole_requests_reshuffled_every_epoch_and_the_key_count_checked():
    requests = {day: _requests_of(size, day) for day, size in enumerate(SIZES)}
    sampler = DayBatchSampler(SIZES, 64, shuffle=True, seed=3, requests=requests.__getitem__)
    first = _keys(sampler)
    sampler.set_epoch(1)
    assert not np.array_equal(first[0][1], _keys(sampler)[0][1])
    wrong = DayBatchSampler(SIZES, 64, shuffle=True, requests=lambda day: np.zeros(3, int))
    with pytest.raises(ValueError, match="request keys"):
        _keys(wrong)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        DayBatchSampler([3], 0, shuffle=False)
    with pytest.raises(ValueError, match="rank"):
        DayBatchSampler([3], 2, shuffle=False, rank=2, world_size=2)


class _Day:
    def __init__(self, day: str) -> None:
        self.values = torch.arange(int(day)) + 1000 * int(day)

    def __len__(self):
        return len(self.values)

    def batch(self, index, generator=None):
        return {"value": self.values[index], "noise": torch.rand(1, generator=generator)}


def test_dataset_keeps_one_day_and_gathers_whole_batches(monkeypatch):
    loads = []

    def load(store, day):
        loads.append(day)
        return _Day(day)

    monkeypatch.setattr("stcrank.data.recflow.batching.RecFlowStore", lambda root: None)
    kind = SampleKind(load=load, count=lambda store, day: int(day))
    dataset = DayBatches("unused", ["5", "7"], kind, seed=0)
    sampler = DayBatchSampler([5, 7], 3, shuffle=False)
    batches = list(DataLoader(dataset, batch_size=None, sampler=sampler))
    assert loads == ["5", "7"]
    assert torch.cat([b["value"] for b in batches]).tolist() == [5000 + i for i in range(5)] + [
        7000 + i for i in range(7)
    ]
    again = list(DataLoader(DayBatches("unused", ["5", "7"], kind, seed=0), batch_size=None, sampler=sampler))
    assert all(torch.equal(a["noise"], b["noise"]) for a, b in zip(batches, again, strict=True))
