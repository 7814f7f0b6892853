"""The documented Parquet schema of e-shop explore/focus logs (schema ``stcrank.eshop``, version 1).

Two tables, the ones a team exports from its own serving logs:

* the **F log** (``f_log.parquet``): one row per F-stage page view;
* the **E log** (``e_log.parquet``): one row per homepage exposure;

plus a ``manifest.json`` (schema name and version, file names, embedding sizes of the categorical columns).
Ids and categorical features are integers starting at 1 (0 is reserved for padding); ``truth_*`` columns
exist only in simulated logs and are optional. Columns are checked by *kind*: an integer column accepts any
integer type, a float column any float type, a flag ``bool`` or integers 0/1; the reader casts them to the
canonical types below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

from stcrank.errors import StcrankError

SCHEMA_NAME = "stcrank.eshop"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
F_LOG_FILE = "f_log.parquet"
E_LOG_FILE = "e_log.parquet"

Role = Literal["key", "feature", "label", "truth"]


class EshopSchemaError(StcrankError, ValueError):
    """A log file or manifest does not follow the schema; the message names the file and the column."""


@dataclass(frozen=True)
class Column:
    """One column of a log table.

    Attributes:
        name: Column name.
        dtype: Canonical Arrow type.
        role: ``"key"`` (ids and positions), ``"feature"`` (model input), ``"label"`` (feedback) or
            ``"truth"`` (simulator-only ground truth).
        description: What the column holds.
        required: Whether a file must have it.
        categorical: Whether it indexes an embedding table (its size is in the manifest's feature sizes).
    """

    name: str
    dtype: pa.DataType
    role: Role
    description: str
    required: bool = True
    categorical: bool = False


def _c(name: str, dtype: pa.DataType, role: Role, description: str, *, categorical: bool = False) -> Column:
    return Column(name, dtype, role, description, required=role != "truth", categorical=categorical)


_USER_FEATURES = (
    _c(
        "user_segment",
        pa.int32(),
        "feature",
        "User segment: favourite category as the profile shows it",
        categorical=True,
    ),
    _c("user_activity_bucket", pa.int32(), "feature", "Activity level 1..5 (profile)", categorical=True),
    _c("user_purchase_bucket", pa.int32(), "feature", "Purchase level 1..5 (profile)", categorical=True),
    _c("user_price_bucket", pa.int32(), "feature", "Price tolerance 1..5 (profile)", categorical=True),
)

_ITEM_FEATURES = (
    _c("item_id", pa.int64(), "feature", "Shown item id (1-based)", categorical=True),
    _c("item_category", pa.int32(), "feature", "Category of the shown item (1-based)", categorical=True),
    _c("item_brand", pa.int32(), "feature", "Brand (author, shop) of the shown item (1-based)", categorical=True),
    _c("item_price_bucket", pa.int32(), "feature", "Price bucket of the shown item (1-based)", categorical=True),
    _c("item_price", pa.float32(), "feature", "Price of the shown item (GMV of a purchase)"),
)

F_LOG_COLUMNS: tuple[Column, ...] = (
    _c("request_id", pa.int64(), "key", "F request (one ranked list of page_size items)"),
    _c("session_id", pa.int64(), "key", "F session (entered from one detail page)"),
    _c("visit_id", pa.int64(), "key", "Homepage visit the session was entered from (joins the E log)"),
    _c("user_id", pa.int64(), "feature", "User id (1-based)", categorical=True),
    _c("position", pa.int32(), "key", "Depth of the view in the F session, 1-based"),
    _c("page_position", pa.int32(), "key", "Position within its request's list, 1-based"),
    _c("request_index", pa.int32(), "feature", "Request number within the session, 0-based"),
    *_USER_FEATURES,
    _c("trigger_item_id", pa.int64(), "feature", "Trigger item (clicked on the homepage)", categorical=True),
    _c("trigger_category", pa.int32(), "feature", "Category of the trigger", categorical=True),
    _c("trigger_brand", pa.int32(), "feature", "Brand of the trigger", categorical=True),
    _c("trigger_price_bucket", pa.int32(), "feature", "Price bucket of the trigger", categorical=True),
    *_ITEM_FEATURES,
    _c(
        "hist_same_category_views",
        pa.int32(),
        "feature",
        "Valid views of the item's category in the session before the request (trigger included)",
    ),
    _c("hist_ipv", pa.int32(), "feature", "Valid views in the F session before the request"),
    _c("watch_time", pa.float32(), "label", "Seconds the item was watched"),
    _c("ipv", pa.bool_(), "label", "Valid view: watch_time > 2 s"),
    _c("purchase", pa.bool_(), "label", "The user bought the item (cvr label)"),
    _c("swipe_down", pa.bool_(), "label", "The user swiped to the next item (sdr label)"),
    _c("exit", pa.bool_(), "label", "The user left the F stage after this item"),
    _c("truth_vtr2", pa.float32(), "truth", "True P(T > 2 s) at the view's state"),
    _c("truth_vtr5", pa.float32(), "truth", "True P(T > 5 s)"),
    _c("truth_vtr25", pa.float32(), "truth", "True P(T > 25 s)"),
    _c("truth_cvr", pa.float32(), "truth", "True P(purchase)"),
    _c("truth_sdr", pa.float32(), "truth", "True P(swipe down) (target of the eq. 5 label)"),
    _c("truth_sdr_filtered", pa.float32(), "truth", "Target of the eq. 6 label (exit-after-purchase weight 0)"),
    _c("truth_e0", pa.float32(), "truth", "True P(exit | no purchase)"),
    _c("truth_e1", pa.float32(), "truth", "True P(exit | purchase)"),
)
"""Columns of the F log, one row per F-stage page view."""

E_LOG_COLUMNS: tuple[Column, ...] = (
    _c("request_id", pa.int64(), "key", "Homepage request (one per visit)"),
    _c("visit_id", pa.int64(), "key", "Homepage visit"),
    _c("user_id", pa.int64(), "feature", "User id (1-based)", categorical=True),
    _c("position", pa.int32(), "key", "Position on the homepage, 1-based"),
    *_USER_FEATURES,
    *_ITEM_FEATURES,
    _c("click", pa.bool_(), "label", "The user clicked the item (opened its detail page; an E-stage IPV)"),
    _c("purchase", pa.bool_(), "label", "The user bought on the detail page (E-stage conversion)"),
    _c("swipe", pa.bool_(), "label", "The user swiped from the detail page into the F stage (sdr* label)"),
    _c("f_session_id", pa.int64(), "key", "F session entered by the swipe, -1 if none"),
    _c("f_purchases", pa.int32(), "label", "Purchases in that F session"),
    _c("f_purchase", pa.bool_(), "label", "At least one purchase in that F session (the eq. 7 look-ahead label)"),
    _c("f_ipv", pa.int32(), "label", "Valid views in that F session"),
    _c("f_depth", pa.int32(), "label", "Items seen in that F session"),
    _c("f_gmv", pa.float32(), "label", "Purchased value in that F session"),
    _c("truth_ctr", pa.float32(), "truth", "True P(click)"),
    _c("truth_detail_cvr", pa.float32(), "truth", "True P(detail-page purchase | click)"),
    _c("truth_swipe", pa.float32(), "truth", "True P(swipe into F | click)"),
)
"""Columns of the E log, one row per homepage exposure."""

TABLES: dict[str, tuple[str, tuple[Column, ...]]] = {
    "f_log": (F_LOG_FILE, F_LOG_COLUMNS),
    "e_log": (E_LOG_FILE, E_LOG_COLUMNS),
}
"""Table name -> (default file name, columns)."""


def arrow_schema(columns: tuple[Column, ...], *, with_truth: bool = True) -> pa.Schema:
    """The canonical Arrow schema of a table.

    Args:
        columns: :data:`F_LOG_COLUMNS` or :data:`E_LOG_COLUMNS`.
        with_truth: Whether to include the optional ``truth_*`` columns.

    Returns:
        The schema.
    """
    return pa.schema([pa.field(c.name, c.dtype, nullable=False) for c in columns if with_truth or c.required])


def _kind(dtype: pa.DataType) -> str:
    if pa.types.is_boolean(dtype):
        return "bool"
    if pa.types.is_integer(dtype):
        return "int"
    if pa.types.is_floating(dtype):
        return "float"
    return str(dtype)


def _expected(column: Column) -> str:
    kind = _kind(column.dtype)
    return {
        "bool": "bool (or integers 0/1)",
        "int": f"an integer type ({column.dtype})",
        "float": f"a float type ({column.dtype})",
    }[kind]


def validate_table(
    table: pa.Table, columns: tuple[Column, ...], *, file: str, feature_sizes: dict[str, int] | None = None
) -> pa.Table:
    """Check a log table against the schema and cast it to the canonical types.

    Checks: every required column present; each column of the right kind and its values within the canonical
    type's range; no nulls; flags 0/1; floats finite (no NaN, no infinity); ``watch_time`` not negative;
    categorical ids in ``[1, feature_size)`` when sizes are given.

    Args:
        table: The table read from ``file``.
        columns: The schema's columns.
        file: File name used in error messages.
        feature_sizes: Embedding sizes from the manifest (optional).

    Returns:
        The table with canonical column types, in schema order (extra columns kept after them).

    Raises:
        EshopSchemaError: Naming the file, the column and what was expected.
    """
    import pyarrow.compute as pc  # here, not at the top: importing it costs start-up time of every command

    names = set(table.column_names)
    missing = [c for c in columns if c.required and c.name not in names]
    if missing:
        listed = ", ".join(f"{c.name!r} ({_expected(c)})" for c in missing)
        raise EshopSchemaError(f"{file}: missing column(s) {listed}")
    out: dict[str, pa.ChunkedArray] = {}
    for column in columns:
        if column.name not in names:
            continue
        values = table.column(column.name)
        where = f"{file}: column {column.name!r}"
        want, got = _kind(column.dtype), _kind(values.type)
        ok = got == want or (want == "bool" and got == "int") or (want == "float" and got == "int")
        if not ok:
            raise EshopSchemaError(f"{where} has type {values.type}; expected {_expected(column)}")
        if values.null_count:
            raise EshopSchemaError(f"{where} has {values.null_count} null value(s); expected none")
        if want == "bool" and got == "int" and len(values):
            bad = pc.sum(pc.invert(pc.is_in(values, pa.array([0, 1], values.type)))).as_py()
            if bad:
                raise EshopSchemaError(f"{where} has {bad} value(s) other than 0/1; expected a flag")
        if want == "float" and got == "float" and len(values):
            nans = pc.sum(pc.is_nan(values)).as_py()
            if nans:
                raise EshopSchemaError(f"{where} has {nans} NaN value(s); expected finite numbers")
            infinite = pc.sum(pc.is_inf(values)).as_py()
            if infinite:
                raise EshopSchemaError(f"{where} has {infinite} infinite value(s); expected finite numbers")
        try:
            values = values.cast(column.dtype)
        except pa.ArrowInvalid as err:  # a value out of the canonical type's range (the safe cast refuses it)
            raise EshopSchemaError(
                f"{where} has type {values.type} with values that do not fit {_expected(column)} ({err})"
            ) from err
        if column.name == "watch_time" and len(values) and pc.min(values).as_py() < 0:
            raise EshopSchemaError(f"{where} has negative values; expected seconds >= 0")
        if column.categorical and len(values):
            low = pc.min(values).as_py()
            if low < 1:
                raise EshopSchemaError(f"{where} has value {low}; expected ids >= 1 (0 is the padding row)")
            if feature_sizes is not None and column.name in feature_sizes:
                high = pc.max(values).as_py()
                if high >= feature_sizes[column.name]:
                    raise EshopSchemaError(
                        f"{where} has value {high}; expected < {feature_sizes[column.name]} (manifest feature size)"
                    )
        out[column.name] = values
    for name in table.column_names:
        if name not in out:
            out[name] = table.column(name)
    return pa.table(out)


def categorical_columns(columns: tuple[Column, ...]) -> list[str]:
    """Names of the columns that index an embedding table.

    Args:
        columns: The schema's columns.

    Returns:
        The names, in schema order.
    """
    return [c.name for c in columns if c.categorical]


def markdown_table(columns: tuple[Column, ...]) -> str:
    """The schema as a Markdown table (name, type, role, required, description), as in docs/simulator.md.

    Args:
        columns: The schema's columns.

    Returns:
        The table.
    """
    lines = ["| column | type | role | required | description |", "|---|---|---|---|---|"]
    for c in columns:
        description = c.description.replace("|", "\\|")
        lines.append(f"| `{c.name}` | {c.dtype} | {c.role} | {'yes' if c.required else 'no'} | {description} |")
    return "\n".join(lines)
