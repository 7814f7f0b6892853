import errno
import os
from pathlib import Path

import pytest

from stcrank.errors import StcrankError
from stcrank.io import OutputError, atomic_path, disk_problem, output_error, writing


def _full(filename: str | None = None, filename2: str | None = None) -> OSError:
    if filename2 is not None:  # a failed copy or move: OSError(errno, strerror, filename, winerror, filename2)
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename, None, filename2)
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), *([filename] if filename else []))


def test_a_disk_problem_is_found_anywhere_in_the_chain():
    try:
        try:
            raise _full()
        finally:
            raise AssertionError("Should not reach.")  # how optuna masks it
    except AssertionError as error:
        found = disk_problem(error)
    assert found is not None and found[0].errno == errno.ENOSPC
    assert disk_problem(ValueError("no")) is None
    assert disk_problem(RuntimeError("(sqlite3.OperationalError) database or disk is full")) is not None


@pytest.mark.parametrize(
    ("code", "reason", "hint"),
    [
        (errno.ENOSPC, "no space left on the device", "free space"),
        (errno.EDQUOT, "the disk quota is exceeded", "free space"),
        (errno.EACCES, "permission denied", "choose a location you can write to"),
        (errno.EROFS, "the file system is read-only", "choose a location you can write to"),
    ],
)
def test_the_message_names_the_file_the_reason_and_what_to_do(code, reason, hint):
    error = output_error(OSError(code, os.strerror(code)), "out/table.md", "the results table")
    assert isinstance(error, OutputError) and isinstance(error, StcrankError) and isinstance(error, OSError)
    assert str(error).startswith(f"cannot write the results table out/table.md: {reason}; {hint}")


def test_without_a_path_the_error_names_the_destination_or_the_folder():
    assert "runs/last.ckpt" in str(output_error(_full("/tmp/tmpabc", "runs/last.ckpt")))
    assert "/tmp/x.bin" in str(output_error(_full("/tmp/x.bin")))
    assert "cannot write under runs/version_0:" in str(output_error(_full(), where="runs/version_0"))
    assert output_error(FileNotFoundError(errno.ENOENT, "missing")) is None


def test_writing_converts_and_removes_the_partial_destination(tmp_path):
    partial = tmp_path / "last.ckpt"
    with pytest.raises(OutputError, match=r"last\.ckpt: no space left"), writing(None, remove_partial=True):
        partial.write_bytes(b"half")
        raise _full("/tmp/tmpabc", str(partial))
    assert not partial.exists()
    with pytest.raises(KeyError), writing(tmp_path / "x"):
        raise KeyError("not a disk problem")


def test_atomic_path_leaves_nothing_behind_on_a_full_disk(tmp_path, monkeypatch):
    target = tmp_path / "out" / "table.md"
    with atomic_path(target, "the results table") as temporary:
        assert temporary.parent == target.parent and temporary.suffix == ".md"
        temporary.write_text("old\n")
    assert target.read_text() == "old\n"

    def full_write(self, data, *args, **kwargs):
        with open(self, "w") as file:
            file.write(data[:2])
        raise _full()

    monkeypatch.setattr(Path, "write_text", full_write)
    with (
        pytest.raises(OutputError, match=r"the results table .*table\.md: no space left"),
        atomic_path(target, "the results table") as temporary,
    ):
        temporary.write_text("new content\n")
    monkeypatch.undo()
    assert target.read_text() == "old\n" and sorted(path.name for path in target.parent.iterdir()) == ["table.md"]
