import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stcrank.cli import main

EXPERIMENT = Path(__file__).resolve().parents[2] / "configs/experiments/recflow/rank/din_baseline.yaml"


def _test_day(store: Path) -> str:
    return json.loads((store / "manifest.json").read_text())["test_day"]


@pytest.fixture(scope="module")
def trained(recflow_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("din")
    args = ["-c", str(EXPERIMENT), f"--data.root={recflow_store}", f"--trainer.default_root_dir={root}"]
    args += [f"--trainer.logger.init_args.save_dir={root}", "--data.batch_size=256", "--seed_everything=0"]
    fitted = main(["fit", *args])
    checkpoint = Path(fitted.trainer.checkpoint_callback.last_model_path)
    tested = main(["test", *args, f"--ckpt_path={checkpoint}"])
    return {
        "args": args,
        "checkpoint": checkpoint,
        "metrics": dict(tested.trainer.callback_metrics),
        "task": tested.model,
        "data": tested.datamodule,
    }


@pytest.mark.slow
def test_din_learns_the_generated_preference(trained):
    metrics = trained["metrics"]
    assert metrics["test/auc"] > 0.6, metrics
    assert 0 < metrics["test/logloss"] < 0.7
    for k in (50, 100, 200):
        assert 0 <= metrics[f"test/recflow_recall@{k}"] <= 1
        assert 0 <= metrics[f"test/ndcg@{k}"] <= 1
    assert metrics["test/recflow_recall@50"] <= metrics["test/recflow_recall@200"]


@pytest.mark.slow
def test_checkpoint_reloads_with_the_same_metrics(trained):
    again = main(["test", *trained["args"], f"--ckpt_path={trained['checkpoint']}"])
    for name, value in trained["metrics"].items():
        assert torch.isclose(again.trainer.callback_metrics[name], value, atol=1e-6), name


def _test_day_predictions(task, data) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Exposure probabilities and flattened candidate scores of the test day, as plain tensors."""
    exposures, candidates = data.test_dataloader()
    task.eval()
    with torch.no_grad():
        probability = torch.cat([torch.sigmoid(task.network(batch)) for batch in exposures])
        label = torch.cat([batch["label"] for batch in exposures]).long()
        # request-level tensors are held once per request: each row's user through its request_slot
        user = torch.cat([batch["user"][batch.get("request_slot", slice(None)), 0] for batch in exposures])
        request_id = torch.cat([batch["request_id"] for batch in exposures])
        scores, target, request, offset = [], [], [], 0
        for batch in candidates:
            mask = batch["candidate_mask"]
            rows = torch.arange(offset, offset + mask.shape[0]).unsqueeze(1).expand_as(mask)
            scores.append(task.network.score_candidates(batch)[mask])
            target.append(batch["candidate_label"][mask])
            request.append(rows[mask])
            offset += mask.shape[0]
    flat = {"preds": torch.cat(scores), "target": torch.cat(target), "indexes": torch.cat(request)}
    return {"preds": probability, "target": label, "user": user, "request": request_id}, flat


@pytest.mark.slow
def test_logged_test_metrics_equal_the_functional_metrics_of_the_predictions(trained):
    from torchmetrics.functional.classification import binary_auroc

    from stcrank.metrics import functional as F
    from stcrank.metrics.gauc import group_auc

    exposures, candidates = _test_day_predictions(trained["task"], trained["data"])
    expected = {
        "test/auc": binary_auroc(exposures["preds"], exposures["target"]),
        "test/logloss": F.binary_log_loss(exposures["preds"], exposures["target"]),
    }
    for grouping in ("user", "request"):
        gauc = group_auc(exposures["preds"], exposures["target"], exposures[grouping])
        expected[f"test/gauc_{grouping}"] = gauc.gauc
        expected[f"test/gauc_{grouping}_excluded"] = gauc.num_excluded
    for k in trained["task"].ks:
        expected[f"test/recflow_recall@{k}"] = F.recflow_recall(**candidates, k=k)
        expected[f"test/recflow_ndcg@{k}"] = F.recflow_ndcg(**candidates, k=k)
        expected[f"test/recall@{k}"] = F.normalized_recall(**candidates, k=k)
        expected[f"test/ndcg@{k}"] = F.normalized_ndcg(**candidates, k=k)
    logged = trained["metrics"]
    assert set(logged) == set(expected)
    assert 0 < float(expected["test/recflow_recall@50"]) < 1  # the comparison is not between trivial values
    assert 0 < float(expected["test/gauc_user"]) < 1 and float(expected["test/gauc_request_excluded"]) > 0
    for name, value in expected.items():
        assert float(logged[name]) == pytest.approx(float(value), abs=1e-6), name


def _fit_metrics(store: Path, root: Path, extra: list[str]) -> dict[str, float]:
    command = [sys.executable, "-m", "stcrank", "fit", "-c", str(EXPERIMENT), f"--data.root={store}"]
    command += [f"--data.val_day={_test_day(store)}", f"--trainer.default_root_dir={root}"]
    command += [f"--trainer.logger.init_args.save_dir={root}", "--seed_everything=0", *extra]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    rows = list(csv.DictReader(next(root.rglob("metrics.csv")).open()))
    return {key: float(value) for row in rows for key, value in row.items() if key.startswith("val/") and value}


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_agrees_with_one_process(recflow_store, tmp_path):
    single = _fit_metrics(recflow_store, tmp_path / "single", ["--data.batch_size=256", "--trainer.devices=1"])
    ddp = _fit_metrics(
        recflow_store,
        tmp_path / "ddp",
        ["--data.batch_size=128", "--trainer.strategy=ddp", "--trainer.accelerator=cpu", "--trainer.devices=2"],
    )
    assert set(single) == set(ddp) and "val/auc" in single
    assert abs(single["val/auc"] - ddp["val/auc"]) < 0.02, (single, ddp)
    assert abs(single["val/logloss"] - ddp["val/logloss"]) < 0.02, (single, ddp)
    assert abs(single["val/recflow_recall@50"] - ddp["val/recflow_recall@50"]) < 0.05, (single, ddp)


COARSE_BASELINE = EXPERIMENT.parents[1] / "coarse/baseline.yaml"


@pytest.mark.slow
def test_dssm_learns_the_generated_preference(recflow_store, tmp_path):
    args = ["-c", str(COARSE_BASELINE), f"--data.root={recflow_store}", f"--trainer.default_root_dir={tmp_path}"]
    args += [f"--trainer.logger.init_args.save_dir={tmp_path}", "--data.batch_size=128", "--seed_everything=0"]
    fitted = main(["fit", *args])
    tested = main(["test", *args, f"--ckpt_path={fitted.trainer.checkpoint_callback.last_model_path}"])
    metrics = tested.trainer.callback_metrics
    assert metrics["test/auc"] > 0.6, metrics
    assert metrics["test/recflow_recall@50"] <= metrics["test/recflow_recall@200"]


def _variant(store, network, network_args, loss, data_args, list_target="candidate_stage"):
    from stcrank.data.recflow.ranking_data import RecFlowRankingDataModule
    from stcrank.tasks.ranking import RankingTask

    data = RecFlowRankingDataModule(str(store), batch_size=64, **data_args)
    task = RankingTask(
        network=lambda sizes: network(sizes, **network_args),
        loss=loss,
        feature_sizes=data.feature_sizes,
        list_target=list_target,
    )
    return task, next(iter(data.train_dataloader()))


def _variants():
    from stcrank.models.din import DIN
    from stcrank.models.dssm import DSSM
    from stcrank_plugins.losses.auxiliary import AuxiliaryRankingLoss
    from stcrank_plugins.losses.cascade import FSLTRLoss, PositiveRankLoss
    from stcrank_plugins.negative_samplers.extra import StageExtraNegativeSampler

    extra = {"sample_kind": "extra_negatives", "negative_sampler": StageExtraNegativeSampler(["rank_neg"], 2)}
    lists = {"sample_kind": "request_lists"}
    aux = {"sample_kind": "aux_exposures"}
    ubm = {"competing_stage": "rank_pos"}
    group = FSLTRLoss(
        negatives_of={7: [2, 3, 4, 5, 6], 6: [2, 3, 4, 5], 5: [2, 3], 4: [2, 3]},
        priority_weights={7: 1.0, 6: 0.5, 5: 0.05, 4: 0.05},
        normalize="group",
    )
    return {
        "dssm_extra": (DSSM, {}, "bce", extra, "candidate_stage"),
        "dssm_fsltr": (DSSM, {}, FSLTRLoss(), lists, "candidate_stage"),
        "dssm_positive_rank": (DSSM, {}, PositiveRankLoss(), lists, "candidate_stage"),
        "dssm_aux": (DSSM, {}, AuxiliaryRankingLoss(0.1), aux, "candidate_stage"),
        "dssm_ubm": (DSSM, {"competing": True}, "bce", ubm, "candidate_stage"),
        "din_extra": (DIN, {}, "bce", extra, "candidate_stage"),
        "din_fsltr_groups": (DIN, {}, group, lists, "candidate_slot"),
        "din_aux_tower": (DIN, {"auxiliary_tower": True}, AuxiliaryRankingLoss(0.1), aux, "candidate_stage"),
        "din_ubm": (DIN, {"competing": True}, "bce", ubm, "candidate_stage"),
    }


@pytest.mark.parametrize("name", list(_variants()))
def test_each_variant_trains_and_its_loss_decreases(recflow_store, name):
    torch.manual_seed(0)
    network, network_args, loss, data_args, list_target = _variants()[name]
    task, batch = _variant(recflow_store, network, network_args, loss, data_args, list_target)
    optimizer = torch.optim.Adam(task.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        optimizer.zero_grad()
        value = task.training_step(batch, 0)
        value.backward()
        optimizer.step()
        losses.append(float(value))
    assert all(map(math.isfinite, losses)) and losses[0] > 0
    assert losses[-1] < 0.8 * losses[0], losses


def test_auxiliary_step_uses_the_separate_tower_only_for_the_ranking_term(recflow_store):
    from stcrank.models.din import DIN
    from stcrank_plugins.losses.auxiliary import AuxiliaryRankingLoss

    torch.manual_seed(0)
    task, batch = _variant(
        recflow_store, DIN, {"auxiliary_tower": True}, AuxiliaryRankingLoss(0.1), {"sample_kind": "aux_exposures"}
    )
    loss = task.training_step(batch, 0)
    label = batch["label"][:, None]
    bce = torch.nn.functional.binary_cross_entropy_with_logits(task.network(batch), batch["label"])
    aux = task.network.auxiliary_scores(batch)
    pairs = batch["aux_mask"] * label
    bpr = (pairs * torch.nn.functional.softplus(-(aux[:, :1] - aux[:, 1:]))).sum() / pairs.sum()
    assert torch.isclose(loss, bce + 0.1 * bpr, atol=1e-5)


CONFIGS = Path(__file__).resolve().parents[2] / "configs/experiments/recflow"


def _fit_args(config: Path, store: Path, root: Path) -> list[str]:
    return ["fit", "-c", str(config), f"--data.root={store}", f"--trainer.logger.init_args.save_dir={root}"]


def test_a_list_loss_on_point_wise_exposures_is_refused(recflow_store, tmp_path):
    from stcrank.errors import ConfigError

    args = _fit_args(EXPERIMENT, recflow_store, tmp_path)
    with pytest.raises(
        ConfigError, match=r"--model.loss fs_ltr compares the items of a list.*--data.sample_kind requests"
    ):
        main([*args, "--model.loss", "fs_ltr"])
    with pytest.raises(ConfigError, match=r"--model\.loss bpr compares the items of a list"):
        main([*args, "--model.loss", "bpr", "--trainer.fast_dev_run=true"])


def test_stage_items_the_loss_does_not_read_are_refused(recflow_store, tmp_path):
    from stcrank.errors import ConfigError

    args = _fit_args(CONFIGS / "rank/aux_ranking.yaml", recflow_store, tmp_path)
    with pytest.raises(ConfigError, match=r"--data\.sample_kind aux_exposures adds stage items .* --model\.loss bce"):
        main([*args, "--model.loss", "bce", "--model.network.auxiliary_tower=false"])
    with pytest.raises(
        ConfigError, match=r"--model\.loss AuxiliaryRankingLoss .* --data\.sample_kind exposures brings no stage"
    ):
        main([*args, "--data.sample_kind", "exposures"])


def test_extra_negatives_from_stages_without_rows_are_refused(recflow_store, tmp_path, monkeypatch):
    from stcrank.data.recflow.datamodule import RecFlowDataModule
    from stcrank.errors import ConfigError

    monkeypatch.setattr(RecFlowDataModule, "stage_rows", lambda self, days, stages: 0)
    args = _fit_args(CONFIGS / "rank/extra_rank_neg_n1.yaml", recflow_store, tmp_path)
    with pytest.raises(ConfigError, match=r"--data.negative_sampler: the stages \['rank_neg'\] hold no row"):
        main([*args, "--trainer.fast_dev_run=true"])


@pytest.mark.slow
def test_predict_scores_every_stage_candidate_as_the_test_does(trained, tmp_path):
    from stcrank.tuning.predictions import read_predictions

    path = tmp_path / "din.parquet"
    main(["predict", *trained["args"], f"--ckpt_path={trained['checkpoint']}", f"--predictions={path}"])
    cached = read_predictions(path)
    assert cached.tasks == ("effective_view",) and {"request_id", "item_id", "stage"} <= set(cached.extra)
    _, candidates = _test_day_predictions(trained["task"], trained["data"])
    assert cached.num_rows == candidates["preds"].numel()
    # the same loader order as the test's candidates: the rows are the candidates, scored by the trained weights
    expected = torch.sigmoid(candidates["preds"]).double()
    assert torch.allclose(cached.predictions["effective_view"], expected, atol=1e-6)
    assert torch.equal(cached.labels["effective_view"], candidates["target"].bool())


def test_predict_of_the_coarse_ranker_writes_its_rows(recflow_store, tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "dssm.parquet"
    args = ["predict", "-c", str(CONFIGS / "coarse/baseline.yaml"), f"--data.root={recflow_store}", "--untrained"]
    main([*args, f"--trainer.logger.init_args.save_dir={tmp_path}", f"--predictions={path}"])
    table = pq.read_table(path)
    assert table.schema.names == [
        "request_id",
        "item_id",
        "pred_effective_view",
        "label_effective_view",
        "mask_effective_view",
        "stage",
    ]
    stages = set(table.column("stage").to_pylist())
    assert 2 in stages  # coarse_neg candidates are part of the coarse ranker's inference space


def test_expected_ties_option_reaches_the_candidate_metrics(recflow_store, tmp_path):
    from stcrank.errors import ConfigError

    args = _fit_args(EXPERIMENT, recflow_store, tmp_path)
    # In process jsonargparse wraps the ConfigError; the command line prints its one line (tests/test_cli.py).
    with pytest.raises((ConfigError, ValueError), match=r"--model\.ties random: unknown; choose one of"):
        main([*args, "--model.ties", "random", "--trainer.fast_dev_run=true"])
    test_args = ["test", *args[1:], "--untrained=true", "--trainer.logger=false"]
    metrics = {}
    for ties in ("pessimistic", "expected"):
        tested = main([*test_args, f"--model.ties={ties}"])
        assert tested.model.test_metrics["candidates"].ties == ties
        metrics[ties] = {k: float(v) for k, v in tested.trainer.callback_metrics.items()}
    # Untrained float scores hardly tie: the two rules agree to rounding, and both were computed.
    assert metrics["expected"]["test/recflow_recall@50"] == pytest.approx(
        metrics["pessimistic"]["test/recflow_recall@50"]
    )
