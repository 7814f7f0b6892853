from pathlib import Path

import pyarrow as pa
import pytest

from stcrank.data.eshop.schema import (
    E_LOG_COLUMNS,
    F_LOG_COLUMNS,
    EshopSchemaError,
    arrow_schema,
    categorical_columns,
    markdown_table,
    validate_table,
)

DOCS = Path(__file__).resolve().parents[3] / "docs" / "simulator.md"


def _valid_f_table(rows: int = 3) -> pa.Table:
    schema = arrow_schema(F_LOG_COLUMNS)
    values = {}
    for field in schema:
        if pa.types.is_boolean(field.type):
            values[field.name] = pa.array([i % 2 == 0 for i in range(rows)], field.type)
        elif pa.types.is_integer(field.type):
            values[field.name] = pa.array([i + 1 for i in range(rows)], field.type)
        else:
            values[field.name] = pa.array([0.5 * (i + 1) for i in range(rows)], field.type)
    return pa.Table.from_pydict(values, schema=schema)


def test_schema_names_and_truth_columns_are_optional():
    full = arrow_schema(F_LOG_COLUMNS)
    plain = arrow_schema(F_LOG_COLUMNS, with_truth=False)
    assert [f.name for f in full][:4] == ["request_id", "session_id", "visit_id", "user_id"]
    assert {f.name for f in full} - {f.name for f in plain} == {c.name for c in F_LOG_COLUMNS if c.role == "truth"}
    assert all(c.name.startswith("truth_") == (c.role == "truth") for c in F_LOG_COLUMNS + E_LOG_COLUMNS)
    assert "item_id" in categorical_columns(F_LOG_COLUMNS) and "watch_time" not in categorical_columns(F_LOG_COLUMNS)
    listed = {c.name for c in F_LOG_COLUMNS}
    assert {
        "request_id",
        "session_id",
        "user_id",
        "position",
        "page_position",
        "trigger_item_id",
        "trigger_category",
        "item_id",
        "item_category",
        "item_brand",
        "item_price_bucket",
        "watch_time",
        "purchase",
        "swipe_down",
        "exit",
        "ipv",
    } <= listed
    assert {"request_id", "user_id", "item_id", "item_category", "click", "swipe", "f_purchases"} <= {
        c.name for c in E_LOG_COLUMNS
    }


def test_a_valid_table_passes_and_is_cast_to_canonical_types():
    table = _valid_f_table()
    loose = table.set_column(
        table.schema.get_field_index("item_id"), "item_id", table.column("item_id").cast(pa.int32())
    )
    loose = loose.set_column(loose.schema.get_field_index("purchase"), "purchase", pa.array([1, 0, 1], pa.int8()))
    loose = loose.append_column("extra", pa.array([1, 2, 3]))
    out = validate_table(loose, F_LOG_COLUMNS, file="f.parquet")
    assert out.schema.field("item_id").type == pa.int64() and out.schema.field("purchase").type == pa.bool_()
    assert out.column("purchase").to_pylist() == [True, False, True] and out.column_names[-1] == "extra"
    no_truth = table.drop_columns([c.name for c in F_LOG_COLUMNS if c.role == "truth"])
    validate_table(no_truth, F_LOG_COLUMNS, file="f.parquet")


def _replace(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop_columns(["watch_time"]), "f.parquet: missing column\\(s\\) 'watch_time' \\(a float type"),
        (
            lambda t: _replace(t, "item_id", pa.array(["a", "b", "c"])),
            "column 'item_id' has type string; expected an integer",
        ),
        (lambda t: _replace(t, "user_id", pa.array([1, None, 3], pa.int64())), "column 'user_id' has 1 null"),
        (
            lambda t: _replace(t, "watch_time", pa.array([1.0, float("nan"), 2.0], pa.float32())),
            "'watch_time' has 1 NaN",
        ),
        (lambda t: _replace(t, "watch_time", pa.array([1.0, -1.0, 2.0], pa.float32())), "'watch_time' has negative"),
        (
            lambda t: _replace(t, "purchase", pa.array([0, 2, 1], pa.int64())),
            "'purchase' has 1 value\\(s\\) other than 0/1",
        ),
        (lambda t: _replace(t, "item_category", pa.array([0, 1, 2], pa.int32())), "'item_category' has value 0"),
        (lambda t: _replace(t, "ipv", pa.array([0.5, 1.0, 0.0])), "'ipv' has type double; expected bool"),
    ],
)
def test_bad_tables_name_the_file_the_column_and_the_expectation(change, message):
    with pytest.raises(EshopSchemaError, match=message):
        validate_table(change(_valid_f_table()), F_LOG_COLUMNS, file="f.parquet")


def test_ids_are_checked_against_the_manifest_sizes():
    with pytest.raises(EshopSchemaError, match="'item_id' has value 3; expected < 3"):
        validate_table(_valid_f_table(), F_LOG_COLUMNS, file="f.parquet", feature_sizes={"item_id": 3})


def test_docs_list_every_column():
    text = DOCS.read_text()
    for column in F_LOG_COLUMNS + E_LOG_COLUMNS:
        assert f"`{column.name}`" in text, column.name
    # the documented tables are the generated ones, verbatim
    assert markdown_table(F_LOG_COLUMNS) in text
    assert markdown_table(E_LOG_COLUMNS) in text
