import functools

import lightning as L
import pytest
import torch

from stcrank.data.recflow.datamodule import RecFlowDataModule
from stcrank.errors import TrainingError
from stcrank.models.din import DIN
from stcrank.plugins import Loss
from stcrank.tasks.base import ZERO_GRADIENT_STEPS
from stcrank.tasks.ranking import RankingTask


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
