"""Property-based checks of import_recflow on corrupted releases: a clear error, and nothing that reads as complete.

A tiny release is generated once; each example copies it, corrupts one file (truncation at a random offset,
garbage bytes, a dropped column, a column of another dtype, NaN labels, ids that do not fit) and imports it. The
import must raise :class:`~stcrank.data.recflow.errors.RecFlowFormatError` (or, for a pickle naming a forbidden
global, :class:`~stcrank.data.recflow.pickles.UnsafePickleError`) whose message names the file (and the column
where one is at fault), and must leave no manifest and no partition in place for the failing day.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stcrank.data.recflow.errors import RecFlowFormatError
from stcrank.data.recflow.importer import import_recflow
from stcrank.data.recflow.pickles import UnsafePickleError
from stcrank.data.recflow.synth import synth_recflow

PROPS = settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
TINY = {"users": 8, "days": 2, "seed": 3, "items": 200, "retrieved": 40, "prerank_keep": 25, "coarse_keep": 18}
TINY = {**TINY, "rank_keep": 12, "stage_samples": 2}
DAYS = ("2024-01-13", "2024-01-14")
FEATHERS = [f"{kind}/{day}.feather" for kind in ("all_stage", "realshow") for day in DAYS]
PICKLES = [f"{kind}/{day}.pkl" for kind in ("seq_effective_50_dict", "ubm_seq_request_id_dict") for day in DAYS]
ID_COLUMNS = ["user_id", "video_id", "author_id", "category_level_two", "device_id"]
LABEL_COLUMNS = ["effective_view", "like", "realshow", "rank_pos"]


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("importer_props") / "release"
    synth_recflow(out=str(out), **TINY)
    assert sorted(p.name for p in (out / "all_stage").iterdir()) == [f"{d}.feather" for d in DAYS]
    return out


def fresh_copy(release: Path, tmp_path: Path) -> tuple[Path, Path]:
    work = tmp_path / "work"
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(release, work / "release")
    return work / "release", work / "store"


def assert_nothing_reads_as_complete(store: Path, failing: str) -> None:
    """No manifest, no committed partition of the failing day, no leftover temporary partition."""
    assert not (store / "manifest.json").exists()
    days = store / "days"
    if days.exists():
        assert not [p.name for p in days.iterdir() if p.name.startswith(".")]
        day = Path(failing).stem
        if not failing.startswith("others/"):
            assert not (days / day).exists(), f"partition {day} was committed although {failing} is corrupt"


def import_fails(src: Path, dst: Path, relative: str, *patterns: str) -> None:
    with pytest.raises((RecFlowFormatError, UnsafePickleError)) as caught:
        import_recflow(src=str(src), dst=str(dst))
    message = str(caught.value)
    if isinstance(caught.value, RecFlowFormatError):
        assert relative in message, message
        for pattern in patterns:
            assert pattern in message, message
    assert_nothing_reads_as_complete(dst, relative)


def rewrite(path: Path, change) -> None:
    table = feather.read_table(path)
    feather.write_feather(change(table), path)


def test_the_uncorrupted_release_imports(release, tmp_path):
    src, dst = fresh_copy(release, tmp_path)
    manifest = import_recflow(src=str(src), dst=str(dst))
    assert manifest["days"] == list(DAYS) and (dst / "manifest.json").exists()


@PROPS
@given(file=st.sampled_from(FEATHERS), cut=st.floats(0.0, 0.98), garbage=st.binary(max_size=16))
def test_truncated_feather_files_are_named(release, tmp_path, file, cut, garbage):
    src, dst = fresh_copy(release, tmp_path)
    data = (src / file).read_bytes()
    (src / file).write_bytes(data[: int(len(data) * cut)] + garbage)
    import_fails(src, dst, file)


@PROPS
@given(file=st.sampled_from([*PICKLES, "others/id_cnt.pkl"]), cut=st.floats(0.0, 0.98), garbage=st.binary(max_size=16))
def test_truncated_or_garbage_pickles_are_named(release, tmp_path, file, cut, garbage):
    src, dst = fresh_copy(release, tmp_path)
    data = (src / file).read_bytes()
    (src / file).write_bytes(data[: int(len(data) * cut)] + garbage)
    import_fails(src, dst, file)


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    file=st.sampled_from([*PICKLES, "others/id_cnt.pkl"]),
    edits=st.lists(st.tuples(st.floats(0.0, 0.999), st.binary(min_size=1, max_size=6), st.booleans()), max_size=3),
)
def test_mutated_pickles_import_or_are_named(release, tmp_path, file, edits):
    """Bytes overwritten or inserted anywhere in a pickle: the import succeeds or names the file, nothing else."""
    src, dst = fresh_copy(release, tmp_path)
    data = bytearray((src / file).read_bytes())
    for where, blob, insert in edits:
        at = int(len(data) * where)
        data[at : at if insert else at + len(blob)] = blob
    (src / file).write_bytes(bytes(data))
    try:
        manifest = import_recflow(src=str(src), dst=str(dst))
    except (RecFlowFormatError, UnsafePickleError) as error:  # UnsafePickleError is a RecFlowFormatError
        assert file in str(error), str(error)
        assert_nothing_reads_as_complete(dst, file)
    else:
        assert (dst / "manifest.json").exists() and manifest["days"] == list(DAYS)


@PROPS
@given(file=st.sampled_from(FEATHERS), column=st.sampled_from(ID_COLUMNS + LABEL_COLUMNS + ["request_id"]))
def test_a_dropped_column_is_named(release, tmp_path, file, column):
    src, dst = fresh_copy(release, tmp_path)
    rewrite(src / file, lambda t: t.drop_columns([column]))
    import_fails(src, dst, file, repr(column))


@PROPS
@given(
    file=st.sampled_from(FEATHERS),
    column=st.sampled_from(ID_COLUMNS + LABEL_COLUMNS),
    dtype=st.sampled_from([pa.float64(), pa.string()]),
)
def test_a_column_of_another_dtype_is_named(release, tmp_path, file, column, dtype):
    src, dst = fresh_copy(release, tmp_path)
    rewrite(src / file, lambda t: t.set_column(t.schema.get_field_index(column), column, t.column(column).cast(dtype)))
    import_fails(src, dst, file, repr(column))


@PROPS
@given(file=st.sampled_from(FEATHERS), column=st.sampled_from(LABEL_COLUMNS), data=st.data())
def test_nan_labels_are_named(release, tmp_path, file, column, data):
    src, dst = fresh_copy(release, tmp_path)

    def spoil(table: pa.Table) -> pa.Table:
        values = table.column(column).to_numpy().astype(np.float64)
        values[data.draw(st.integers(0, len(values) - 1))] = np.nan
        return table.set_column(table.schema.get_field_index(column), column, pa.array(values))

    rewrite(src / file, spoil)
    import_fails(src, dst, file, repr(column))


@PROPS
@given(
    file=st.sampled_from(FEATHERS),
    column=st.sampled_from(ID_COLUMNS),
    bad=st.sampled_from([2**31, 2**40, 2**62, -1, -(2**40)]),
    data=st.data(),
)
def test_ids_that_do_not_fit_are_named(release, tmp_path, file, column, bad, data):
    src, dst = fresh_copy(release, tmp_path)

    def spoil(table: pa.Table) -> pa.Table:
        values = table.column(column).to_numpy().copy()
        values[data.draw(st.integers(0, len(values) - 1))] = bad
        return table.set_column(table.schema.get_field_index(column), column, pa.array(values))

    rewrite(src / file, spoil)
    import_fails(src, dst, file, repr(column))


@PROPS
@given(file=st.sampled_from(FEATHERS), column=st.sampled_from(LABEL_COLUMNS), bad=st.sampled_from([2, -1, 2**40]))
def test_flags_other_than_zero_and_one_are_named(release, tmp_path, file, column, bad):
    src, dst = fresh_copy(release, tmp_path)

    def spoil(table: pa.Table) -> pa.Table:
        values = table.column(column).to_numpy().copy()
        values[0] = bad
        return table.set_column(table.schema.get_field_index(column), column, pa.array(values))

    rewrite(src / file, spoil)
    import_fails(src, dst, file, repr(column))
