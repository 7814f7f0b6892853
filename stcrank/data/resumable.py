"""A DataLoader that Lightning checkpoints mid-epoch, so a killed run resumes on the very next batch.

Lightning (2.x) saves the ``state_dict()`` of every training *DataLoader* that has ``state_dict`` and
``load_state_dict`` into the checkpoint (``loops.fit_loop.state_dict.combined_loader``), and on resume calls
``load_state_dict`` before it creates the epoch's iterator. It never asks a sampler for its state, and it does
not checkpoint random-number generators. :class:`ResumableDataLoader` is the DataLoader-level piece: it counts the
batches training has taken in the current epoch (exact even with worker processes, which read ahead) and hands
``{"epoch", "batches"}`` to a sampler that can skip them (a :class:`ResumableSampler`, e.g.
:class:`~stcrank.data.recflow.batching.DayBatchSampler`).

A resume point means something only under the settings that fixed the epoch's order: the batch size, the seed,
the shuffling, the number of processes and the training data. The loader saves them beside the resume point and
refuses, with a :class:`~stcrank.errors.ConfigError` naming each option that differs, to resume under others:
the run would go on silently with batches that are not the ones the uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from torch.utils.data import DataLoader

from stcrank.errors import ConfigError

ORDER_OPTIONS: dict[str, str] = {
    "batch_size": "--data.batch_size",
    "seed": "--data.seed",
    "shuffle": "shuffling",
    "world_size": "the number of processes (--trainer.devices, --trainer.num_nodes)",
    "day_sizes": "the training data (--data.root, --data.train_days, --data.chunk_rows)",
}
"""How a user sets each of a sampler's :meth:`order_settings` (the option as typed on the command line)."""


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


def _shown(name: str, value: Any) -> str:
    if name == "day_sizes" and isinstance(value, list):
        return f"{len(value)} days or day parts, {sum(value)} samples"
    return repr(value)


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
    (``batch_size=None``) or single samples. The state is ``{"epoch": e, "batches": n, "order": ...,
    "settings": ...}``: ``n`` batches of epoch ``e`` were returned to the training loop, under the sampler's
    ``order_settings()`` (when it has them) and the data module's :attr:`settings`. Restoring it makes the next
    iteration of epoch ``e`` start at batch ``n`` in the same order; a finished epoch resumes at the start of the
    next one.

    Attributes:
        settings: Further settings that fix what an epoch holds, by option as typed on the command line
            (``{"--data.sample_kind": "exposures"}``); the data module sets them. Checked on resume like the
            sampler's.

    Raises:
        TypeError: From :meth:`state_dict` / :meth:`load_state_dict` if the sampler is not resumable.
        ConfigError: From :meth:`load_state_dict` if the state was saved under other settings.
    """

    _consumed: int = 0
    _offset: int = 0
    settings: dict[str, Any] = {}  # noqa: RUF012 (replaced, never mutated)

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

    def _order(self) -> dict[str, Any]:
        order = getattr(self._resumable_sampler(), "order_settings", None)
        return dict(order()) if callable(order) else {}

    def state_dict(self) -> dict[str, Any]:
        """Batches of the current epoch returned so far (resumed ones included), and the settings of its order."""
        sampler = self._resumable_sampler()
        state: dict[str, Any] = {"epoch": int(sampler.epoch), "batches": self._offset + self._consumed}
        order = self._order()
        if order:
            state["order"] = order
        if self.settings:
            state["settings"] = dict(self.settings)
        return state

    def check_resumable(self, state: dict[str, Any]) -> None:
        """Refuse a state saved under other settings than this loader's (a state without them is accepted).

        Raises:
            ConfigError: Naming every option that differs, with its value in the checkpoint and now.
        """
        differences = []
        saved_order, order = state.get("order") or {}, self._order()
        for name in sorted(saved_order.keys() & order.keys()):
            if saved_order[name] != order[name]:
                option = ORDER_OPTIONS.get(name, name)
                shown = f"{_shown(name, saved_order[name])} in the checkpoint, {_shown(name, order[name])} now"
                differences.append(f"{option}: {shown}")
        saved_settings = state.get("settings") or {}
        for option in sorted(saved_settings.keys() & self.settings.keys()):
            saved, now = saved_settings[option], self.settings[option]
            if saved != now:
                differences.append(f"{option}: {saved!r} in the checkpoint, {now!r} now")
        if differences:
            raise ConfigError(
                "cannot resume from --ckpt_path mid-epoch: the checkpoint's place in the epoch holds only under the "
                f"settings it was written with, and these differ: {'; '.join(differences)}. Give the same settings "
                "to resume, or leave out --ckpt_path to start a new run"
            )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next iteration continue from ``state`` (see :meth:`state_dict`), if its settings match."""
        self.check_resumable(state)
        position = {key: state[key] for key in ("epoch", "batches") if key in state}
        self._resumable_sampler().load_state_dict(position)
