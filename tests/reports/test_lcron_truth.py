"""Tests of the LCRON report's funnel ground truth (stcrank.reports.lcron_truth)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stcrank.data.recflow.cascade_lists import LCRONDataModule
from stcrank.data.recflow.synth import default_item_count
from stcrank.data.recflow.world import SyntheticWorld
from stcrank.metrics.cascade import cascade_values
from stcrank.reports.lcron_truth import FunnelTruth, explain, funnel_truth, truth_markdown


@pytest.fixture(scope="module")
def world():
    # tests/conftest.py generates the session store with users=120, seed=0 and the default funnel.
    return SyntheticWorld.create(120, default_item_count(120, 1000), 0)


def test_oracle_and_block_affinity_against_a_direct_computation(recflow_store, world):
    truth = funnel_truth(str(recflow_store), world, "rank_top")
    module = LCRONDataModule(str(recflow_store), positives="rank_top", shuffle_candidates=False)
    joint, blocks = [], {4: [], 3: [], 2: [], 1: []}
    for batch in module.test_dataloader()[0]:
        mask = batch["candidate_mask"]
        for r in range(mask.shape[0]):
            user = int(batch["user"][r, 0]) - 1
            items = batch["candidates"][r, :, 0].numpy() - 1
            affinity = np.where(mask[r].numpy(), world.affinity(np.full(len(items), user), items.clip(0)), 0.0)
            score = torch.from_numpy(affinity).unsqueeze(0)
            values = cascade_values(score, score, batch["candidate_relevance"][r : r + 1], mask[r : r + 1])
            joint.append(values.joint_recall.item())
            for priority, kept in blocks.items():
                kept += affinity[(batch["candidate_stage"][r] == priority).numpy()].tolist()
    assert truth.requests == len(joint)
    assert truth.oracle["joint_recall"] == pytest.approx(float(np.mean(joint)), abs=1e-5)
    expected = {block: float(np.mean(blocks[p])) for p, block in zip((4, 3, 2, 1), truth.block_affinity, strict=True)}
    assert truth.block_affinity == pytest.approx(expected, abs=1e-4)
    # The generated funnel: later stages hold better-liked items, and the noisy ranking stage's top 10 is mostly,
    # not entirely, the users' true top 10.
    values = list(truth.block_affinity.values())
    assert values == sorted(values, reverse=True)
    assert 0.6 < truth.truth_in_true_top < 1.0
    assert truth.oracle["joint_recall"] > 0.9
    text = truth_markdown(truth)
    assert "Each stage block is better liked than the next" in text and "| rank_pos |" in text


def test_explain_localises_the_stage_and_measures_the_headroom():
    truth = FunnelTruth(
        requests=10, oracle={"joint_recall": 0.99}, truth_in_true_top=0.9, block_affinity={"rank_pos": 1.0}
    )
    means = {
        "LCRON": {"joint_recall": 0.70, "retrieval_recall@10@30": 0.90, "prerank_recall@10@20": 0.60},
        "ARF": {"joint_recall": 0.75, "retrieval_recall@10@30": 0.88, "prerank_recall@10@20": 0.70},
    }
    lines = explain("LCRON", "ARF", "joint_recall", "against", means, truth)
    assert (
        lines[0]
        == "LCRON's pre-rank tower keeps less of the ground truth in its top 20 (0.6000 against 0.7000 for ARF)."
    )
    assert "far below the oracle's 0.9900" in lines[1]
    lines = explain("LCRON", "ARF", "joint_recall", "n.s.", means, None)
    assert lines[0].startswith("LCRON and ARF differ by less than the seed-to-seed variation")
    errors = {"LCRON": {"joint_recall": 0.03}, "ARF": {"joint_recall": 0.004}}
    lines = explain("LCRON", "ARF", "joint_recall", "against", means, None, errors)
    assert lines[-1] == (
        "LCRON varies much more from seed to seed (joint_recall standard error 0.0300 against 0.0040): its training "
        "is unstable on this data."
    )
    close = FunnelTruth(requests=10, oracle={"joint_recall": 0.76}, truth_in_true_top=0.9, block_affinity={})
    assert "saturated" in explain("LCRON", "ARF", "joint_recall", "n.s.", means, close)[-1]
