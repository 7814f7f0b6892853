"""Where an import writes: never the release or unrelated files, the old store kept until the new one is complete."""

from __future__ import annotations

import fcntl
import json
import os

import pytest

from stcrank.data.recflow.errors import RecFlowFormatError, StoreDestinationError
from stcrank.data.recflow.importer import import_recflow
from stcrank.data.recflow.store import RecFlowStore


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_the_release_itself_or_a_folder_holding_it_is_refused(make_release, tmp_path):
    release = make_release(days=1)
    before = _tree(release)
    for dst in (release, tmp_path, release / ".." / release.name):
        with pytest.raises(StoreDestinationError, match="is the release folder or holds it"):
            import_recflow(src=str(release), dst=str(dst), overwrite=True)
    assert _tree(release) == before


def test_a_folder_of_other_files_is_refused_even_with_overwrite(make_release, tmp_path):
    release = make_release(days=1)
    dst = tmp_path / "mine"
    (dst / "days").mkdir(parents=True)
    (dst / "notes.txt").write_text("keep me")
    (dst / "days" / "photo.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(StoreDestinationError, match=r"holds files that are not a RecFlow store \(days, notes\.txt"):
        import_recflow(src=str(release), dst=str(dst), overwrite=True)
    assert (dst / "notes.txt").read_text() == "keep me" and (dst / "days" / "photo.jpg").exists()
    file_dst = tmp_path / "a_file"
    file_dst.write_text("x")
    with pytest.raises(StoreDestinationError, match="is a file"):
        import_recflow(src=str(release), dst=str(file_dst), overwrite=True)


def test_the_old_store_stays_until_the_new_one_is_complete(make_release, tmp_path):
    release = make_release(days=2)
    dst = tmp_path / "store"
    old = import_recflow(src=str(release), dst=str(dst), days=["2024-01-13"])
    with pytest.raises(StoreDestinationError, match="already holds a RecFlow store; pass --overwrite true"):
        import_recflow(src=str(release), dst=str(dst))
    day = release / "all_stage" / "2024-01-14.feather"
    day.write_bytes(day.read_bytes()[:300])  # the new import fails on its second day
    with pytest.raises(RecFlowFormatError, match=r"2024-01-14\.feather"):
        import_recflow(src=str(release), dst=str(dst), overwrite=True)
    store = RecFlowStore(dst)  # the old store, whole and readable
    assert store.manifest == old and len(store.requests("2024-01-13", ["request_id"])["request_id"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release", "store"]  # no staging, no lock left


def test_leftovers_of_an_interrupted_import_do_not_block_the_next(make_release, tmp_path):
    release = make_release(days=1)
    dst = tmp_path / "store"
    (dst / "days" / ".2024-01-13.partial-4242").mkdir(parents=True)
    (dst / "days" / "2024-01-13").mkdir()
    (dst / "days" / "2024-01-13" / "requests.parquet").write_bytes(b"half")
    (dst / "others").mkdir()
    (dst / ".manifest.json.partial-4242").write_text("{")
    (tmp_path / ".store.staging-4242" / "days").mkdir(parents=True)  # a killed import's staging directory
    manifest = import_recflow(src=str(release), dst=str(dst))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release", "store"]
    assert sorted(p.name for p in dst.iterdir()) == ["days", "manifest.json", "others"]
    assert RecFlowStore(dst).manifest == json.loads((dst / "manifest.json").read_text()) == manifest


def test_a_second_import_into_the_same_destination_stops(make_release, tmp_path):
    release = make_release(days=1)
    lock = tmp_path / ".store.import-lock"
    with open(lock, "w") as held:  # as a running import holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("12345")
        held.flush()
        with pytest.raises(StoreDestinationError, match=r"another import into it is running \(pid 12345\)"):
            import_recflow(src=str(release), dst=str(tmp_path / "store"))
    assert not (tmp_path / "store").exists()
    import_recflow(src=str(release), dst=str(tmp_path / "store"))  # released: the next import runs
    assert not lock.exists()


def test_a_link_to_a_store_replaces_the_store_it_points_to(make_release, tmp_path):
    release = make_release(days=1)
    real = tmp_path / "real"
    import_recflow(src=str(release), dst=str(real))
    os.symlink(real, tmp_path / "link")
    import_recflow(src=str(release), dst=str(tmp_path / "link"), overwrite=True)
    assert (tmp_path / "link").is_symlink() and RecFlowStore(tmp_path / "link").days == ["2024-01-13"]


def test_days_must_be_dates(make_release, tmp_path):
    from stcrank.errors import ConfigError

    release = make_release(days=1)
    with pytest.raises(ConfigError, match=r"--days '\.\./\.\./x' is not a date"):
        import_recflow(src=str(release), dst=str(tmp_path / "store"), days=["../../x"])
    assert not (tmp_path / "store").exists()
