"""Stage candidates of the test day read from an imported official test file (``rank_test``, ``coarse_rank_test``).

The RecFlow release ships the candidate sets its evaluations score as ``others/rank_test.feather`` and
``others/coarse_rank_test.feather`` (one row per request and video, with the stage flags and
``effective_view``); the importer copies them into the store's ``others/``. :class:`OfficialCandidateDay` turns
one of them into the candidates batches of :class:`~stcrank.data.recflow.collate.CandidateDay`: every row of the
file is a candidate of its request, labelled by the file's own columns, with the request features of the test
day and the item features of its video (read from the test day's stage rows).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from stcrank.data.recflow.collate import CandidateDay, RequestFeatures, compute_labels, item_matrix
from stcrank.data.recflow.errors import RecFlowFormatError
from stcrank.data.recflow.schema import (
    CLICK_PRIORITY,
    FEEDBACK_COLUMNS,
    ITEM_FEATURES,
    OTHERS_DIR,
    STAGE_PRIORITY,
    STAGES,
    STORE_STAGES,
)
from stcrank.data.recflow.store import RecFlowStore
from stcrank.plugins import LabelDefinition

__all__ = ["OFFICIAL_TESTS", "OfficialCandidateDay", "official_label_columns"]

OFFICIAL_TESTS: tuple[str, ...] = ("rank_test", "coarse_rank_test")
"""The official test files that hold stage candidates (``retrieval_test`` holds exposures only)."""


def official_label_columns(store: RecFlowStore, name: str) -> dict[str, np.ndarray]:
    """The feedback columns an official test file holds (``effective_view`` in the release)."""
    table = store.official_test(name)
    return {column: table[column] for column in FEEDBACK_COLUMNS if column in table}


class OfficialCandidateDay(CandidateDay):
    """The test day's requests with the candidates of an official test file; batches as :class:`CandidateDay`.

    Every row of the file is a candidate (no stage filter: the file is the candidate set), its label is the label
    definition applied to the file's feedback columns, and its cascade priority comes from the file's stage flags.

    Args:
        store: The store.
        day: The test day (the day the file's requests belong to).
        label: The label definition; it may read only the feedback columns the file holds.
        name: ``rank_test`` or ``coarse_rank_test``.
        max_candidates: Keep at most this many candidates per request (a random subset); None keeps all.
        shuffle_candidates: Put each request's candidates in a seeded random order (else file order).

    Raises:
        RecFlowFormatError: When a request of the file is not a request of ``day`` in the store, or a video of the
            file has no stage row on ``day`` (its item features are unknown).
    """

    def __init__(
        self,
        store: RecFlowStore,
        day: str,
        label: LabelDefinition,
        name: str,
        max_candidates: int | None = None,
        shuffle_candidates: bool = True,
    ) -> None:
        source = f"{store.root}/{OTHERS_DIR}/{name}.parquet"
        self.requests = RequestFeatures.load(store, day)
        self.max_candidates = max_candidates
        self.shuffle_candidates = shuffle_candidates
        table = store.official_test(name)
        request_row = _request_rows(self.requests.request_id.numpy(), table["request_id"], day, source)
        order = np.argsort(request_row, kind="stable")  # candidates grouped by request row, file order within
        request_row = request_row[order]
        video = table["video_id"][order]
        item_columns = _video_features(store, day, video, source)
        feedback = {column: table[column][order] for column in FEEDBACK_COLUMNS if column in table}
        target, keep = compute_labels(label, feedback, source)
        keep_np = keep.numpy()
        counts = np.bincount(request_row[keep_np], minlength=len(self.requests.request_id))
        present = np.bincount(request_row, minlength=len(self.requests.request_id)) > 0
        self.rows = torch.from_numpy(np.flatnonzero(present))
        self.counts = torch.from_numpy(counts)
        self.offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64))
        self.item = item_matrix({n: item_columns[n][keep_np] for n in ITEM_FEATURES}, source)
        self.label = target[keep]
        self.priority = torch.from_numpy(_priorities(table, order, feedback)[keep_np])

    @staticmethod
    def num_rows(store: RecFlowStore, day: str, name: str) -> int:
        """Number of requests of the official test file ``name``."""
        return len(np.unique(store.official_test(name)["request_id"]))


def _positions(keys: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The index in ``keys`` (unsorted) of every query, and whether it is there (the index is 0 where it is not)."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    position = np.searchsorted(sorted_keys, queries)
    found = position < len(sorted_keys)
    found[found] = sorted_keys[position[found]] == queries[found]
    rows = np.zeros_like(position)
    rows[found] = order[position[found]]
    return rows, found


def _request_rows(day_request_ids: np.ndarray, file_request_ids: np.ndarray, day: str, source: str) -> np.ndarray:
    """The store's request row of every row of the file."""
    rows, found = _positions(day_request_ids, file_request_ids)
    if not found.all():
        missing = np.unique(file_request_ids[~found])
        raise RecFlowFormatError(
            f"{source}: {len(missing)} request ids (e.g. {missing[:3].tolist()}) are not requests of the test day "
            f"{day} in the store; import the release's test day with its test files, or use "
            "--data.test_source stage_rows"
        )
    return rows.astype(np.int64)


def _video_features(store: RecFlowStore, day: str, video: np.ndarray, source: str) -> dict[str, np.ndarray]:
    """Item feature columns of every video of the file, from any stage row of that video on ``day``."""
    lists = store.stage_lists(day, STORE_STAGES, columns=list(ITEM_FEATURES))
    rows, found = _positions(lists.columns["video_id"], video)
    if not found.all():
        missing = np.unique(video[~found])
        raise RecFlowFormatError(
            f"{source}: column 'video_id' holds {len(missing)} videos (e.g. {missing[:3].tolist()}) with no stage "
            f"row on the test day {day}, so their item features are unknown; re-import the release, or use "
            "--data.test_source stage_rows"
        )
    return {name: lists.columns[name][rows] for name in ITEM_FEATURES}


def _priorities(table: dict[str, np.ndarray], order: np.ndarray, feedback: dict[str, np.ndarray]) -> np.ndarray:
    """Cascade priority of every row from the file's stage flags (the highest flag; a click on an exposure is 6)."""
    priority = np.zeros(len(order), dtype=np.int64)
    for stage in STAGES:
        if stage in table:
            flagged = table[stage][order] > 0
            priority = np.where(flagged, np.maximum(priority, STAGE_PRIORITY[stage]), priority)
    if "realshow" in table and "effective_view" in feedback:
        clicked = (table["realshow"][order] > 0) & (feedback["effective_view"] > 0)
        priority = np.where(clicked, CLICK_PRIORITY, priority)
    return priority


def check_label_fits(store: RecFlowStore, name: str, label: LabelDefinition) -> str | None:
    """Why ``label`` cannot label the official test file ``name``, or None when it can.

    Args:
        store: The store.
        name: The official test file.
        label: The label definition.
    """
    columns = official_label_columns(store, name)
    try:
        compute_labels(label, {k: v[:1] for k, v in columns.items()}, name)
    except (KeyError, ValueError) as error:
        return f"the label {type(label).__name__} cannot be computed from its columns {sorted(columns)} ({error})"
    return None


def official_names(stages: Sequence[str]) -> str:
    """The official test file whose candidates are ``stages``: ``coarse_rank_test`` with coarse_neg, else rank."""
    return "coarse_rank_test" if "coarse_neg" in stages else "rank_test"
