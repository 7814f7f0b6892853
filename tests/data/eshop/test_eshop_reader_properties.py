"""Property-based checks of the e-shop log reader: every corruption gives an EshopSchemaError naming the file and
the column, and valid variations (other integer widths, 0/1 integer flags) read back to the canonical table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stcrank.data.eshop.reader import read_eshop, read_manifest, read_table
from stcrank.data.eshop.schema import E_LOG_COLUMNS, F_LOG_COLUMNS, EshopSchemaError, validate_table

PROPS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FILE = "logs/e_log.parquet"


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from stcrank.data.eshop.synth import synth_eshop

    out = tmp_path_factory.mktemp("eshop_props") / "logs"
    synth_eshop(out=str(out), users=20, sessions=40, items=500, candidates=30, homepage_candidates=20, homepage_size=5)
    return out


@pytest.fixture(scope="module")
def e_log(logs) -> pa.Table:
    return pq.read_table(logs / "e_log.parquet")


@pytest.fixture(scope="module")
def sizes(logs) -> dict[str, int]:
    return read_manifest(logs)["feature_sizes"]


def column(name: str):
    return next(c for c in E_LOG_COLUMNS if c.name == name)


def replace(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


INT32_COLUMNS = [c.name for c in E_LOG_COLUMNS if c.dtype == pa.int32()]
FLOAT_COLUMNS = [c.name for c in E_LOG_COLUMNS if pa.types.is_floating(c.dtype)]
FLAG_COLUMNS = [c.name for c in E_LOG_COLUMNS if pa.types.is_boolean(c.dtype)]
CATEGORICAL = [c.name for c in E_LOG_COLUMNS if c.categorical]


@PROPS
@given(st.sampled_from(INT32_COLUMNS), st.sampled_from([2**31, 2**40, 2**62, -(2**40)]), st.data())
def test_integers_outside_the_canonical_type_raise_naming_the_column(e_log, name, bad, data):
    values = e_log.column(name).to_numpy().astype(np.int64)
    at = data.draw(st.integers(0, len(values) - 1))
    values[at] = bad
    with pytest.raises(EshopSchemaError, match=rf"^{FILE}: column '{name}' has "):
        validate_table(replace(e_log, name, pa.array(values)), E_LOG_COLUMNS, file=FILE)


@PROPS
@given(st.sampled_from(FLOAT_COLUMNS), st.sampled_from([np.nan, np.inf, -np.inf]), st.data())
def test_non_finite_floats_raise_naming_the_column(e_log, name, bad, data):
    values = e_log.column(name).to_numpy().astype(np.float64)
    values[data.draw(st.integers(0, len(values) - 1))] = bad
    with pytest.raises(EshopSchemaError, match=rf"^{FILE}: column '{name}' has 1 (NaN|infinite) value\(s\)"):
        validate_table(replace(e_log, name, pa.array(values)), E_LOG_COLUMNS, file=FILE)


@PROPS
@given(st.sampled_from(FLAG_COLUMNS), st.sampled_from([pa.int8(), pa.int64(), pa.uint8()]), st.data())
def test_integer_flags_read_as_bools_and_other_values_are_rejected(e_log, name, dtype, data):
    flags = e_log.column(name).to_numpy(zero_copy_only=False).astype(np.int64)
    table = validate_table(replace(e_log, name, pa.array(flags, dtype)), E_LOG_COLUMNS, file=FILE)
    assert table.column(name).type == pa.bool_() and table.column(name).equals(e_log.column(name).cast(pa.bool_()))
    flags[data.draw(st.integers(0, len(flags) - 1))] = data.draw(st.sampled_from([2, 7]))
    with pytest.raises(EshopSchemaError, match=rf"^{FILE}: column '{name}' has 1 value\(s\) other than 0/1"):
        validate_table(replace(e_log, name, pa.array(flags, dtype)), E_LOG_COLUMNS, file=FILE)


@PROPS
@given(st.sampled_from(CATEGORICAL), st.booleans(), st.data())
def test_unknown_categories_and_the_padding_id_are_rejected(e_log, sizes, name, beyond, data):
    """An id at or beyond the manifest's table size, or the padding id 0, never reaches an embedding lookup."""
    values = e_log.column(name).to_numpy().astype(np.int64)
    values[data.draw(st.integers(0, len(values) - 1))] = sizes[name] + data.draw(st.integers(0, 3)) if beyond else 0
    expected = "manifest feature size" if beyond else "expected ids >= 1"
    with pytest.raises(EshopSchemaError, match=rf"^{FILE}: column '{name}' has value .*{expected}"):
        validate_table(
            replace(e_log, name, pa.array(values, column(name).dtype)), E_LOG_COLUMNS, file=FILE, feature_sizes=sizes
        )


@PROPS
@given(st.sampled_from([c.name for c in E_LOG_COLUMNS if c.required]), st.booleans())
def test_a_dropped_or_mistyped_column_is_named_with_its_expected_type(e_log, name, drop):
    if drop:
        table, pattern = e_log.drop_columns([name]), rf"missing column\(s\) '{name}' \("
    else:
        table, pattern = replace(e_log, name, pa.array(["x"] * e_log.num_rows)), rf"column '{name}' has type string"
    with pytest.raises(EshopSchemaError, match=rf"^{FILE}: {pattern}"):
        validate_table(table, E_LOG_COLUMNS, file=FILE)


@PROPS
@given(st.sampled_from([c.name for c in E_LOG_COLUMNS if c.required]), st.data())
def test_nulls_are_rejected_naming_the_column(e_log, name, data):
    values = e_log.column(name).to_pylist()
    values[data.draw(st.integers(0, len(values) - 1))] = None
    with pytest.raises(EshopSchemaError, match=rf"^{FILE}: column '{name}' has 1 null value\(s\)"):
        validate_table(replace(e_log, name, pa.array(values, e_log.schema.field(name).type)), E_LOG_COLUMNS, file=FILE)


def test_an_empty_log_is_valid(e_log):
    empty = validate_table(e_log.slice(0, 0), E_LOG_COLUMNS, file=FILE)
    assert empty.num_rows == 0 and empty.schema.field("item_id").type == pa.int64()


@PROPS
@given(cut=st.floats(0.0, 0.999), garbage=st.binary(min_size=0, max_size=64))
def test_truncated_or_garbage_files_are_named(logs, tmp_path, cut, garbage):
    data = (logs / "f_log.parquet").read_bytes()
    target = tmp_path / "f_log.parquet"
    target.write_bytes(data[: int(len(data) * cut)] + garbage)
    with pytest.raises(EshopSchemaError, match=r"f_log\.parquet: not a readable Parquet file"):
        read_table(target, F_LOG_COLUMNS)


@PROPS
@given(st.sampled_from(["files", "feature_sizes", "schema", "schema_version"]), st.sampled_from([None, 3, "x", []]))
def test_manifest_with_bad_values_is_named(logs, tmp_path, key, bad):
    root = tmp_path / "copy"
    if not root.exists():
        shutil.copytree(logs, root)
    manifest = json.loads((logs / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**manifest, key: bad}))
    with pytest.raises(EshopSchemaError, match=r"manifest\.json: "):
        read_eshop(root)
