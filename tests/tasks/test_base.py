import functools

import lightning as L
import pytest
import torch

from stcrank.data.recflow.datamodule import RecFlowDataModule
from stcrank.errors import ConfigError, TrainingError
from stcrank.models.din import DIN
from stcrank.models.features import CONTEXT_FEATURES, ITEM_FEATURES, USER_FEATURES
from stcrank.plugins import Loss
from stcrank.tasks.base import ZERO_GRADIENT_STEPS, step_seed
from stcrank.tasks.ranking import RankingTask

SIZES = dict.fromkeys(CONTEXT_FEATURES + USER_FEATURES + ITEM_FEATURES, 20)


class ConstantLoss(Loss):
    """A loss without information: the same value whatever the scores (zero gradient)."""

    def forward(self, scores, target, mask, weight=None):
        return 0.0 * scores.sum() - 0.0


def _fit(store, max_steps):
    data = RecFlowDataModule(str(store), batch_size=32)
    network = functools.partial(DIN, embedding_dim=4, attention_hidden=8, tower=[8])
    task = RankingTask(network, loss=ConstantLoss(), feature_sizes=data.feature_sizes)
    trainer = L.Trainer(
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(task, datamodule=data)
    return trainer


def test_a_loss_with_zero_gradient_stops_training_and_is_named(recflow_store):
    with pytest.raises(
        TrainingError, match=f"ConstantLoss gave a zero gradient on each of the first {ZERO_GRADIENT_STEPS}"
    ):
        _fit(recflow_store, ZERO_GRADIENT_STEPS + 5)


def test_a_run_shorter_than_the_window_is_checked_at_its_end(recflow_store):
    with pytest.raises(TrainingError, match="first 2 training steps"):
        _fit(recflow_store, 2)


def test_a_loss_with_a_gradient_trains(recflow_store):
    data = RecFlowDataModule(str(recflow_store), batch_size=32)
    network = functools.partial(DIN, embedding_dim=4, attention_hidden=8, tower=[8])
    task = RankingTask(network, feature_sizes=data.feature_sizes)
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(task, datamodule=data)
    assert task._gradient_seen and torch.isfinite(trainer.callback_metrics["train/loss_step"])


def _task(embedding_dim: int = 8, sizes: dict[str, int] = SIZES, **din: object) -> RankingTask:
    return RankingTask(lambda fs: DIN(fs, embedding_dim=embedding_dim, **din), feature_sizes=sizes)


def test_a_checkpoint_of_the_same_network_loads():
    checkpoint = {"state_dict": _task().state_dict()}
    task = _task()
    task.on_load_checkpoint(checkpoint)
    task.load_state_dict(checkpoint["state_dict"])


@pytest.mark.parametrize(
    ("other", "message"),
    [
        (lambda: _task(embedding_dim=16), r"network\.embeddings\.tables\.\w+\.weight is \[20, 8\] in the checkpoint"),
        (
            lambda: _task(sizes={**SIZES, "video_id": 30}),
            r"video_id\.weight is \[20, 8\] in the checkpoint but \[30, 8\]",
        ),
        (lambda: _task(auxiliary_tower=True), r"the checkpoint lacks \d+ weights of this network"),
    ],
    ids=["embedding_dim", "vocabulary", "extra-tower"],
)
def test_a_checkpoint_of_another_network_is_refused_naming_the_weights(other, message):
    checkpoint = {"state_dict": _task().state_dict()}
    with pytest.raises(ConfigError, match=message) as error:
        other().on_load_checkpoint(checkpoint)
    assert "--model.init_args.network.init_args" in str(error.value)


def test_step_seed_depends_on_every_part():
    seeds = {step_seed(0, 0, 0, 0), step_seed(1, 0, 0, 0), step_seed(0, 1, 0, 0), step_seed(0, 0, 1, 0)}
    assert len(seeds | {step_seed(0, 0, 0, 1)}) == 5
    assert step_seed(3, 1, 2, 5) == step_seed(3, 1, 2, 5)


@pytest.mark.parametrize(
    ("setting", "option"),
    [({"ks": [10, 0]}, "ks"), ({"ks": []}, "ks"), ({"lr": 0.0}, "lr"), ({"lr": -1e-3}, "lr")],
    ids=["ks-zero", "ks-empty", "lr-zero", "lr-negative"],
)
def test_ranking_task_refuses_meaningless_settings_naming_the_option(setting, option):
    with pytest.raises(ConfigError, match=rf"^RankingTask: --model\.init_args\.{option} must"):
        RankingTask(lambda fs: DIN(fs), feature_sizes=SIZES, **setting)
