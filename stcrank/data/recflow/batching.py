"""Day-by-day batching: a sampler of whole batches and a dataset that gathers them from one cached day.

The sampler yields one key per batch, ``(day position, row indices)``; the dataset loads that day (once, and keeps
only that one) and gathers the rows with tensor indexing. Days come in the given (chronological) order; rows are
shuffled within a day only.

**Distributed runs.** Each rank takes a disjoint share of every day (a strided share of the day's permutation when
shuffling; a contiguous block otherwise) and splits it into the same number of batches as every other rank:
``ceil(ceil(n / world_size) / batch_size)``, of near-equal sizes, never above ``batch_size``. Nothing is
dropped and nothing is repeated (no padding by duplicates), and all ranks step the same number of times, so
collectives stay in step. A rank whose share is smaller than that number of batches (a day with fewer rows than
ranks, or ``batch_size == 1``) gets an empty batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler

from stcrank.data.recflow.store import DayPart, RecFlowStore


class DayData(Protocol):
    """One day loaded for a sample kind."""

    def __len__(self) -> int:
        """Number of samples of the day."""

    def batch(self, index: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Gather the samples ``index`` into a batch."""


@dataclass(frozen=True)
class SampleKind:
    """How one kind of training or evaluation sample is read from the store.

    Attributes:
        load: Loads one day: ``load(store, day) -> DayData``.
        count: Number of samples of a day without loading it: ``count(store, day) -> int``; must equal
            ``len(load(store, day))``.
        requests: The request (any integer key) of each sample of a day without loading it,
            ``requests(store, day) -> int array [count]``, for shuffling whole requests; None when every sample is
            a request of its own.
    """

    load: Callable[[RecFlowStore, str], DayData]
    count: Callable[[RecFlowStore, str], int]
    requests: Callable[[RecFlowStore, str], np.ndarray] | None = None


class DayBatchSampler(DistributedSampler):
    """Yields ``(day_position, row_indices)`` keys, one per batch, day by day.

    It subclasses :class:`~torch.utils.data.DistributedSampler` only so that Lightning recognises it as already
    distributed and does not wrap it; it shards by itself (see the module docstring) and does not call the parent's
    constructor.

    **Resuming mid-epoch.** :meth:`state_dict` / :meth:`load_state_dict` hold ``{"epoch", "batches"}``: the epoch
    and how many of its batches were consumed. After :meth:`load_state_dict` the next iteration of that epoch
    skips those batches (by index arithmetic, no data is read) and yields the rest in the same order; a later
    epoch is whole again. :class:`~stcrank.data.resumable.ResumableDataLoader` passes this state through
    Lightning's checkpoints.

    **Whole requests.** With ``requests`` (the request of each sample of a day, fetched when the day is shuffled),
    a shuffle permutes a day's requests and keeps each request's samples together, so that a batch holds the
    samples of about ``batch_size / samples per request`` requests (their request-level features are then
    gathered and computed once per request, see ``request_slot``); each rank takes a contiguous share of that
    order.

    Args:
        day_sizes: Number of samples of each day, in the order the days are visited.
        batch_size: Largest batch.
        shuffle: Shuffle rows within each day (a new permutation every epoch).
        seed: Seed of the permutations.
        rank: This process's rank.
        world_size: Number of processes.
        requests: ``requests(day_position) -> int array [day size]``, the request of each sample; shuffles
            whole requests (see above). None shuffles samples.
    """

    def __init__(
        self,
        day_sizes: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        requests: Callable[[int], np.ndarray] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.day_sizes = [int(n) for n in day_sizes]
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.num_replicas = world_size
        self.requests = requests
        self.epoch = 0
        self.drop_last = False
        self._skip = 0  # batches of ``self.epoch`` to skip on the next iteration (set when resuming)
        self._yielded = 0  # batches yielded by the current iteration, skipped ones included

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch (Lightning calls this before each epoch): it seeds the permutations."""
        if epoch != self.epoch:
            self._skip = 0  # a resume point belongs to its own epoch only
        self.epoch = epoch

    @property
    def pending_batches(self) -> int:
        """Batches of :attr:`epoch` the next iteration skips (0 unless resuming)."""
        return self._skip

    def state_dict(self) -> dict[str, int]:
        """The resume point: ``{"epoch": e, "batches": n}``, ``n`` batches of epoch ``e`` consumed so far.

        ``n`` counts what this sampler handed out; a loader with worker processes reads ahead of training, so
        :class:`~stcrank.data.resumable.ResumableDataLoader` replaces it with the batches training consumed.
        """
        return {"epoch": int(self.epoch), "batches": int(self._yielded)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume from :meth:`state_dict`: the next iteration skips the consumed batches of that epoch.

        A finished epoch (``batches >= len(self)``) resumes at the start of the next one.

        Raises:
            ValueError: If the state is malformed.
        """
        try:
            epoch, batches = int(state["epoch"]), int(state["batches"])
        except (KeyError, TypeError, ValueError) as error:
            expected = "{'epoch': int, 'batches': int}"
            raise ValueError(f"DayBatchSampler state must be {expected}, got {state!r}") from error
        if epoch < 0 or batches < 0:
            raise ValueError(f"DayBatchSampler state needs epoch >= 0 and batches >= 0, got {state!r}")
        if batches >= len(self):
            epoch, batches = epoch + 1, 0
        self.epoch, self._skip = epoch, batches

    def order_settings(self) -> dict[str, object]:
        """What fixes the order of an epoch besides its number: saved with a resume point and checked on resume."""
        return {
            "batch_size": self.batch_size,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "world_size": self.num_replicas,
            "day_sizes": list(self.day_sizes),
        }

    def batches_of_day(self, day: int) -> int:
        """Number of batches every rank gets from day ``day``."""
        return math.ceil(math.ceil(self.day_sizes[day] / self.num_replicas) / self.batch_size)

    def rows_of_day(self, day: int) -> np.ndarray:
        """This rank's rows of day ``day``, in visiting order."""
        n = self.day_sizes[day]
        share = slice(self.rank * n // self.num_replicas, (self.rank + 1) * n // self.num_replicas)
        if self.shuffle and self.requests is not None:
            request = np.asarray(self.requests(day))
            if len(request) != n:
                raise ValueError(f"day {day}: {len(request)} request keys for {n} samples")
            _, group = np.unique(request, return_inverse=True)
            rank = np.random.default_rng([self.seed, self.epoch, day]).permutation(int(group.max(initial=-1)) + 1)
            return np.argsort(rank[group], kind="stable")[share]  # whole requests, in a random order
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch, day]).permutation(n)
            return order[self.rank :: self.num_replicas]
        return np.arange(share.start, share.stop)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        skip, self._skip = self._skip, 0
        self._yielded = skip
        for day in range(len(self.day_sizes)):
            batches = self.batches_of_day(day)
            if batches <= skip:  # a whole day consumed before the resume point: not even permuted
                skip -= batches
                continue
            for rows in np.array_split(self.rows_of_day(day), batches)[skip:]:
                self._yielded += 1
                yield day, rows
            skip = 0

    def __len__(self) -> int:
        return sum(self.batches_of_day(day) for day in range(len(self.day_sizes)))


class DayBatches(Dataset):
    """Map-style dataset whose keys are whole batches ``(day_position, row_indices)``; use with ``batch_size=None``.

    A key's position may name a whole day (a date) or a :class:`~stcrank.data.recflow.store.DayPart`, a range of
    a day's requests: the part is then loaded through a view of the store in which its day holds only those
    requests, so one part, not one day, is kept in memory.

    Args:
        root: The store directory.
        days: The days or day parts, in the sampler's order.
        kind: How a day is loaded.
        seed: Seed of per-batch randomness (e.g. the candidate order), derived from the batch's key.
    """

    def __init__(self, root: str, days: Sequence[str | DayPart], kind: SampleKind, seed: int = 0) -> None:
        self.root = root
        self.days = list(days)
        self.kind = kind
        self.seed = seed
        self._store: RecFlowStore | None = None
        self._cached: tuple[int, DayData] | None = None

    def __len__(self) -> int:
        return len(self.days)

    def day(self, position: int) -> DayData:
        """The loaded day (or day part) at ``position`` (one is kept in memory)."""
        if self._cached is None or self._cached[0] != position:
            self._cached = None  # free the previous day first
            self._store = self._store or RecFlowStore(self.root)
            entry = self.days[position]
            if isinstance(entry, DayPart):
                self._cached = (position, self.kind.load(self._store.part(entry), entry.day))
            else:
                self._cached = (position, self.kind.load(self._store, entry))
        return self._cached[1]

    def __getitem__(self, key: tuple[int, np.ndarray]) -> dict[str, Tensor]:
        position, rows = key
        rows = np.asarray(rows, dtype=np.int64)
        state = np.random.SeedSequence([self.seed, position, int(rows[0]) if len(rows) else 0, len(rows)])
        generator = torch.Generator().manual_seed(int(state.generate_state(1)[0]))
        return self.day(position).batch(torch.from_numpy(rows), generator)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cached"] = None  # workers load their own day
        return state
