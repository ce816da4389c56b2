"""Opening inputs (plain, .gz, .bz2, .xz, or ``-`` for stdin) and cutting them into
blocks of whole lines for the workers.

Compression is recognised by magic bytes, not by name, so rotated files such as
``mail.log.2`` that happen to be gzipped still work.  Progress is measured on the
raw (compressed) bytes, the only size known in advance.

A plain regular file can instead be cut into byte ranges (:meth:`Source.spans`) that
the workers read themselves: the main process then never copies the log, it only
looks at the few bytes around each cut.  Both ways cut at the same places, so the
blocks, and with them the results, are the same.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import stat
import sys
from collections.abc import Iterator
from typing import BinaryIO

BLOCK_SIZE = 512 * 1024  # bytes of whole lines per block: bounds memory, keeps workers busy
CUT_PROBE = 16 * 1024  # bytes read before a cut to find the last line break (lines are short)


class InputError(Exception):
    """A problem with an input file, reported as one line and exit status 2."""


class Source:
    """An opened input: a byte stream of log text, and where the raw reading is."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.raw: BinaryIO
        regular = False
        self._span_pos: int | None = None
        if path == "-":
            self.raw = sys.stdin.buffer
            self.size = 0
        else:
            try:
                self.raw = open(path, "rb")  # noqa: SIM115 - closed in close()
                st = os.fstat(self.raw.fileno())
                self.size = st.st_size
                regular = stat.S_ISREG(st.st_mode)
            except FileNotFoundError:
                raise InputError(f"{path}: no such file") from None
            except IsADirectoryError:
                raise InputError(f"{path}: is a directory") from None
            except PermissionError:
                raise InputError(f"{path}: permission denied") from None
            except OSError as e:
                raise InputError(f"{path}: {e.strerror or e}") from None
        head = self._peek()
        self.stream: BinaryIO
        if head.startswith(b"\x1f\x8b"):
            self.stream = gzip.GzipFile(fileobj=self.raw, mode="rb")  # type: ignore[assignment]
            self.compression = "gzip"
        elif head.startswith(b"BZh"):
            self.stream = bz2.BZ2File(self.raw, "rb")  # type: ignore[assignment]
            self.compression = "bzip2"
        elif head.startswith(b"\xfd7zXZ\x00"):
            self.stream = lzma.LZMAFile(self.raw, "rb")  # type: ignore[assignment]  # noqa: SIM115
            self.compression = "xz"
        else:
            self.stream = self.raw
            self.compression = "none"
        #: a plain regular file, whose blocks can be read by offset (see spans)
        self.direct = regular and self.compression == "none" and hasattr(os, "pread")

    def _peek(self) -> bytes:
        peek = getattr(self.raw, "peek", None)
        if peek is not None:
            return bytes(peek(6)[:6])
        pos = self.raw.tell()
        head = self.raw.read(6)
        self.raw.seek(pos)
        return head

    def fileno(self) -> int:
        return self.raw.fileno()

    def position(self) -> int:
        if self._span_pos is not None:
            return self._span_pos
        try:
            return self.raw.tell() if self.path != "-" else 0
        except (OSError, ValueError):
            return 0

    def blocks(self, size: int = BLOCK_SIZE) -> Iterator[bytes]:
        """Blocks ending on a line boundary (the last one may lack its newline)."""
        carry = b""
        read = self.stream.read
        while True:
            try:
                chunk = read(size)
            except (OSError, EOFError, lzma.LZMAError) as e:
                raise InputError(f"{self.path}: cannot read ({e})") from None
            if not chunk:
                break
            cut = chunk.rfind(b"\n")
            if cut < 0:
                carry += chunk
                if len(carry) > 64 * size:
                    raise InputError(f"{self.path}: no line breaks; not a text log")
                continue
            yield carry + chunk[: cut + 1]
            carry = chunk[cut + 1 :]
        if carry:
            yield carry

    def spans(self, size: int = BLOCK_SIZE) -> Iterator[tuple[int, int]]:
        """(start, end) byte ranges of exactly the blocks :meth:`blocks` would yield.

        Only for a ``direct`` source.  Like ``blocks``, the file is taken in chunks of
        ``size`` and each block ends at the last line break of a chunk (a chunk
        without one joins the next); only the end of each chunk is read here.
        """
        fd = self.raw.fileno()
        start = chunk_start = 0
        self._span_pos = 0
        try:
            while True:
                end = min(chunk_start + size, os.fstat(fd).st_size)
                if end <= chunk_start:
                    break
                cut = self._last_break(fd, chunk_start, end)
                if cut < 0:
                    if end - start > 64 * size:
                        raise InputError(f"{self.path}: no line breaks; not a text log")
                else:
                    self._span_pos = end
                    yield start, cut + 1
                    start = cut + 1
                chunk_start = end
        except OSError as e:
            raise InputError(f"{self.path}: cannot read ({e})") from None
        self._span_pos = chunk_start
        if start < chunk_start:
            yield start, chunk_start

    @staticmethod
    def _last_break(fd: int, start: int, end: int) -> int:
        """Offset of the last ``\\n`` in [start, end) of the file, -1 if none."""
        probe = max(start, end - CUT_PROBE)
        cut = os.pread(fd, end - probe, probe).rfind(b"\n")
        if cut < 0 and probe > start:
            probe = start
            cut = os.pread(fd, end - start, start).rfind(b"\n")
        return probe + cut if cut >= 0 else -1

    def close(self) -> None:
        if self.path != "-":
            try:
                self.stream.close()
            finally:
                self.raw.close()
