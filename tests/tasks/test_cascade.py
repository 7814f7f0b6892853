"""Tests of the two-stage cascade task: every LCRON benchmark loss learns the generated funnel's ground truth."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from stcrank.cli import main
from stcrank.data.recflow.cascade_lists import LCRONDataModule
from stcrank.errors import ConfigError
from stcrank.metrics.cascade import CascadeMetrics, cascade_values
from stcrank.models.dssm import DSSM
from stcrank.tasks.cascade import TwoStageCascadeTask

EXPERIMENTS = Path(__file__).resolve().parents[2] / "configs/experiments/lcron"
LOSSES = ["bce", "icc", "rankflow", "fs_ranknet", "fs_lambdaloss", "arf", "lcron"]
SET_METRICS = ("retrieval_recall@10@30", "prerank_recall@10@20", "joint_recall")


@pytest.fixture
def one_thread():
    # Small models on a shared machine: more threads only contend (the reports run one thread too).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _test_day(store: Path) -> str:
    return json.loads((store / "manifest.json").read_text())["test_day"]


@pytest.fixture(scope="module")
def random_metrics(recflow_store):
    """The cascade metrics of random scores on the test day's lists (mean of 30 draws)."""
    module = LCRONDataModule(str(recflow_store), positives="rank_top")
    metric = CascadeMetrics()
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        for batch in module.test_dataloader()[0]:
            mask = batch["candidate_mask"]
            first, second = torch.rand(mask.shape, generator=generator), torch.rand(mask.shape, generator=generator)
            metric.update(first, second, batch["candidate_relevance"], mask)
    return {name: value.item() for name, value in metric.compute().items()}


def _fit_metrics(loss: str, store: Path, root: Path, seed: int) -> dict[str, float]:
    fitted = main(
        [
            "fit",
            "-c",
            str(EXPERIMENTS / f"{loss}.yaml"),
            f"--data.root={store}",
            f"--data.val_day={_test_day(store)}",
            "--data.positives=rank_top",
            "--data.batch_size=64",
            "--trainer.max_epochs=3",
            f"--trainer.default_root_dir={root}",
            f"--trainer.logger.init_args.save_dir={root}",
            "--trainer.enable_progress_bar=false",
            f"--seed_everything={seed}",
        ]
    )
    return {k.removeprefix("val/"): v.item() for k, v in fitted.trainer.callback_metrics.items()}


@pytest.mark.slow
@pytest.mark.parametrize("loss", LOSSES)
def test_two_stage_task_beats_random_on_the_cascade_metrics(loss, recflow_store, random_metrics, tmp_path, one_thread):
    # Known answer: the ground truth is the generated ranking stage's top 10, a noisy function of the users' and
    # items' features; three passes over ~700 training requests must put it through the cascade better than chance.
    assert random_metrics["joint_recall"] == pytest.approx(0.5, abs=0.01)  # 20 of 40 survive at random
    if loss != "lcron":
        metrics = _fit_metrics(loss, recflow_store, tmp_path, seed=0)
        for name in SET_METRICS:
            assert metrics[name] > random_metrics[name] + 0.03, (name, metrics, random_metrics)
        assert metrics["joint_recall"] > random_metrics["joint_recall"] + 0.1, (metrics, random_metrics)
        return
    # LCRON's pre-rank tower learns only through relaxed top-k probabilities (NeuralSort at tau 50), whose
    # gradients are weak and noisy on ~700 requests: from one seed to the next its pre-rank recall lands anywhere
    # between 0.39 and 0.67 (random: 0.5), see docs/lcron.md. Its retrieval tower and the joint recall it optimises
    # must still beat chance on average over seeds.
    runs = [_fit_metrics(loss, recflow_store, tmp_path / str(seed), seed) for seed in range(3)]
    mean = {name: sum(run[name] for run in runs) / len(runs) for name in SET_METRICS}
    assert mean["retrieval_recall@10@30"] > random_metrics["retrieval_recall@10@30"] + 0.03, (runs, random_metrics)
    assert mean["joint_recall"] > random_metrics["joint_recall"] + 0.03, (runs, random_metrics)


@pytest.mark.slow
def test_logged_test_metrics_equal_the_functional_metrics_of_the_predictions(recflow_store, tmp_path, one_thread):
    args = ["-c", str(EXPERIMENTS / "lcron.yaml"), f"--data.root={recflow_store}", "--data.batch_size=128"]
    args += [f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}"]
    args += ["--trainer.enable_progress_bar=false", "--seed_everything=0"]
    fitted = main(["fit", *args])
    tested = main(["test", *args, f"--ckpt_path={fitted.trainer.checkpoint_callback.last_model_path}"])
    task, data = tested.model, tested.datamodule
    task.eval()
    values, counted = [], []
    with torch.no_grad():
        for batch in data.test_dataloader()[0]:
            scores = task.stage_scores(batch)
            out = cascade_values(scores[:, 0], scores[:, 1], batch["candidate_relevance"], batch["candidate_mask"])
            values.append(torch.stack([out[i] for i in range(5)], 1))
            counted.append(out.counted)
    values = torch.cat(values)[torch.cat(counted)].mean(0)
    logged = tested.trainer.callback_metrics
    for index, name in enumerate(task.test_metrics.names):
        assert logged[f"test/{name}"].item() == pytest.approx(values[index].item(), abs=1e-6), name
    # The loss's learned stage weights are trained with the towers and saved in the checkpoint.
    assert not torch.equal(task.loss.stage_weight.detach(), torch.ones(2))


def test_configuration_errors(recflow_store):
    sizes = LCRONDataModule(str(recflow_store)).feature_sizes
    network = functools.partial(DSSM, user_tower=[8], item_tower=[8])
    with pytest.raises(ConfigError, match=r"--model\.loss BCELoss is not a two-stage loss"):
        TwoStageCascadeTask(network, network, loss="bce", feature_sizes=sizes)
    with pytest.raises(ConfigError, match=r"--model\.second_k \(31\) must not exceed --model\.first_k \(30\)"):
        TwoStageCascadeTask(network, network, second_k=31, feature_sizes=sizes)
    with pytest.raises(ValueError, match="feature_sizes"):
        TwoStageCascadeTask(network, network)


def test_step_scores_both_towers(recflow_store):
    module = LCRONDataModule(str(recflow_store), batch_size=16)
    network = functools.partial(DSSM, user_tower=[8], item_tower=[8])
    task = TwoStageCascadeTask(network, network, loss="lcron", feature_sizes=module.feature_sizes)
    batch = next(iter(module.train_dataloader()))
    scores = task.stage_scores(batch)
    assert scores.shape == (batch["candidates"].shape[0], 2, 40)
    # The optimiser covers both towers and the loss's own weights.
    optimised = {id(p) for group in task.configure_optimizers().param_groups for p in group["params"]}
    assert id(task.loss.stage_weight) in optimised
    assert {id(p) for p in task.first_network.parameters()} <= optimised
    predicted = task.predict_step(batch, 0)
    assert torch.equal(predicted["request_id"], batch["request_id"])


def test_an_evaluation_without_batches_logs_nothing(recflow_store, monkeypatch):
    module = LCRONDataModule(str(recflow_store), batch_size=16)
    network = functools.partial(DSSM, user_tower=[8], item_tower=[8])
    task = TwoStageCascadeTask(network, network, feature_sizes=module.feature_sizes)
    task._trainer = SimpleNamespace(world_size=1)
    logged = []
    monkeypatch.setattr(task, "log_dict", lambda values, **kwargs: logged.append(values))
    task.on_validation_epoch_end()
    assert logged == []  # zeros would read as a model that recalls nothing
    task.validation_step(next(iter(module.train_dataloader())), 0)
    task.on_validation_epoch_end()
    assert set(logged[0]) == {f"val/{name}" for name in task.val_metrics.names}
