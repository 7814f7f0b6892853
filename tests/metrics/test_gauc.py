"""Tests of stcrank.metrics.gauc against hand-computed values and a brute-force pair count."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stcrank.metrics.gauc import GroupAUC, group_auc
from stcrank.metrics.ranking import BinaryAUC


def brute_force_gauc(preds: list[float], target: list[int], groups: list[int]) -> tuple[float, int, int]:
    """Pair-by-pair AUC of every group (a tie counts half), weighted by the group's number of rows."""
    total, weighted, counted, excluded = 0.0, 0.0, 0, 0
    for group in sorted(set(groups)):
        rows = [i for i, g in enumerate(groups) if g == group]
        pos = [preds[i] for i in rows if target[i] == 1]
        neg = [preds[i] for i in rows if target[i] == 0]
        if not pos or not neg:
            excluded += 1
            continue
        wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
        weighted += len(rows) * wins / (len(pos) * len(neg))
        total += len(rows)
        counted += 1
    return (weighted / total if total else math.nan), counted, excluded


def test_hand_computed_case():
    # User 1: scores .9 .1 .5, labels 1 0 0 -> AUC 1 (3 rows).
    # User 2: scores .2 .8 .4 .4, labels 1 0 1 0 -> pairs (.2,.8)=0 (.2,.4)=0 (.4,.8)=0 (.4,.4)=.5 -> AUC 1/8 (4 rows).
    # User 3: all positive -> excluded. User 4: all negative -> excluded.
    preds = torch.tensor([0.9, 0.1, 0.5, 0.2, 0.8, 0.4, 0.4, 0.7, 0.3, 0.6])
    target = torch.tensor([1, 0, 0, 1, 0, 1, 0, 1, 0, 0])
    groups = torch.tensor([1, 1, 1, 2, 2, 2, 2, 3, 4, 4])
    result = group_auc(preds, target, groups)
    assert result.gauc.item() == pytest.approx((3 * 1.0 + 4 * 0.125) / 7)  # 0.5
    assert int(result.num_groups) == 2
    assert int(result.num_excluded) == 2


def test_single_class_everywhere_is_nan_not_zero():
    result = group_auc(torch.tensor([0.1, 0.9, 0.3]), torch.tensor([1, 1, 0]), torch.tensor([5, 5, 6]))
    assert math.isnan(result.gauc.item())
    assert int(result.num_groups) == 0 and int(result.num_excluded) == 2


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_empty_is_nan():
    metric = GroupAUC()
    values = metric.compute()
    assert math.isnan(values["gauc"].item())
    assert int(values["groups"]) == 0 and int(values["excluded"]) == 0


def test_refuses_bad_inputs():
    with pytest.raises(ValueError, match="NaN"):
        group_auc(torch.tensor([float("nan")]), torch.tensor([1]), torch.tensor([0]))
    with pytest.raises(ValueError, match="0/1"):
        group_auc(torch.tensor([0.5]), torch.tensor([2]), torch.tensor([0]))
    with pytest.raises(ValueError, match="same shape"):
        GroupAUC().update(torch.tensor([0.5, 0.1]), torch.tensor([1, 0]), torch.tensor([0]))
    with pytest.raises(ValueError, match="integer"):
        group_auc(torch.tensor([0.5]), torch.tensor([1]), torch.tensor([0.0]))


def test_one_group_equals_global_auc():
    generator = torch.Generator().manual_seed(0)
    preds = torch.randint(0, 5, (200,), generator=generator).float() / 4  # many ties
    target = torch.randint(0, 2, (200,), generator=generator)
    result = group_auc(preds, target, torch.zeros(200, dtype=torch.long))
    assert result.gauc.item() == pytest.approx(BinaryAUC()(preds, target).item(), abs=1e-6)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 6), st.integers(0, 1), st.integers(-3, 3)),
        min_size=0,
        max_size=40,
    )
)
def test_matches_brute_force(rows):
    # Small integer scores make ties frequent; group ids are unsorted and sparse.
    groups = [g * 7919 - 20 for g, _, _ in rows]
    target = [y for _, y, _ in rows]
    preds = [s / 2 for _, _, s in rows]
    expected, counted, excluded = brute_force_gauc(preds, target, groups)
    result = group_auc(
        torch.tensor(preds, dtype=torch.float32),
        torch.tensor(target, dtype=torch.long),
        torch.tensor(groups, dtype=torch.long),
    )
    if math.isnan(expected):
        assert math.isnan(result.gauc.item())
    else:
        assert result.gauc.item() == pytest.approx(expected, abs=1e-12)
    assert int(result.num_groups) == counted
    assert int(result.num_excluded) == excluded


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 60), st.integers(0, 60))
def test_merged_shards_equal_one_process(seed, left_size, right_size):
    # A group's rows are split between the two shards (what DDP's DistributedSampler does).
    generator = torch.Generator().manual_seed(seed)
    size = left_size + right_size
    preds = torch.randint(0, 4, (size,), generator=generator).float()
    target = torch.randint(0, 2, (size,), generator=generator)
    groups = torch.randint(0, 5, (size,), generator=generator) + 10**12  # beyond float32 precision
    whole, left, right = GroupAUC(), GroupAUC(), GroupAUC()
    whole.update(preds, target, groups)
    left.update(preds[:left_size], target[:left_size], groups[:left_size])
    if right_size:
        right.update(preds[left_size:], target[left_size:], groups[left_size:])
    left.merge_state(right)  # what DDP's "cat" reduction does
    merged, single = left.compute(), whole.compute()
    for key in ("groups", "excluded"):
        assert int(merged[key]) == int(single[key])
    assert torch.equal(merged["gauc"].isnan(), single["gauc"].isnan())
    if not single["gauc"].isnan():
        assert merged["gauc"].item() == single["gauc"].item()


def test_ddp_gather_with_an_empty_shard_keeps_large_ids_exact():
    # torchmetrics sends an empty shard's cat state as an empty float32 tensor; ids must not round to float32.
    preds = torch.tensor([0.9, 0.1, 0.2, 0.8])
    target = torch.tensor([1, 0, 1, 0])
    groups = torch.tensor([2**40, 2**40, 2**40 + 1, 2**40 + 1])
    metric = GroupAUC()
    metric.update(preds, target, groups)

    def gather_with_empty_shard(tensor, group=None):
        return [tensor, torch.tensor([], dtype=torch.float32)]

    metric._sync_dist(gather_with_empty_shard)  # the state exchange of Metric.sync under DDP
    values = metric.compute()
    assert values["gauc"].item() == pytest.approx(0.5)  # one group at 1, one at 0, 2 rows each
    assert int(values["groups"]) == 2


def test_accumulates_over_batches():
    metric = GroupAUC()
    metric.update(torch.tensor([0.9, 0.2]), torch.tensor([1, 0]), torch.tensor([1, 2]))
    metric.update(torch.tensor([0.1, 0.7]), torch.tensor([0, 1]), torch.tensor([1, 2]))
    values = metric.compute()
    assert values["gauc"].item() == pytest.approx(1.0)
    assert int(values["groups"]) == 2 and int(values["excluded"]) == 0
