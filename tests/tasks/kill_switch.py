"""A callback that kills its own process with SIGKILL at a given step (imported by resume tests' subprocesses)."""

import os
import signal

from lightning.pytorch import Callback


class KillAtStep(Callback):
    """SIGKILL the process before the training batch that would make global step ``step + 1``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
