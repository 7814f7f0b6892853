import errno
import json
import logging
import os

import optuna
import pytest

from stcrank.io import OutputError
from stcrank.tuning.journal import JournalError, damaged_line, open_journal, repair_torn_tail, storage_errors


def _record(number: int) -> bytes:
    return json.dumps({"op_code": 0, "worker_id": "w", "study_name": f"s{number}", "directions": [1]}).encode() + b"\n"


def test_a_failed_append_leaves_the_journal_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "study.log"
    storage = open_journal(path)
    optuna.create_study(storage=storage, study_name="s")
    size = path.stat().st_size

    def full(_):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)  # the bytes reached the file, but could not be stored
    with pytest.raises(OSError, match="No space left"):
        optuna.create_study(storage=storage, study_name="other")
    monkeypatch.undo()
    assert path.stat().st_size == size and path.read_bytes().endswith(b"\n")
    assert not (tmp_path / "study.log.lock").exists()  # the lock was released
    assert [study.study_name for study in optuna.get_all_study_summaries(open_journal(path))] == ["s"]


def test_a_torn_last_line_is_cut_off_with_a_warning(tmp_path, caplog):
    path = tmp_path / "study.log"
    path.write_bytes(_record(0) + _record(1) + b'{"op_code": 0, "wor')
    with caplog.at_level(logging.WARNING, logger="stcrank.tuning.journal"):
        storage = open_journal(path)
    assert path.read_bytes() == _record(0) + _record(1)
    assert "study.log ended in an incomplete record (19 bytes" in caplog.text
    assert {study.study_name for study in storage.get_all_studies()} == {"s0", "s1"}


@pytest.mark.parametrize("content", [b"", _record(0), b'{"torn'], ids=["empty", "complete", "only-torn"])
def test_repair_keeps_complete_records(tmp_path, content):
    path = tmp_path / "study.log"
    path.write_bytes(content)
    removed = repair_torn_tail(path, optuna.storages.journal.JournalFileOpenLock(str(path)))
    assert path.read_bytes() == (content if content.endswith(b"\n") or not content else b"")
    assert removed == (0 if content.endswith(b"\n") or not content else len(content))


def test_a_damaged_line_inside_the_journal_is_named(tmp_path):
    path = tmp_path / "study.log"
    path.write_bytes(_record(0) + b'{"op_code": 0, "wor' + _record(1) + _record(2))
    assert damaged_line(path) == 2
    with pytest.raises(JournalError, match=r"study\.log is damaged at line 2.*head -n 1"), storage_errors(str(path)):
        optuna.load_study(study_name="s2", storage=open_journal(path))


def test_a_full_disk_names_the_storage(tmp_path):
    with (
        pytest.raises(OutputError, match=r"the tuning journal .*study\.log: no space left.*the study resumes"),
        storage_errors(str(tmp_path / "study.log")),
    ):
        raise OSError(errno.ENOSPC, "No space left on device")
    with (
        pytest.raises(OutputError, match=r"the tuning storage sqlite:///x\.db: no space left"),
        storage_errors("sqlite:///x.db"),
    ):
        raise RuntimeError("(sqlite3.OperationalError) database or disk is full")
