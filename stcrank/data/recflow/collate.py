"""Vectorised batch building: one day of the store as tensors, and whole batches gathered by tensor indexing.

**The batch contract** (every batch is a ``dict[str, torch.Tensor]``; every id and time code is the store's
0-based value shifted by +1, so that 0 is padding for every feature, ``category_level_one`` included):

Exposures batch (one row per exposure; :data:`~stcrank.data.recflow.schema.EXPOSURE_BATCH_KEYS`). The
request-level tensors are held once per distinct request of the batch (``R <= B`` of them, in order of first
appearance), and ``request_slot`` gives each row's request; a batch whose rows all come from different
requests has ``R = B`` and ``request_slot = [0, 1, ..., B - 1]``:

=================  ==============  =============================================================================
key                shape, dtype    content
=================  ==============  =============================================================================
``context``        Long[R, 3]      request wday, hour, minute (UTC+8)
``user``           Long[R, 5]      user_id, device_id, gender, age, province
``seq``            Long[R, 50, 5]  video_id, author_id, category_level_two, category_level_one, upload_type of
                                   the last 50 effective views (left-padded with 0, most recent last)
``seq_mask``       Bool[R, 50]     True on real behaviours
``request_slot``   Long[B]         the request of each row, in ``[0, R)``
``item``           Long[B, 8]      video_id, author_id, category_level_two, category_level_one, upload_type,
                                   upload wday, upload hour, upload minute
``label``          Float[B]        the label definition's target (``effective_view`` by default)
``request_id``     Long[B]         raw request id of each row (not shifted)
=================  ==============  =============================================================================

:func:`rows_per_exposure` turns such a batch into one with every tensor per row (``R = B``, no
``request_slot``), for code that wants that layout.

Candidates batch (one row per request; :data:`~stcrank.data.recflow.schema.CANDIDATE_BATCH_KEYS`):
``context``, ``user``, ``seq``, ``seq_mask`` and ``request_id`` as above with ``B = R`` requests, plus

=====================  ==============  =========================================================================
``candidates``         Long[B, C, 8]   the candidates' item features (as ``item``), 0 on padding
``candidate_mask``     Bool[B, C]      True on real candidates
``candidate_label``    Float[B, C]     the label of each candidate (0 on padding)
``candidate_stage``    Long[B, C]      cascade priority: exposure with effective_view 6, exposure 5,
                                       rerank_pos/rank_pos 4, rerank_neg/rank_neg 3, coarse_neg 2,
                                       prerank_neg 1, unflagged and padding 0
=====================  ==============  =========================================================================

``C`` is the longest request of the batch, or ``max_candidates`` when that is set and smaller (a random subset
is kept). Candidates come in a seeded random order within each request by default, so that their position
carries no information about their stage or label.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from stcrank.data.recflow.schema import (
    CANDIDATE_BATCH_KEYS,
    CLICK_PRIORITY,
    CONTEXT_FEATURES,
    EXPOSURE_BATCH_KEYS,
    FEEDBACK_COLUMNS,
    ITEM_FEATURES,
    SEQ_FEATURES,
    STAGE_CODE,
    STAGE_PRIORITY,
    STORE_STAGES,
    USER_FEATURES,
)
from stcrank.data.recflow.store import RecFlowStore, stage_codes
from stcrank.plugins import LabelDefinition

logger = logging.getLogger(__name__)

_PRIORITY_OF_CODE = np.array([STAGE_PRIORITY[name] for name in STORE_STAGES], dtype=np.int8)


_MAX_ID = int(np.iinfo(np.int32).max) - 1
"""Largest store id whose shifted value (+1) still fits the int32 batch tensors."""


def _checked_ids(values: np.ndarray, name: str, source: str) -> np.ndarray:
    """``values`` as int32 after checking that they are integer ids in ``[0, _MAX_ID]`` (no silent wrap-around)."""
    values = np.asarray(values)
    if not (np.issubdtype(values.dtype, np.integer) or values.dtype == np.bool_):
        raise TypeError(f"{source}: column {name!r} has dtype {values.dtype}; expected integer ids")
    if values.size:
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > _MAX_ID:
            raise ValueError(
                f"{source}: column {name!r} has ids in [{low}, {high}]; expected 0-based ids in [0, {_MAX_ID}] "
                "(shifted by +1 into int32 batch tensors)"
            )
    return values.astype(np.int32, copy=False)


def _shifted(columns: Mapping[str, np.ndarray], names: Sequence[str], source: str = "batch") -> Tensor:
    """Stack id columns into an int32 ``[N, len(names)]`` tensor, shifted by +1 (0 = padding).

    Raises:
        TypeError: If a column is not integer.
        ValueError: If a column holds a negative id or one that does not fit int32 once shifted.
    """
    stacked = np.stack([_checked_ids(columns[name], name, source) for name in names], axis=-1)
    return torch.from_numpy(stacked + 1)


def item_matrix(columns: Mapping[str, np.ndarray], source: str = "item columns") -> Tensor:
    """Item features ``[N, 8]`` (int32, shifted) in :data:`~stcrank.data.recflow.schema.ITEM_FEATURES` order.

    Args:
        columns: The item id columns by name (0-based store ids).
        source: Where the columns come from (for error messages).

    Raises:
        TypeError: If a column is not integer.
        ValueError: If an id is negative or too large for the int32 batch layout.
    """
    return _shifted(columns, ITEM_FEATURES, source)


def compute_labels(label: LabelDefinition, columns: Mapping[str, np.ndarray], source: str) -> tuple[Tensor, Tensor]:
    """Apply a label definition to a day's feedback columns.

    Args:
        label: The label definition.
        columns: Feedback columns by name.
        source: Where the columns come from (for error messages).

    Returns:
        ``(target float32 [N], keep bool [N])``: rows outside the label's mask are to be dropped.

    Raises:
        ValueError: If the label rejects the columns (NaN or invalid values; the message is prefixed with
            ``source``), gives NaN targets, or gives sample weights other than 1 (the batch layout has no weight).
    """
    tensors = {name: torch.from_numpy(np.array(values)) for name, values in columns.items()}  # writable copies
    try:
        output = label(tensors)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from error
    if output.target.is_floating_point() and bool(torch.isnan(output.target[output.mask.bool()]).any()):
        raise ValueError(f"{source}: label {type(label).__name__} gives NaN targets; expected finite labels")
    if output.weight.numel() and not bool(torch.all(output.weight == 1)):
        raise ValueError(
            f"{source}: label {type(label).__name__} gives sample weights other than 1; the RecFlow batch layout "
            "carries no weight"
        )
    return output.target.to(torch.float32), output.mask.to(torch.bool)


@dataclass
class RequestFeatures:
    """Request-level tensors of one day (int32, shifted), indexed by the store's request row."""

    request_id: Tensor
    context: Tensor
    user: Tensor
    seq: Tensor
    seq_mask: Tensor

    @classmethod
    def load(cls, store: RecFlowStore, day: str) -> RequestFeatures:
        """Read a day's requests table."""
        names = ["request_id", *CONTEXT_FEATURES, *USER_FEATURES, "seq_time_ms", *(f"seq_{n}" for n in SEQ_FEATURES)]
        data = store.requests(day, names)
        source = f"{store.root}/{day}/requests"
        mask = data["seq_time_ms"] > 0
        # Padding slots of the sequence may hold anything: only real behaviours are range-checked.
        seq = np.stack(
            [
                np.where(mask, _checked_ids(np.where(mask, data[f"seq_{n}"], 0), f"seq_{n}", source), -1) + 1
                for n in SEQ_FEATURES
            ],
            axis=-1,
        ).astype(np.int32)
        return cls(
            request_id=torch.from_numpy(data["request_id"].astype(np.int64)),
            context=_shifted(data, CONTEXT_FEATURES, source),
            user=_shifted(data, USER_FEATURES, source),
            seq=torch.from_numpy(seq),
            seq_mask=torch.from_numpy(mask),
        )

    def gather(self, rows: Tensor) -> dict[str, Tensor]:
        """Request-level part of a batch for request rows ``rows``."""
        return {
            "context": self.context[rows].long(),
            "user": self.user[rows].long(),
            "seq": self.seq[rows].long(),
            "seq_mask": self.seq_mask[rows],
            "request_id": self.request_id[rows],
        }

    def gather_shared(self, rows: Tensor) -> dict[str, Tensor]:
        """Request-level part of a batch whose samples have request rows ``rows``, each request gathered once.

        Returns:
            ``context``, ``user``, ``seq`` and ``seq_mask`` of the distinct requests (in order of first
            appearance), ``request_slot`` (each sample's request among them) and ``request_id`` per sample.
        """
        distinct, slot = unique_in_order(rows)
        out = self.gather(distinct)
        out["request_id"] = self.request_id[rows]
        out["request_slot"] = slot
        return out


REQUEST_LEVEL_KEYS: tuple[str, ...] = ("context", "user", "seq", "seq_mask", "competing", "competing_mask")
"""Keys of an exposures batch held once per request when the batch has ``request_slot``."""


def unique_in_order(values: Tensor) -> tuple[Tensor, Tensor]:
    """The distinct values of a 1-d tensor in order of first appearance, and the position of each value among them.

    Args:
        values: ``[N]``.

    Returns:
        ``(distinct [R], slot [N])`` with ``distinct[slot] == values``; ``slot`` is ``0..N-1`` when the values
        are all different.
    """
    distinct, inverse = torch.unique(values, return_inverse=True)  # sorted
    first = torch.full((len(distinct),), len(values), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(values)), reduce="amin")
    order = torch.argsort(first)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    return distinct[order], rank[inverse]


def rows_per_exposure(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The same batch with its request-level tensors repeated per row and no ``request_slot``.

    Args:
        batch: A batch with or without ``request_slot``.

    Returns:
        A new dictionary (a batch without ``request_slot`` is returned as a shallow copy).
    """
    out = dict(batch)
    slot = out.pop("request_slot", None)
    if slot is not None:
        for key in REQUEST_LEVEL_KEYS:
            if key in out:
                out[key] = out[key].index_select(0, slot)
    return out


class ExposureDay:
    """One day's exposures as tensors; :meth:`batch` gathers a point-wise batch.

    Args:
        store: The store.
        day: The day.
        label: The label definition (exposures outside its mask are dropped).
    """

    def __init__(self, store: RecFlowStore, day: str, label: LabelDefinition) -> None:
        self.requests = RequestFeatures.load(store, day)
        data = store.exposures(day, ["request_row", *ITEM_FEATURES, *FEEDBACK_COLUMNS])
        target, keep = compute_labels(label, {n: data[n] for n in FEEDBACK_COLUMNS}, f"{store.root}/{day}/exposures")
        keep_np = keep.numpy()
        self.request_row = torch.from_numpy(data["request_row"][keep_np].astype(np.int64))
        self.item = item_matrix({n: data[n][keep_np] for n in ITEM_FEATURES}, f"{store.root}/{day}/exposures")
        self.label = target[keep]

    @staticmethod
    def num_rows(store: RecFlowStore, day: str, label: LabelDefinition) -> int:
        """Number of samples of a day (exposures inside the label's mask), reading only the label columns."""
        data = store.exposures(day, list(FEEDBACK_COLUMNS))
        return int(compute_labels(label, data, f"{store.root}/{day}/exposures")[1].sum())

    @staticmethod
    def request_rows(store: RecFlowStore, day: str, label: LabelDefinition) -> np.ndarray:
        """The request row of each sample of a day (exposures inside the label's mask), from a few columns."""
        data = store.exposures(day, ["request_row", *FEEDBACK_COLUMNS])
        keep = compute_labels(label, {n: data[n] for n in FEEDBACK_COLUMNS}, f"{store.root}/{day}/exposures")[1]
        return data["request_row"][keep.numpy()]

    def __len__(self) -> int:
        return len(self.label)

    def batch(self, index: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Gather the exposures ``index`` (``generator`` is unused: exposures batches are deterministic)."""
        out = self.requests.gather_shared(self.request_row[index])
        out["item"] = self.item[index].long()
        out["label"] = self.label[index]
        return {key: out[key] for key in EXPOSURE_BATCH_KEYS}


class CandidateDay:
    """One day's requests with their stage candidates; :meth:`batch` gathers a list-wise batch.

    Rows of this dataset are the requests with at least one candidate among ``stages``. Candidates outside the
    label's mask are left out of their request.

    Args:
        store: The store.
        day: The day.
        label: The label definition applied to the candidates.
        stages: Stages that make up the candidates.
        max_candidates: Keep at most this many candidates per request (a random subset); None keeps all.
        shuffle_candidates: Put each request's candidates in a seeded random order (else stage order).
    """

    def __init__(
        self,
        store: RecFlowStore,
        day: str,
        label: LabelDefinition,
        stages: Sequence[str],
        max_candidates: int | None = None,
        shuffle_candidates: bool = True,
    ) -> None:
        self.requests = RequestFeatures.load(store, day)
        self.max_candidates = max_candidates
        self.shuffle_candidates = shuffle_candidates
        lists = store.stage_lists(day, stages, columns=[*ITEM_FEATURES, *FEEDBACK_COLUMNS])
        columns = lists.columns
        target, keep = compute_labels(
            label, {n: columns[n] for n in FEEDBACK_COLUMNS}, f"{store.root}/{day}/candidates"
        )
        request_of = np.repeat(np.arange(len(lists.request_id)), lists.counts())
        keep_np = keep.numpy()
        counts = np.bincount(request_of[keep_np], minlength=len(lists.request_id))
        # Rows are fixed by the stages alone (what num_rows counts); a request whose candidates the label masks
        # out entirely stays, with no valid candidate.
        self.rows = torch.from_numpy(np.flatnonzero(lists.counts() > 0))
        self.counts = torch.from_numpy(counts)
        self.offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64))
        self.item = item_matrix({n: columns[n][keep_np] for n in ITEM_FEATURES}, f"{store.root}/{day}/candidates")
        self.label = target[keep]
        clicked = (columns["stage"] == STAGE_CODE["realshow"]) & (columns["effective_view"] == 1)
        priority = np.where(clicked, CLICK_PRIORITY, _PRIORITY_OF_CODE[columns["stage"]])
        self.priority = torch.from_numpy(priority[keep_np].astype(np.int64))
        if max_candidates is not None and len(counts):
            over = counts > max_candidates
            if over.any():
                logger.warning(
                    "%s: %d of %d requests have more than max_candidates=%d candidates; %d candidates are left out",
                    day,
                    int(over.sum()),
                    int((counts > 0).sum()),
                    max_candidates,
                    int((counts[over] - max_candidates).sum()),
                )

    @staticmethod
    def num_rows(store: RecFlowStore, day: str, stages: Sequence[str]) -> int:
        """Number of requests with at least one candidate among ``stages`` (label masks are not applied)."""
        counts = store.requests(day, ["stage_count"])["stage_count"]
        return int((counts[:, stage_codes(stages)].sum(axis=1) > 0).sum())

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, index: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Gather the requests ``index`` (positions among :attr:`rows`) with their candidates.

        Args:
            index: Positions, shape ``[B]``.
            generator: Random generator for the candidate order and the ``max_candidates`` subset.
        """
        rows = self.rows[index]
        counts = self.counts[rows]
        width = int(counts.max()) if len(counts) else 0
        slots = torch.arange(width).expand(len(rows), width)
        valid = slots < counts[:, None]
        if self.shuffle_candidates or (self.max_candidates is not None and width > self.max_candidates):
            keys = torch.rand(len(rows), width, generator=generator)
            keys = keys.masked_fill(~valid, 2.0)  # padding sorts last
            slots = torch.argsort(keys, dim=1)
        if self.max_candidates is not None and width > self.max_candidates:
            width = self.max_candidates
            slots = slots[:, :width]
        valid = torch.arange(width).expand(len(rows), width) < counts[:, None]
        flat = torch.where(valid, self.offsets[rows][:, None] + slots, 0)
        out = self.requests.gather(rows)
        padding = ~valid
        out["candidates"] = self.item[flat].long().masked_fill_(padding[:, :, None], 0)
        out["candidate_mask"] = valid
        out["candidate_label"] = self.label[flat].masked_fill_(padding, 0)
        out["candidate_stage"] = self.priority[flat].masked_fill_(padding, 0)
        return {key: out[key] for key in CANDIDATE_BATCH_KEYS}
