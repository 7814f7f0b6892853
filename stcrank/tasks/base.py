"""The base of every stcrank task (a :class:`~lightning.pytorch.LightningModule`)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule
from torch.optim import Optimizer

from stcrank.errors import ConfigError, TrainingError

ZERO_GRADIENT_STEPS = 10
"""Training stops with :class:`~stcrank.errors.TrainingError` when the first this many steps all had a zero
gradient (or every step of a shorter run did): the loss has nothing to learn from the batches it is given."""


def step_seed(base: int, rank: int, epoch: int, batch_idx: int) -> int:
    """The seed of one training batch's randomness, a function of ``(base seed, rank, epoch, batch)`` only.

    Args:
        base: The run's seed (``seed_everything``).
        rank: The process's global rank.
        epoch: The epoch.
        batch_idx: The batch's index within the epoch.

    Returns:
        A 63-bit seed.
    """
    words = np.random.SeedSequence([base % 2**64, rank, epoch, batch_idx]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


class BaseTask(LightningModule):
    """Base LightningModule of stcrank tasks.

    Subclasses build their network from ``feature_sizes`` (the vocabulary size of every categorical feature),
    which the command line links from the data module's ``feature_sizes`` when both are instantiated, so a
    config never repeats the dataset's vocabulary sizes.

    Before every training batch the global torch generator is re-seeded with :func:`step_seed` of the run's seed
    (``seed_everything``'s, else torch's initial seed), the rank, the epoch and the batch index. Randomness drawn
    in the training step (dropout, in-model sampling) therefore does not depend on what ran before in the process,
    and a run resumed from a mid-epoch checkpoint draws exactly what the uninterrupted run drew (Lightning does
    not checkpoint random-number generators).

    A run whose first :data:`ZERO_GRADIENT_STEPS` training steps (or every step of a shorter run) all leave every
    parameter's gradient at exactly zero stops with :class:`~stcrank.errors.TrainingError` naming the loss: such a
    loss (e.g. a pair-wise loss on batches without pairs) would train nothing while its metrics still print.

    Attributes:
        monitor: The logged metric that checkpoints and early stopping watch by default.
        mode: ``"max"`` or ``"min"`` for :attr:`monitor`.
    """

    monitor: str = "val_loss"
    mode: str = "min"

    _base_seed: int | None = None
    _gradient_seen: bool = False
    _zero_gradient_steps: int = 0
    _last_loss: float | None = None

    def metric_sets(self) -> dict[str, list[str]]:
        """The evaluation sets and the metrics logged on each (names without the ``val/``/``test/`` prefix).

        The command line prints the test table by set; a metric of no set is listed under ``other``.
        """
        return {}

    def describe_loss(self) -> str:
        """The training objective, as the zero-gradient error names it."""
        loss = getattr(self, "loss", None)
        return type(loss).__name__ if loss is not None else f"the loss of {type(self).__name__}"

    def on_fit_start(self) -> None:
        """Fix the base seed of the per-batch seeds."""
        seed = os.environ.get("PL_GLOBAL_SEED")
        self._base_seed = int(seed) if seed is not None else torch.initial_seed()
        self._gradient_seen, self._zero_gradient_steps = False, 0

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Remember the last training loss (for the zero-gradient message)."""
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not self._gradient_seen:
            self._last_loss = float(loss.detach())

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        """Count leading steps whose gradient is zero everywhere; stop after :data:`ZERO_GRADIENT_STEPS` of them."""
        if self._gradient_seen:
            return
        # Under DDP the gradients are already averaged over processes, so every rank decides the same way.
        if any(p.grad is not None and bool(p.grad.ne(0).any()) for p in self.parameters()):
            self._gradient_seen = True
            return
        self._zero_gradient_steps += 1
        if self._zero_gradient_steps >= ZERO_GRADIENT_STEPS:
            self._raise_zero_gradient()

    def on_train_end(self) -> None:
        """Fail a run shorter than :data:`ZERO_GRADIENT_STEPS` steps whose every step had a zero gradient."""
        if not self._gradient_seen and self._zero_gradient_steps > 0:
            self._raise_zero_gradient()

    def _raise_zero_gradient(self) -> None:
        loss = "" if self._last_loss is None else f" (train/loss {self._last_loss:.4g})"
        raise TrainingError(
            f"{self.describe_loss()} gave a zero gradient on each of the first {self._zero_gradient_steps} training "
            f"steps{loss}: the model learns nothing from these batches. A pair-wise or list-wise loss needs "
            "batches of lists (--data.sample_kind), and every loss needs labels of both classes"
        )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Seed the batch's randomness from ``(seed, rank, epoch, batch_idx)`` (see the class docstring)."""
        if self._base_seed is None:
            self.on_fit_start()
        torch.manual_seed(step_seed(self._base_seed, self.global_rank, self.current_epoch, batch_idx))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse, naming the weights, a checkpoint whose weights do not fit the network this config builds.

        Lightning would fail inside ``load_state_dict`` with a long list of tensor names; the settings that shape
        the network (``--model.init_args.network.init_args...``) are not saved among the checkpoint's
        hyper-parameters, so they must be given as they were at training.

        Raises:
            ConfigError: If weights are missing, unexpected or of another shape.
        """
        saved = checkpoint.get("state_dict")
        if saved is None:
            return
        mine = self.state_dict()
        problems = [
            f"{name} is {list(saved[name].shape)} in the checkpoint but {list(tensor.shape)} here"
            for name, tensor in mine.items()
            if name in saved and hasattr(saved[name], "shape") and saved[name].shape != tensor.shape
        ]
        missing, unexpected = sorted(mine.keys() - saved.keys()), sorted(saved.keys() - mine.keys())
        if missing:
            problems.append(f"the checkpoint lacks {len(missing)} weights of this network (e.g. {missing[0]})")
        if unexpected:
            problems.append(f"it holds {len(unexpected)} weights this network lacks (e.g. {unexpected[0]})")
        if problems:
            more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
            raise ConfigError(
                "the checkpoint's weights do not fit the network this config builds: "
                f"{'; '.join(problems[:3])}{more}. Give the network settings "
                "it was trained with (--model.init_args.network.init_args...) and a store with the same vocabulary "
                "sizes (--data.root)"
            )


def require_feature_sizes(task: str, feature_sizes: dict[str, int] | None) -> dict[str, int]:
    """Check that the command line linked the data module's ``feature_sizes`` into the task."""
    if feature_sizes is None:
        raise ConfigError(
            f"{task} needs feature_sizes: the command line links them from the data module (--data); in Python, "
            "pass feature_sizes=datamodule.feature_sizes"
        )
    return feature_sizes
