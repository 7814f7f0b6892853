import re

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from stcrank.data.recflow.batching import DayBatchSampler
from stcrank.data.resumable import ResumableDataLoader
from stcrank.errors import ConfigError


class _Rows(Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, key):
        day, rows = key
        return torch.as_tensor(day * 1000 + np.asarray(rows))


def _loader(world_size: int = 1, rank: int = 0, num_workers: int = 0) -> ResumableDataLoader:
    sampler = DayBatchSampler([23, 0, 17, 9], 4, shuffle=True, seed=3, rank=rank, world_size=world_size)
    return ResumableDataLoader(_Rows(), sampler=sampler, batch_size=None, num_workers=num_workers)


def _epoch(loader: ResumableDataLoader, epoch: int) -> list[list[int]]:
    loader.sampler.set_epoch(epoch)
    return [batch.tolist() for batch in loader]


@pytest.mark.parametrize("consumed", [0, 1, 5, 6, 7, 12])
def test_a_resumed_loader_yields_the_rest_of_the_epoch_in_order(consumed):
    full = _epoch(_loader(), 1)
    first = _loader()
    first.sampler.set_epoch(1)
    iterator = iter(first)
    for _ in range(consumed):
        next(iterator)
    state = first.state_dict()
    assert (state["epoch"], state["batches"]) == (1, consumed)

    resumed = _loader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(1)  # Lightning sets the same epoch again after restoring: the resume point stays
    rest = [batch.tolist() for batch in resumed]
    assert rest == full[consumed:]
    assert (resumed.state_dict()["epoch"], resumed.state_dict()["batches"]) == (1, len(full))
    assert _epoch(resumed, 2) == _epoch(_loader(), 2)  # the next epoch is whole again


def test_a_finished_epoch_resumes_at_the_next_one():
    loader = _loader()
    loader.load_state_dict({"epoch": 0, "batches": len(loader)})
    assert loader.sampler.epoch == 1 and loader.sampler.pending_batches == 0


def test_another_epoch_drops_the_resume_point():
    loader = _loader()
    loader.load_state_dict({"epoch": 0, "batches": 3})
    loader.sampler.set_epoch(1)
    assert _epoch(loader, 1) == _epoch(_loader(), 1)


def test_ranks_resume_their_own_shares():
    for rank in range(2):
        full = _epoch(_loader(2, rank), 0)
        resumed = _loader(2, rank)
        resumed.load_state_dict({"epoch": 0, "batches": 4})
        assert [b.tolist() for b in resumed] == full[4:]


def test_workers_resume_at_the_same_batch():
    full = _epoch(_loader(), 0)
    resumed = _loader(num_workers=2)
    resumed.load_state_dict({"epoch": 0, "batches": 5})
    assert [b.tolist() for b in resumed] == full[5:]


def test_malformed_state_is_refused():
    with pytest.raises(ValueError, match="epoch"):
        _loader().load_state_dict({"batches": 2})
    with pytest.raises(ValueError, match=">= 0"):
        _loader().load_state_dict({"epoch": 0, "batches": -1})


def test_the_state_holds_the_settings_of_the_epoch_order():
    loader = _loader()
    loader.settings = {"--data.sample_kind": "exposures"}
    state = loader.state_dict()
    assert state["order"] == {"batch_size": 4, "seed": 3, "shuffle": True, "world_size": 1, "day_sizes": [23, 0, 17, 9]}
    assert state["settings"] == {"--data.sample_kind": "exposures"}


@pytest.mark.parametrize(
    ("change", "option"),
    [
        ({"batch_size": 5}, "--data.batch_size: 4 in the checkpoint, 5 now"),
        ({"seed": 4}, "--data.seed: 3 in the checkpoint, 4 now"),
        ({"day_sizes": [23, 0, 17]}, "the training data (--data.root, --data.train_days, --data.chunk_rows)"),
        ({"world_size": 2}, "the number of processes"),
    ],
    ids=["batch_size", "seed", "data", "world_size"],
)
def test_resuming_under_other_settings_is_refused_naming_the_option(change, option):
    saved = _loader().state_dict() | {"batches": 2}
    settings = {"day_sizes": [23, 0, 17, 9], "batch_size": 4, "seed": 3, "world_size": 1} | change
    sampler = DayBatchSampler(
        settings["day_sizes"],
        settings["batch_size"],
        shuffle=True,
        seed=settings["seed"],
        world_size=settings["world_size"],
    )
    other = ResumableDataLoader(_Rows(), sampler=sampler, batch_size=None)
    with pytest.raises(ConfigError, match=re.escape(option)):
        other.load_state_dict(saved)
    assert other.sampler.pending_batches == 0  # nothing was restored


def test_resuming_under_another_data_module_setting_is_refused():
    saved = _loader()
    saved.settings = {"--data.train_days": ["2024-01-13", "2024-01-14"]}
    state = saved.state_dict()
    other = _loader()
    other.settings = {"--data.train_days": ["2024-01-14"]}
    with pytest.raises(ConfigError, match=r"--data\.train_days: \['2024-01-13', '2024-01-14'\] in the checkpoint"):
        other.load_state_dict(state)


def test_a_state_without_settings_is_accepted():
    loader = _loader()
    loader.load_state_dict({"epoch": 0, "batches": 3})  # a checkpoint written before settings were saved
    assert loader.sampler.pending_batches == 3
