"""Names, orders and types of the RecFlow data: the official release, stcrank's store and the batch layout.

Everything that other modules agree on lives here, so that a column is spelled once.

* **Official release** (``all_stage/``, ``realshow/`` and the pickles): column names and orders as published.
* **Store** (written by :func:`stcrank.data.recflow.importer.import_recflow`): stage codes and table columns.
* **Batch layout** (built by :mod:`stcrank.data.recflow.collate`): which feature sits in which slot.
"""

from __future__ import annotations

import datetime as _dt

# --------------------------------------------------------------------------------------------------------------
# Official release
# --------------------------------------------------------------------------------------------------------------

STAGES: tuple[str, ...] = ("realshow", "rerank_pos", "rerank_neg", "rank_pos", "rank_neg", "coarse_neg", "prerank_neg")
"""The seven stage flags of ``all_stage`` and keys of ``request_id_dict``, latest stage first."""

USER_COLUMNS: tuple[str, ...] = ("user_id", "device_id", "gender", "age", "province")
"""User-side id columns, in batch order (``"user"`` slot)."""

ITEM_ID_COLUMNS: tuple[str, ...] = ("video_id", "author_id", "category_level_two", "category_level_one", "upload_type")
"""Item-side id columns, in batch order (first five of the ``"item"`` slot, all five of the ``"seq"`` slot)."""

FEEDBACK_COLUMNS: tuple[str, ...] = (
    "playing_time",
    "effective_view",
    "long_view",
    "like",
    "follow",
    "forward",
    "comment",
)
"""Logged feedback of an exposure (zero on unexposed stage rows)."""

BINARY_FEEDBACK_COLUMNS: tuple[str, ...] = FEEDBACK_COLUMNS[1:]
"""The 0/1 feedback columns."""

ALL_STAGE_COLUMNS: tuple[str, ...] = (
    "request_id",
    "request_timestamp",
    "user_id",
    "device_id",
    "age",
    "gender",
    "province",
    "video_id",
    "author_id",
    "category_level_one",
    "category_level_two",
    "upload_type",
    "upload_timestamp",
    "duration",
    *STAGES,
    "rank_index",
    "rerank_index",
    *FEEDBACK_COLUMNS,
)
"""Columns of ``all_stage/{date}.feather`` and ``realshow/{date}.feather``, in the published order (int64)."""

STAGE_ARRAY_COLUMNS: tuple[str, ...] = (
    "video_id",
    "author_id",
    "duration",
    "category_level_two",
    "upload_type",
    "upload_timestamp",
    "category_level_one",
    "effective_view",
)
"""Columns of the ``(n, 8)`` arrays of ``request_id_dict`` and ``ubm_seq_request_id_dict``."""

SEQ_ARRAY_COLUMNS: tuple[str, ...] = (
    "video_id",
    "author_id",
    "category_level_two",
    "category_level_one",
    "upload_type",
    "upload_timestamp",
    "duration",
    "time_ms",
    "playing_time",
    "request_id",
)
"""Columns of the ``(50, 10)`` arrays of ``seq_effective_50_dict`` (a row is valid where ``time_ms > 0``)."""

SEQ_LEN = 50
"""Length of the behaviour sequences (left-padded, most recent last)."""

ID_CNT_FEATURES: tuple[str, ...] = (*USER_COLUMNS, *ITEM_ID_COLUMNS)
"""Features sized by ``others/id_cnt.pkl`` (``video_id`` may be spelled ``photo_id`` there)."""

ID_CNT_ALIASES: dict[str, tuple[str, ...]] = {"video_id": ("video_id", "photo_id")}
"""Accepted spellings of an ``id_cnt`` key, first found wins."""

TEST_FILES: dict[str, tuple[str, ...]] = {
    "retrieval_test": ("retrieval_test.feather", "recall_test.feather"),
    "coarse_rank_test": ("coarse_rank_test.feather", "prerank_test.feather"),
    "rank_test": ("rank_test.feather",),
}
"""Official test files under ``others/``: canonical name -> accepted file names (README name first)."""

RELEASE_DATES: tuple[str, str] = ("2024-01-13", "2024-02-18")
"""First and last day of the published release (the last one is the test day)."""

DATE_FORMAT = "%Y-%m-%d"


def parse_date(text: str) -> _dt.date:
    """Parse a ``YYYY-MM-DD`` date.

    Raises:
        ValueError: If ``text`` is not such a date.
    """
    try:
        return _dt.datetime.strptime(text, DATE_FORMAT).date()
    except ValueError as error:
        raise ValueError(f"expected a date as YYYY-MM-DD, got {text!r}") from error


def is_date(text: str) -> bool:
    """Whether ``text`` is a ``YYYY-MM-DD`` date."""
    try:
        parse_date(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------------------------------
# Stages in the store
# --------------------------------------------------------------------------------------------------------------

STORE_STAGES: tuple[str, ...] = (*STAGES, "unflagged")
"""Stage codes of the store: the code of a stage is its index. A row with several flags gets the latest stage
(lowest code); a row with no flag at all (possible in the 2nd collection period) is ``unflagged``."""

STAGE_CODE: dict[str, int] = {name: code for code, name in enumerate(STORE_STAGES)}
"""Stage name -> code."""

N_STAGES = len(STORE_STAGES)

CLICK_PRIORITY = 6
"""Cascade priority of an exposure with ``effective_view == 1``."""

STAGE_PRIORITY: dict[str, int] = {
    "realshow": 5,
    "rerank_pos": 4,
    "rank_pos": 4,
    "rerank_neg": 3,
    "rank_neg": 3,
    "coarse_neg": 2,
    "prerank_neg": 1,
    "unflagged": 0,
}
"""Cascade priority of each stage (FS-LTR); a clicked exposure gets :data:`CLICK_PRIORITY`; padding is 0."""

RANK_CANDIDATE_STAGES: tuple[str, ...] = ("realshow", "rerank_pos", "rerank_neg", "rank_pos", "rank_neg")
"""Inference space of the ranking stage (coarse_neg excluded, paper section 3.3.1)."""

COARSE_CANDIDATE_STAGES: tuple[str, ...] = (*RANK_CANDIDATE_STAGES, "coarse_neg")
"""Inference space of the coarse-ranking stage."""

# --------------------------------------------------------------------------------------------------------------
# Store layout
# --------------------------------------------------------------------------------------------------------------

STORE_FORMAT = "stcrank.recflow"
STORE_FORMAT_VERSION = 2
MANIFEST = "manifest.json"
DAYS_DIR = "days"
OTHERS_DIR = "others"
DAY_TABLES: tuple[str, ...] = ("requests", "exposures", "candidates", "corpus")
"""Parquet tables of every day partition; ``ubm`` is added when the source has that day's UBM pickle."""

TIME_CODES: tuple[str, ...] = ("wday", "hour", "minute")
TIME_CARDINALITY: dict[str, int] = {"wday": 7, "hour": 24, "minute": 60}
"""Number of distinct values of each time code (0-based in the store: Monday is wday 0, like ``tm_wday``)."""

SEQ_STORE_COLUMNS: tuple[str, ...] = tuple(f"seq_{name}" for name in SEQ_ARRAY_COLUMNS)
"""Sequence columns of the ``requests`` table, each a fixed-size list of :data:`SEQ_LEN` values."""

# --------------------------------------------------------------------------------------------------------------
# Batch layout
# --------------------------------------------------------------------------------------------------------------

CONTEXT_FEATURES: tuple[str, ...] = TIME_CODES
"""Slots of ``batch["context"]``: request wday, hour, minute (UTC+8)."""

USER_FEATURES: tuple[str, ...] = USER_COLUMNS
"""Slots of ``batch["user"]``."""

ITEM_FEATURES: tuple[str, ...] = (*ITEM_ID_COLUMNS, "upload_wday", "upload_hour", "upload_minute")
"""Slots of ``batch["item"]`` and ``batch["candidates"]``."""

SEQ_FEATURES: tuple[str, ...] = ITEM_ID_COLUMNS
"""Slots of the last axis of ``batch["seq"]``."""

FEATURE_SIZE_KEYS: tuple[str, ...] = (*USER_COLUMNS, *ITEM_ID_COLUMNS, *TIME_CODES)
"""Keys of ``feature_sizes``. The upload time codes share the request's ``wday``/``hour``/``minute`` tables."""

FEATURE_OF_SLOT: dict[str, str] = {
    **{name: name for name in FEATURE_SIZE_KEYS},
    "upload_wday": "wday",
    "upload_hour": "hour",
    "upload_minute": "minute",
}
"""Batch slot -> the ``feature_sizes`` key (embedding table) it indexes."""

EXPOSURE_BATCH_KEYS: tuple[str, ...] = (
    "context",
    "user",
    "item",
    "seq",
    "seq_mask",
    "label",
    "request_id",
    "request_slot",
)
"""Keys of an exposures batch."""

CANDIDATE_BATCH_KEYS: tuple[str, ...] = (
    "context",
    "user",
    "seq",
    "seq_mask",
    "candidates",
    "candidate_mask",
    "candidate_label",
    "candidate_stage",
    "request_id",
)
"""Keys of a candidates batch (one row per request)."""
