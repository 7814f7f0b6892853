"""A DataLoader that Lightning checkpoints mid-epoch, so a killed run resumes on the very next batch.

Lightning (2.x) saves the ``state_dict()`` of every training *DataLoader* that has ``state_dict`` and
``load_state_dict`` into the checkpoint (``loops.fit_loop.state_dict.combined_loader``), and on resume calls
``load_state_dict`` before it creates the epoch's iterator. It never asks a sampler for its state, and it does
not checkpoint random-number generators. :class:`ResumableDataLoader` is the DataLoader-level piece: it counts the
batches training has taken in the current epoch (exact even with worker processes, which read ahead) and hands
``{"epoch", "batches"}`` to a sampler that can skip them (a :class:`ResumableSampler`, e.g.
:class:`~stcrank.data.recflow.batching.DayBatchSampler`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from torch.utils.data import DataLoader


@runtime_checkable
class ResumableSampler(Protocol):
    """A sampler whose epoch order is a function of ``(seed, epoch)`` and that can skip a consumed prefix."""

    epoch: int

    @property
    def pending_batches(self) -> int:
        """Batches of :attr:`epoch` the next iteration skips (0 unless resuming)."""

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch (its order); a resume point of another epoch is dropped."""

    def state_dict(self) -> dict[str, int]:
        """``{"epoch": e, "batches": n}``."""

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Make the next iteration of epoch ``e`` skip its first ``n`` batches."""


class _Counting(Iterator):
    """Wraps a DataLoader iterator and counts the batches it returned."""

    def __init__(self, inner: Iterator, loader: ResumableDataLoader) -> None:
        self.inner = inner
        self.loader = loader

    def __next__(self) -> Any:
        batch = next(self.inner)
        self.loader._consumed += 1
        return batch

    def __len__(self) -> int:
        return len(self.inner)


class ResumableDataLoader(DataLoader):
    """A :class:`~torch.utils.data.DataLoader` with ``state_dict`` / ``load_state_dict`` for mid-epoch resume.

    Built exactly like a DataLoader; its ``sampler`` must be a :class:`ResumableSampler` yielding whole batches
    (``batch_size=None``) or single samples. The state is ``{"epoch": e, "batches": n}``: ``n`` batches of epoch
    ``e`` were returned to the training loop. Restoring it makes the next iteration of epoch ``e`` start at batch
    ``n`` in the same order; a finished epoch resumes at the start of the next one.

    Raises:
        TypeError: From :meth:`state_dict` / :meth:`load_state_dict` if the sampler is not resumable.
    """

    _consumed: int = 0
    _offset: int = 0

    def _resumable_sampler(self) -> ResumableSampler:
        if not isinstance(self.sampler, ResumableSampler):
            raise TypeError(
                f"ResumableDataLoader needs a sampler with set_epoch/state_dict/load_state_dict; "
                f"got {type(self.sampler).__name__}"
            )
        return self.sampler

    def __iter__(self) -> Iterator:
        # A pending resume point of the sampler's current epoch becomes this iteration's offset.
        sampler = self.sampler
        self._offset = int(sampler.pending_batches) if isinstance(sampler, ResumableSampler) else 0
        self._consumed = 0
        return _Counting(super().__iter__(), self)

    def state_dict(self) -> dict[str, int]:
        """``{"epoch": e, "batches": n}``: batches of the current epoch returned so far (resumed ones included)."""
        sampler = self._resumable_sampler()
        return {"epoch": int(sampler.epoch), "batches": self._offset + self._consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Make the next iteration continue from ``state`` (see :meth:`state_dict`)."""
        self._resumable_sampler().load_state_dict(dict(state))
