"""The bytes of a pickle and the arguments of its instructions, read block by block with every length checked.

:class:`PickleInput` reads a file (or bytes) a block at a time for
:class:`~stcrank.data.recflow.pickle_reader.PickleReader`: an instruction's fixed-size argument is always in the
current block, a payload's announced length is checked against the bytes left in the file before anything is
read (so ``BINBYTES8`` of 2**62 costs nothing), a large payload is read past the block without growing it, and a
text argument (protocol 0, ``GLOBAL``) has a fixed cap. Bytes handed over earlier can be read again with ``pread``
(a memo reference to an array released from memory).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from stcrank.data.recflow.pickle_builders import PickleFormatError

BLOCK = 1 << 20
"""Bytes read from the file at a time."""
LINE = 256
"""Longest text argument of a name, number or memo index (protocol 0 and ``GLOBAL``)."""


class PickleInput:
    """The bytes of a pickle: a file read block by block (``pread`` for what is read again), or bytes.

    Args:
        path: The file, or None with ``data``.
        data: The pickle's bytes, or None with ``path``.

    Attributes:
        size: The pickle's size in bytes.
        base: The file offset of the current block's first byte.
    """

    def __init__(self, path: Path | None = None, data: bytes | None = None) -> None:
        if path is not None:
            self.file: Any = path.open("rb")
            self.size = os.fstat(self.file.fileno()).st_size
            self.fd: int | None = self.file.fileno()
        else:
            assert data is not None
            self.file = io.BytesIO(data)
            self.size = len(data)
            self.fd = None
        self.data = data
        self.base = 0

    def read(self, n: int) -> bytes:
        """The next ``n`` bytes of the file (fewer at its end)."""
        return self.file.read(n)

    def pread(self, offset: int, n: int) -> bytes:
        """``n`` bytes at ``offset``, whatever has been read (OSError if the file no longer holds them)."""
        if self.fd is not None:
            out = os.pread(self.fd, n, offset)
        else:
            assert self.data is not None
            out = self.data[offset : offset + n]
        if len(out) != n:
            raise OSError(f"the file changed while it was read (wanted {n} bytes at {offset})")
        return out

    def close(self) -> None:
        """Close the file."""
        self.file.close()

    def fill(self, buf: bytes, pos: int, n: int) -> bytes:
        """A block starting at ``pos`` of ``buf`` holding at least ``n`` bytes (fewer only at the end of the file)."""
        rest = buf[pos:]
        self.base += pos
        more = self.read(max(n - len(rest), BLOCK))
        return rest + more if rest else more

    def check_length(self, n: int, pos: int, at: int) -> None:
        """Refuse a payload of ``n`` bytes at ``pos`` of the block if the file does not hold that many more."""
        left = self.size - self.base - pos
        if n > left:
            raise PickleFormatError(
                f"announces {n:,} bytes at byte {at} but only {max(left, 0):,} follow; the file is truncated or "
                "corrupt",
                at,
            )

    def payload(self, buf: bytes, pos: int, end: int, n: int, at: int) -> tuple[bytes, bytes, int, int]:
        """``n`` bytes at ``pos`` (checked with :meth:`check_length` first), and the block and position after them."""
        if end - pos >= n:
            return buf[pos : pos + n], buf, pos + n, end
        if n > BLOCK:  # a large payload: read it past the block, without growing the block to it
            have = buf[pos:]
            self.base += end
            payload = have + self.read(n - len(have))
            self.base += n - len(have)
            if len(payload) != n:
                raise PickleFormatError(f"ends inside a payload at byte {at}; the file is truncated", at)
            return payload, b"", 0, 0
        buf = self.fill(buf, pos, n)
        if len(buf) < n:
            raise PickleFormatError(f"ends inside a payload at byte {at}; the file is truncated", at)
        return buf[:n], buf, n, len(buf)

    def line(self, buf: bytes, pos: int, at: int, cap: int = LINE) -> tuple[bytes, bytes, int, int]:
        """A text argument up to its newline (at most ``cap`` bytes), and the block and position after it."""
        newline = buf.find(b"\n", pos, pos + cap + 1)
        while newline < 0:
            have = len(buf) - pos
            if have > cap:
                raise PickleFormatError(
                    f"a text argument at byte {at} longer than {cap:,} bytes; the file is corrupt", at
                )
            grown = self.fill(buf, pos, have + BLOCK)
            if len(grown) == have:
                raise PickleFormatError(f"ends inside a text argument at byte {at}; the file is truncated", at)
            buf, pos = grown, 0
            newline = buf.find(b"\n", 0, cap + 1)
        return buf[pos:newline], buf, newline + 1, len(buf)


def ascii_name(text: bytes, at: int) -> str:
    """A ``GLOBAL`` module or name."""
    try:
        return text.decode("ascii")
    except UnicodeDecodeError:
        raise PickleFormatError(f"a global name that is not ASCII at byte {at}", at) from None


def memo_index(line: bytes, at: int) -> int:
    """A protocol 0 memo index."""
    try:
        return int(line)
    except ValueError:
        raise PickleFormatError(f"a memo index {line[:20]!r} at byte {at}; the file is corrupt", at) from None


def decode_payload(origin: tuple[str, int, int], raw: bytes) -> Any:
    """A payload read again from the file, decoded as it was the first time (``origin``: kind, offset, length)."""
    kind = origin[0]
    if kind == "bytes":
        return raw
    if kind == "bytearray":
        return bytearray(raw)
    if kind == "utf8":
        return raw.decode("utf-8", "surrogatepass")
    if kind == "latin1":  # _codecs.encode(text, "latin1") of a UTF-8 text payload
        return raw.decode("utf-8", "surrogatepass").encode("latin-1")
    raise AssertionError(kind)
