"""A re-import after a SIGKILL at any point of the import, or after a failed day, equals a clean import byte for byte.

The import is run in a child process with ``STCRANK_IMPORT_KILL_AT`` naming the point where it kills itself; the
destination already holds an older store (so that the swap is exercised too). Then the import runs again, and every
file of the store must equal a clean import's, the manifest included (less its timings).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from stcrank.data.recflow.importer import import_recflow

TIMINGS = ("seconds", "phase_seconds", "phase_cpu_seconds")
KILL_AT_VARIABLE = "STCRANK_IMPORT_KILL_AT"
KILL_POINTS = ("chunk", "day-tables", "ubm", "day-committed", "official-tests", "manifest", "swap")


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMINGS}
    return value


def _store_bytes(root):
    files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    manifest = _without_timings(json.loads(files.pop("manifest.json")))
    return files, manifest


def _assert_same_store(got, expected):
    got_files, got_manifest = _store_bytes(got)
    expected_files, expected_manifest = _store_bytes(expected)
    assert sorted(got_files) == sorted(expected_files)
    for name in expected_files:
        assert got_files[name] == expected_files[name], name
    assert got_manifest == expected_manifest


_CHILD = """
import sys
from stcrank.data.recflow.importer import import_recflow
import_recflow(src=sys.argv[1], dst=sys.argv[2], ubm=sys.argv[3], chunk_rows=int(sys.argv[4]), overwrite=True)
"""

CASES = [
    (point, ubm) for ubm in ("all_stage", "pickle", "none") for point in KILL_POINTS if (point, ubm) != ("ubm", "none")
]
"""Every point in every ``--ubm`` mode (with ``none`` there is no UBM table to kill the import in)."""


@pytest.mark.slow
@pytest.mark.parametrize(("point", "ubm"), CASES)
def test_a_reimport_after_a_kill_equals_a_clean_import(make_release, tmp_path, point, ubm):
    release = make_release(days=3, history_days=0)
    clean = tmp_path / "clean"
    import_recflow(src=str(release), dst=str(clean), ubm=ubm, chunk_rows=97)
    dst = tmp_path / "store"
    import_recflow(src=str(release), dst=str(dst), ubm=ubm, days=["2024-01-13"])  # an older store in place
    env = {**os.environ, KILL_AT_VARIABLE: point}
    killed = subprocess.run(
        [sys.executable, "-c", _CHILD, str(release), str(dst), ubm, "97"], env=env, capture_output=True, text=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-500:]
    if point != "swap":  # killed before the swap: the older store is still in place, whole
        assert json.loads((dst / "manifest.json").read_text())["days"] == ["2024-01-13"]
    import_recflow(src=str(release), dst=str(dst), ubm=ubm, chunk_rows=97, overwrite=True)
    _assert_same_store(dst, clean)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean", "release", "store"]


@pytest.mark.parametrize("ubm", ["all_stage", "pickle", "none"])
def test_a_reimport_after_a_failed_day_equals_a_clean_import(make_release, tmp_path, ubm):
    release = make_release(days=3, history_days=0)
    clean = tmp_path / "clean"
    import_recflow(src=str(release), dst=str(clean), ubm=ubm)
    day = release / "realshow" / "2024-01-15.feather"
    good = day.read_bytes()
    day.write_bytes(good[:200])  # the last day fails, after the first two were written
    dst = tmp_path / "store"
    with pytest.raises(ValueError, match=r"2024-01-15\.feather"):
        import_recflow(src=str(release), dst=str(dst), ubm=ubm)
    day.write_bytes(good)
    import_recflow(src=str(release), dst=str(dst), ubm=ubm)
    _assert_same_store(dst, clean)


def test_the_kill_points_are_the_importers():
    from stcrank.data.recflow.importer import killpoints

    assert killpoints.KILL_POINTS == KILL_POINTS and killpoints.KILL_AT_VARIABLE == KILL_AT_VARIABLE
