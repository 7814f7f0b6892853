import pytest

from stcrank.data.recflow.ranking_data import RecFlowRankingDataModule
from stcrank.plugins import NegativeSampler
from stcrank_plugins.negative_samplers.extra import StageExtraNegativeSampler


def _keys(loader):
    return sorted(next(iter(loader)))


def test_every_kind_covers_its_samples_once(recflow_store):
    sampler = StageExtraNegativeSampler(["rank_neg"], per_stage=2)
    for kind, extra in (
        ("extra_negatives", {"negative_sampler": sampler}),
        ("request_lists", {}),
        ("aux_exposures", {}),
    ):
        data = RecFlowRankingDataModule(str(recflow_store), batch_size=200, sample_kind=kind, **extra)
        loader = data.train_dataloader()
        sizes = [len(batch["request_id"]) for batch in loader]
        kind_of = data.sample_kinds()[kind]
        assert sum(sizes) == sum(kind_of.count(data.store, day) for day in data.train_days)


def test_competing_items_reach_training_and_both_evaluation_loaders(recflow_store):
    data = RecFlowRankingDataModule(
        str(recflow_store), batch_size=64, sample_kind="aux_exposures", competing_stage="rank_pos", competing_size=4
    )
    batch = next(iter(data.train_dataloader()))
    assert batch["competing"].shape[1:] == (50, 4, 5) and "aux_items" in batch
    exposures, candidates = data.test_dataloader()
    assert "competing" in _keys(exposures) and "competing" in _keys(candidates)
    coarse = RecFlowRankingDataModule(
        str(recflow_store), candidate_stages=["realshow", "rank_pos", "coarse_neg"], eval_batch_size=8
    )
    assert "competing" not in _keys(coarse.test_dataloader()[1])


def test_invalid_arguments(recflow_store):
    with pytest.raises(ValueError, match="negative_sampler"):
        RecFlowRankingDataModule(str(recflow_store), sample_kind="extra_negatives")
    with pytest.raises(ValueError, match="competing_stage"):
        RecFlowRankingDataModule(str(recflow_store), competing_stage="rank")
    with pytest.raises(ValueError, match="aux_stages"):
        RecFlowRankingDataModule(str(recflow_store), aux_stages=["click"])
    with pytest.raises(ValueError, match="unknown slot"):
        RecFlowRankingDataModule(str(recflow_store), list_slots={"clicked": 2})

    class Unsized(NegativeSampler):
        def sample(self, pools, targets, generator):
            raise AssertionError("never drawn")

    data = RecFlowRankingDataModule(str(recflow_store), sample_kind="extra_negatives", negative_sampler=Unsized())
    with pytest.raises(TypeError, match="stages"):
        data.train_dataloader()
