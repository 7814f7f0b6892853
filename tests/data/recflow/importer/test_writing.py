"""A full disk during an import names the file it could not write and leaves the old store as it was."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from stcrank.data.recflow.importer import import_recflow
from stcrank.data.recflow.store import RecFlowStore
from stcrank.io import OutputError


def _full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _store_files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("chunk_rows", [None, 50])
def test_a_full_disk_names_the_file_and_keeps_the_old_store(make_release, tmp_path, monkeypatch, chunk_rows):
    release = make_release(days=2)
    dst = tmp_path / "store"
    import_recflow(src=str(release), dst=str(dst), days=["2024-01-13"])
    before = _store_files(dst)
    # Whole days go through pq.write_table, streamed ones through ParquetWriter.write_table.
    monkeypatch.setattr(pq, "write_table", _full)
    monkeypatch.setattr(pq.ParquetWriter, "write_table", _full)
    with pytest.raises(OutputError) as caught:
        import_recflow(src=str(release), dst=str(dst), overwrite=True, chunk_rows=chunk_rows)
    message = str(caught.value)
    assert "cannot write the store file" in message and ".parquet: no space left on the device" in message
    assert f"--dst {dst} was left as it was" in message and "\n" not in message
    assert _store_files(dst) == before
    assert RecFlowStore(dst).days == ["2024-01-13"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release", "store"]  # no staging, no lock left


def test_a_full_disk_at_the_manifest_names_it(make_release, tmp_path, monkeypatch):
    release = make_release(days=1)
    dst = tmp_path / "store"
    real_write_text = Path.write_text

    def write_text(self, data, *args, **kwargs):
        if ".manifest.json.partial-" in self.name:
            real_write_text(self, data[:10], *args, **kwargs)
            _full()
        return real_write_text(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(OutputError, match=r"cannot write the store manifest .*manifest\.json: no space left"):
        import_recflow(src=str(release), dst=str(dst))
    assert not dst.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release"]


_CHILD = """
import errno, os, sys
import pyarrow.parquet as pq
from stcrank.cli import console_main

def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

pq.write_table = full
pq.ParquetWriter.write_table = full
console_main(["data", "import-recflow", "--src", sys.argv[1], "--dst", sys.argv[2], "--chunk_rows", "null"])
"""


def test_the_command_line_prints_a_full_disk_as_one_line(make_release, tmp_path):
    release = make_release(days=1)
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(release), str(tmp_path / "store")], capture_output=True, text=True
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write the store file" in lines[0] and "Traceback" not in result.stderr
    assert "no space left on the device" in lines[0] and "was left as it was" in lines[0]
