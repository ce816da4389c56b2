"""A private redis-server on loopback for tests, and the pytest fixtures that start it.

Each server runs with no persistence (``--save "" --appendonly no``) on a free port of
127.0.0.1 and a UNIX socket in its own temp directory, so tests never touch a system Redis and
never collide with each other. `stop()`/`start()` keep the same port, which is what the outage
tests need: kill the server mid-traffic, start it again where the clients expect it.

    with RedisTestServer() as server:
        state = RedisState(server.url)
        server.kill()        # SIGKILL: a crash, not a shutdown
        server.start()       # same port, empty data, empty script cache

Tests that need it import the fixture explicitly:

    from tests.helpers.redis_server import redis_server, requires_redis  # noqa: F401
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest
import redis

REDIS_SERVER = os.environ.get("MXGUARD_TEST_REDIS_SERVER", "/usr/bin/redis-server")

#: skip a test or module when Debian's redis-server is not installed (`.ci/run` installs it)
requires_redis = pytest.mark.skipif(
    not (os.path.exists(REDIS_SERVER) or shutil.which("redis-server")),
    reason=f"redis-server is not installed ({REDIS_SERVER}); apt-get install redis-server",
)

__all__ = [
    "RedisTestSentinel",
    "RedisTestServer",
    "free_port",
    "redis_server",
    "redis_session",
    "requires_redis",
]


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just handed out on `host`; it may be taken again, but rarely is."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class RedisTestServer:
    def __init__(self, host: str = "127.0.0.1", port: int | None = None, *extra: str) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.extra = extra
        self._dir = Path(tempfile.mkdtemp(prefix="mxguard-redis-"))
        self.unixsocket = str(self._dir / "redis.sock")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.unixsocket}?db=0"

    def start(self, timeout: float = 10.0) -> None:
        binary = REDIS_SERVER if os.path.exists(REDIS_SERVER) else shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        args = [
            binary,
            "--bind", self.host,
            "--port", str(self.port),
            "--unixsocket", self.unixsocket,
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._dir),
            "--daemonize", "no",
            "--logfile", str(self._dir / "redis.log"),
            *self.extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                log = (self._dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {log}")
            with contextlib.suppress(redis.exceptions.RedisError), self.client() as c:
                if c.ping():
                    return
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not answer on {self.url} in {timeout}s")
            time.sleep(0.02)

    def client(self) -> redis.Redis:
        """A plain synchronous client, for looking inside the server from a test."""
        return redis.Redis(host=self.host, port=self.port, decode_responses=True, socket_timeout=5)

    def kill(self) -> None:
        """SIGKILL: what a crash or an OOM kill looks like to the clients."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, sig: signal.Signals) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisTestServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@pytest.fixture(scope="session")
def redis_session() -> Iterator[RedisTestServer]:
    """One server for a whole test session; tests that share it must flush or use own keys."""
    if not (os.path.exists(REDIS_SERVER) or shutil.which("redis-server")):
        pytest.skip(f"redis-server is not installed ({REDIS_SERVER})")
    with RedisTestServer() as server:
        yield server


@pytest.fixture
def redis_server() -> Iterator[RedisTestServer]:
    """A fresh server per test (about 20 ms to start), for tests that kill or restart it."""
    if not (os.path.exists(REDIS_SERVER) or shutil.which("redis-server")):
        pytest.skip(f"redis-server is not installed ({REDIS_SERVER})")
    with RedisTestServer() as server:
        yield server


class RedisTestSentinel:
    """A Redis Sentinel on loopback watching `master` as `service`, for the Sentinel URL form.

    Sentinel rewrites its config file, so it gets its own in a temp directory.
    """

    def __init__(self, master: RedisTestServer, service: str = "mxguard") -> None:
        self.master = master
        self.service = service
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="mxguard-sentinel-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.service}/0"

    def __enter__(self) -> RedisTestSentinel:
        conf = self._dir / "sentinel.conf"
        conf.write_text(
            f"bind 127.0.0.1\nport {self.port}\ndir {self._dir}\n"
            f"logfile {self._dir / 'sentinel.log'}\n"
            f"sentinel monitor {self.service} {self.master.host} {self.master.port} 1\n"
        )
        binary = REDIS_SERVER if os.path.exists(REDIS_SERVER) else shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        self.proc = subprocess.Popen(
            [binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(redis.exceptions.RedisError):
                c = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)
                with c:
                    if c.execute_command("SENTINEL", "get-master-addr-by-name", self.service):
                        return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"sentinel did not come up on port {self.port}")
            time.sleep(0.05)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None
        shutil.rmtree(self._dir, ignore_errors=True)
