"""Tests of the LCRON benchmark's cascade lists and data module (stcrank.data.recflow.cascade_lists)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from stcrank.data.recflow.cascade_lists import (
    CASCADE_BATCH_KEYS,
    CASCADE_BLOCKS,
    LCRON_TEST_DAY,
    LCRON_TRAIN_DAYS,
    NEGATIVE_GRADES,
    CascadeListDay,
    LCRONDataModule,
    resolve_days,
)
from stcrank.data.recflow.errors import RecFlowFormatError
from stcrank.data.recflow.schema import (
    ITEM_FEATURES,
    STAGE_CODE,
    STAGE_PRIORITY,
    STORE_FORMAT,
    STORE_FORMAT_VERSION,
)
from stcrank.data.recflow.store import RecFlowStore
from stcrank.errors import ConfigError
from stcrank_plugins.losses.two_stage.common import LCRON_NEGATIVE_GRADES


def test_protocol_constants():
    assert LCRON_TRAIN_DAYS[0] == "2024-01-13" and LCRON_TRAIN_DAYS[-1] == "2024-02-03"
    assert len(LCRON_TRAIN_DAYS) == 22 and LCRON_TEST_DAY == "2024-02-04"
    # The losses read stage blocks from the same grades the lists carry.
    assert sorted(NEGATIVE_GRADES.values()) == sorted(LCRON_NEGATIVE_GRADES)


def expected_lists(store: RecFlowStore, day: str, positives: str, per_block: int = 10):
    """Brute force: per request, the first ``per_block`` rows of each block, with their relevance and priority."""
    offsets = store.stage_offsets(day)
    data = store.candidates(day, ["flags", "rank_index", *ITEM_FEATURES])
    out = []
    for r in range(len(offsets)):
        rows = list(range(offsets[r, 0], offsets[r, -1]))
        taken: set[int] = set()
        lists = []
        for stage in CASCADE_BLOCKS:
            if stage == "rank_pos" and positives == "rank_top":
                members = [i for i in rows if 0 <= data["rank_index"][i] < 10]
            else:
                members = [i for i in rows if data["flags"][i] >> STAGE_CODE[stage] & 1 and i not in taken]
            taken.update(members)
            for i in members[:per_block]:
                grade = 30 - int(data["rank_index"][i]) if stage == "rank_pos" else NEGATIVE_GRADES[stage]
                item = tuple(int(data[n][i]) + 1 for n in ITEM_FEATURES)
                lists.append((item, float(grade), STAGE_PRIORITY[stage]))
        out.append(sorted(lists))
    return out


@pytest.mark.parametrize("positives", ["rank_pos", "rank_top"])
def test_lists_against_brute_force(recflow_store, positives):
    store = RecFlowStore(recflow_store)
    day = store.days[0]
    lists = CascadeListDay(store, day, positives=positives)
    expected = expected_lists(store, day, positives)
    assert len(lists) == len(expected)
    batch = lists.batch(torch.arange(len(lists)), torch.Generator().manual_seed(0))
    assert set(batch) == set(CASCADE_BATCH_KEYS)
    assert batch["candidates"].shape == (len(lists), 40, 8)
    for r in range(0, len(lists), 5):
        mask = batch["candidate_mask"][r]
        got = sorted(
            zip(
                [tuple(row) for row in batch["candidates"][r][mask].tolist()],
                batch["candidate_relevance"][r][mask].tolist(),
                batch["candidate_stage"][r][mask].tolist(),
                strict=True,
            )
        )
        assert got == expected[r]
        assert batch["candidates"][r][~mask].abs().sum() == 0
        assert batch["candidate_relevance"][r][~mask].abs().sum() == 0
    if positives == "rank_top":  # the generator logs every one of the ranking stage's top 10
        assert bool(((batch["candidate_relevance"] > 7).sum(1) == 10).all())
    else:  # only the top items the re-rank dropped carry the rank_pos flag: about 6 a request
        assert (batch["candidate_relevance"] > 7).sum(1).float().mean().item() < 8


def test_candidate_order_is_seeded_and_says_nothing_about_the_stage(recflow_store):
    store = RecFlowStore(recflow_store)
    lists = CascadeListDay(store, store.days[0], positives="rank_top")
    rows = torch.arange(len(lists))
    one = lists.batch(rows, torch.Generator().manual_seed(1))
    two = lists.batch(rows, torch.Generator().manual_seed(1))
    assert all(torch.equal(one[k], two[k]) for k in one)
    # The first slot holds each stage about equally often (10 of 40 each).
    first = one["candidate_stage"][:, 0]
    for priority in (4, 3, 2, 1):
        assert 0.15 < (first == priority).float().mean().item() < 0.35
    fixed = CascadeListDay(store, store.days[0], positives="rank_top", shuffle_candidates=False)
    assert bool((fixed.batch(rows)["candidate_stage"][:, :10] == 4).all())


def test_rank_index_outside_the_grades_is_refused(recflow_store):
    store = RecFlowStore(recflow_store)

    class Shifted(RecFlowStore):
        def candidates(self, day, columns=None):
            data = super().candidates(day, columns)
            if "rank_index" in data:
                data["rank_index"] = data["rank_index"] + 20  # rank_pos items now reach 29: relevance 1
            return data

    with pytest.raises(RecFlowFormatError, match=r"candidates.parquet: .* rank_index outside \[0, 22\]"):
        CascadeListDay(Shifted(store.root), store.days[0])


def test_parts_give_the_same_lists_as_whole_days(recflow_store):
    whole = LCRONDataModule(str(recflow_store), batch_size=50, chunk_rows=None, shuffle_candidates=False)
    parts = LCRONDataModule(str(recflow_store), batch_size=50, chunk_rows=20_000, shuffle_candidates=False)
    assert len(parts.day_parts(parts.train_days[:1], False)[0]) > 1

    def collect(module):
        out = {}
        for batch in module.train_dataloader():
            for r, request in enumerate(batch["request_id"].tolist()):
                out[request] = (batch["candidates"][r].tolist(), batch["candidate_relevance"][r].tolist())
        return out

    assert collect(whole) == collect(parts)


def test_evaluation_is_sharded_without_loss_or_repeat(recflow_store):
    module = LCRONDataModule(str(recflow_store), eval_batch_size=64)
    seen = []
    for rank in range(3):
        (loader,) = module.evaluation_dataloaders(module.test_day, rank=rank, world_size=3)
        seen += [request for batch in loader for request in batch["request_id"].tolist()]
    requests = RecFlowStore(recflow_store).requests(module.test_day, ["request_id"])["request_id"]
    assert sorted(seen) == sorted(requests.tolist())
    assert len(module.val_dataloader()) == 0 and len(module.test_dataloader()) == 1


def fake_store(tmp_path: Path, days: list[str], test_day: str) -> str:
    root = tmp_path / "store"
    root.mkdir()
    manifest = {
        "format": STORE_FORMAT,
        "format_version": STORE_FORMAT_VERSION,
        "days": days,
        "test_day": test_day,
        "train_days": [day for day in days if day != test_day],
        "feature_sizes": {"video_id": 10},
        "files": {},
        "rows": {},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return str(root)


def test_days_follow_the_release_when_the_store_has_it(tmp_path):
    days = [*LCRON_TRAIN_DAYS, LCRON_TEST_DAY, "2024-02-05", "2024-02-18"]
    root = fake_store(tmp_path, days, "2024-02-18")
    for rule in ("auto", "release"):
        train, test, line = resolve_days(root, rule, None, None, None)
        assert train == list(LCRON_TRAIN_DAYS) and test == LCRON_TEST_DAY
        assert line.startswith("LCRON's dates")
    train, test, _ = resolve_days(root, "store", None, None, None)
    assert test == "2024-02-18" and train == [*LCRON_TRAIN_DAYS, LCRON_TEST_DAY, "2024-02-05"]
    train, test, _ = resolve_days(root, "auto", ["2024-01-20"], "2024-02-05", None)
    assert train == ["2024-01-20"] and test == "2024-02-05"


def test_days_map_onto_a_generated_store(tmp_path):
    root = fake_store(tmp_path, ["2024-01-13", "2024-01-14", "2024-01-15", "2024-01-16"], "2024-01-16")
    train, test, line = resolve_days(root, "auto", None, None, "2024-01-15")
    assert train == ["2024-01-13", "2024-01-14"] and test == "2024-01-16"
    assert line == "the store's days: training 2024-01-13 .. 2024-01-14 (2 days), test 2024-01-16"
    # 23 days (22 for training, 1 for test), 4 of which the store holds.
    with pytest.raises(ConfigError, match=r"--data.days release: the store .* lacks 19 of LCRON's days.*days store"):
        resolve_days(root, "release", None, None, None)
    with pytest.raises(ConfigError, match=r"--data\.days must be"):
        resolve_days(root, "all", None, None, None)


def test_data_module_logs_the_days_and_checks_its_options(recflow_store, caplog):
    with caplog.at_level(logging.WARNING):
        module = LCRONDataModule(str(recflow_store))
    manifest = json.loads((recflow_store / "manifest.json").read_text())
    assert module.test_day == manifest["test_day"] and module.train_days == manifest["train_days"]
    assert "the store's days" in caplog.text
    assert set(module.feature_sizes) >= {"video_id", "user_id"}
    with pytest.raises(ConfigError, match=r"--data\.positives"):
        LCRONDataModule(str(recflow_store), positives="top")
    with pytest.raises(ConfigError, match=r"--data\.per_block"):
        LCRONDataModule(str(recflow_store), per_block=0)
    with pytest.raises(ConfigError, match=r"--data\.days release"):
        LCRONDataModule(str(recflow_store), days="release")


def test_train_batches_cover_every_request_once(recflow_store):
    module = LCRONDataModule(str(recflow_store), batch_size=100, positives="rank_top")
    store = RecFlowStore(recflow_store)
    expected = np.concatenate([store.requests(d, ["request_id"])["request_id"] for d in module.train_days])
    seen = [r for batch in module.train_dataloader() for r in batch["request_id"].tolist()]
    assert sorted(seen) == sorted(expected.tolist())
