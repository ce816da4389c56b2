"""Parser worker processes: a lean child interpreter fed blocks over a pipe.

``multiprocessing`` would add a fork server and a resource tracker (two more
interpreters) and load the parent's modules; on a 2-core box the memory budget is
tight, so each worker is ``python -S`` importing only the parsers, reading requests
on stdin and writing pickled results on stdout.  A request is a block, either sent
inline (compressed input, stdin) or, for a plain file, as a byte range the worker
reads from its own copy of the file descriptor, so the parent never copies the log
through a pipe.  At most one inline block is outstanding per worker, and spans are a
few bytes, so neither side can block the other on a full pipe.
"""

from __future__ import annotations

import os
import struct
import sys
from _pickle import dumps, loads  # what pickle re-exports, without pickle.py's imports

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into workers
if TYPE_CHECKING:
    import queue
    import threading

_LEN = struct.Struct("<Q")
# request header: block length (0: stop), file offset (INLINE: the block follows)
_REQ = struct.Struct("<Qq")
INLINE = -1


def _read_exact(fd: int, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = os.readv(fd, [view[got:]])
        if k == 0:
            raise EOFError
        got += k
    return bytes(buf)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        k = os.write(fd, view)
        view = view[k:]


def _pread_exact(fd: int, n: int, offset: int) -> bytes:
    data = os.pread(fd, n, offset)
    while len(data) < n:
        more = os.pread(fd, n - len(data), offset + len(data))
        if not more:
            raise EOFError(f"file shrank under the report ({offset + len(data)})")
        data += more
    return data


def main(fd: int | None = None) -> None:
    """Worker side: parse blocks until a zero-length request or end of input."""
    from mxguard.logs.blocks import parse_block

    stdin = sys.stdin.buffer  # read(n) fills one new bytes object: no extra copy
    while True:
        head = stdin.read(_REQ.size)
        if len(head) < _REQ.size:
            return
        n, offset = _REQ.unpack(head)
        if n == 0:
            return
        if offset == INLINE:
            data = stdin.read(n)
            if len(data) < n:
                return
        else:
            assert fd is not None
            data = _pread_exact(fd, n, offset)
        res = parse_block(data)
        del data
        out = dumps(res, protocol=5)
        del res
        _write_all(1, _LEN.pack(len(out)) + out)


class Worker:
    """Parent side of one worker process; ``fd``, if given, is a file it may read spans of."""

    def __init__(self, fd: int | None = None) -> None:
        # imported here: the worker side, which imports this module too, needs neither
        import subprocess
        from pathlib import Path

        src = str(Path(__file__).resolve().parents[2])
        # os._exit: a worker has nothing to flush or clean up (results go out by
        # os.write), and tearing down its interpreter would hold up the report's end
        code = (
            f"import sys; sys.path.insert(0, {src!r}); from mxguard.logs.worker import main; "
            f"main({fd!r}); import os; os._exit(0)"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-S", "-B", "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            pass_fds=(fd,) if fd is not None else (),
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in = self.proc.stdin.fileno()
        self._out = self.proc.stdout.fileno()
        self.busy = False
        self._outbox: queue.SimpleQueue[bytes | None] | None = None
        self._sender: threading.Thread | None = None

    def _start_sender(self) -> queue.SimpleQueue[bytes | None]:
        # Inline blocks are written by a thread of their own, so the parent can queue the next
        # block while the worker still parses the last one (no idle gap between blocks) and
        # still read results meanwhile: two pipes that fill up can never block each other.
        # Spans are a few bytes and need none of this.
        import queue
        import threading

        outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._outbox = outbox
        self._sender = threading.Thread(
            target=self._send_loop, args=(outbox,), name="report-feed", daemon=True
        )
        self._sender.start()
        return outbox

    def _send_loop(self, outbox: queue.SimpleQueue[bytes | None]) -> None:
        while True:
            block = outbox.get()
            if block is None:
                return
            try:
                self._write_block(block)
            except OSError:  # the worker is gone; receive() says so
                return

    def send(self, block: bytes) -> None:
        outbox = self._outbox if self._outbox is not None else self._start_sender()
        outbox.put(block)
        self.busy = True

    def send_span(self, span: tuple[int, int]) -> None:
        """Ask for the block at [start, end) of the worker's file."""
        start, end = span
        _write_all(self._in, _REQ.pack(end - start, start))
        self.busy = True

    def _write_block(self, block: bytes) -> None:
        header = _REQ.pack(len(block), INLINE)
        sent = os.writev(self._in, [header, block])
        if sent < len(header):
            _write_all(self._in, header[sent:])
            sent = len(header)
        _write_all(self._in, memoryview(block)[sent - len(header) :])
        self.busy = True

    def receive(self) -> object:
        try:
            (n,) = _LEN.unpack(_read_exact(self._out, _LEN.size))
            data = _read_exact(self._out, n)
        except EOFError:
            raise RuntimeError(f"parser worker exited with status {self.proc.wait()}") from None
        self.busy = False
        return loads(data)

    def stop(self) -> None:
        """Tell the worker to exit, without waiting (so that several can exit at once)."""
        if self._outbox is not None and self._sender is not None:
            self._outbox.put(None)
            self._sender.join(timeout=30)
            self._outbox = self._sender = None
        assert self.proc.stdin is not None
        if self.proc.stdin.closed:
            return
        try:
            _write_all(self._in, _REQ.pack(0, 0))
        except OSError:  # the worker is gone already; wait() says how
            pass
        self.proc.stdin.close()

    def close(self) -> None:
        self.stop()
        import subprocess

        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        if self._outbox is not None:
            self._outbox.put(None)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    main()
