"""`[policyd].workers`: several policy server processes behind the one listening socket.

One process answers with one core, and a busy Postfix keeps many connections open (one per
smtpd process). So the parent binds the socket and accepts, and hands each connection, for
its whole life, to the worker that has the fewest (over a UNIX socketpair, SCM_RIGHTS); the
worker serves it as its own. Connections spread evenly however few there are, and the
parent does nothing per request. The workers share the state as `serve` and a `policyd`
beside it do (SQLite's locks, Redis), and append to one event log (whole lines, O_APPEND).

The parent forwards SIGHUP and SIGUSR1, stops the workers on SIGTERM or SIGINT, and starts a
worker again when one dies (its connections are closed; Postfix reconnects). It forks before
any event loop or thread exists, so each worker starts clean.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
import socket
import sqlite3
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mxguard.config import Config, ConfigError, parse_hostport

log = logging.getLogger("mxguard.policyd")

#: what a worker writes to the parent when one of its connections has closed
CLOSED = b"x"
#: what a worker writes before its config error, as JSON [file, key, problem]
FAILED = b"E"
#: what a worker writes once it serves (its state open, its signal handlers in place)
READY = b"r"
#: a worker that dies sooner than this after its start is started again only after a pause
QUICK_DEATH = 5.0
#: a worker's exit code for an error in the config (as `mxguard` itself exits with): while
#: no worker has ever served, the parent stops the others and exits with it, rather than
#: start workers that cannot run; later (a state busy or down for a moment while a worker
#: restarts) it is one more death, and the worker is started again after a pause
CONFIG_FAILED = 2


def worker_count(cfg: Config) -> int:
    """`workers`, where 0 is the CPUs this process may run on (its affinity, which a
    container's cpuset narrows), not all the machine's."""
    if cfg.policyd.workers:
        return cfg.policyd.workers
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def clear_stale_socket(path: Path) -> None:
    """Remove a UNIX socket left by a run that ended without cleaning up; one that answers
    belongs to a running policyd, and taking its path would cut Postfix off from it."""
    try:
        if not stat.S_ISSOCK(path.lstat().st_mode):
            return  # not a socket: bind says what is wrong with it
    except FileNotFoundError:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink(missing_ok=True)  # nobody listens: stale
            return
    raise OSError(f"{path} is in use by a running server")


def check(cfg: Config) -> None:
    """What several workers cannot do, said before anything starts."""
    if worker_count(cfg) == 1:
        return
    if cfg.metrics.listen or cfg.metrics.control_socket:
        raise ConfigError(
            cfg.source,
            "policyd.workers",
            "several workers cannot share [metrics] (each would count only its own "
            "requests): use workers = 1 with metrics",
        )
    if cfg.state.url.startswith("memory:"):
        raise ConfigError(
            cfg.source,
            "policyd.workers",
            "several workers need a state they share (sqlite:// or redis://), not memory://",
        )


def prepare_state(cfg: Config) -> None:
    """Create a SQLite file before the workers start (they would race to); a no-op else."""
    from mxguard.state import open_state

    try:
        state = open_state(cfg.state.url, cfg.state.key_prefix)
        prepare = getattr(state, "prepare", None)
        if prepare is not None:
            prepare()
    except (OSError, ValueError, sqlite3.Error) as exc:
        raise ConfigError(cfg.source, "state.url", f"cannot open state: {exc}") from None


def listen_target(cfg: Config) -> Path | tuple[str, int]:
    """`[policyd].listen`: a UNIX socket path (with or without `unix:`), or (host, port)."""
    listen = cfg.policyd.listen.strip().removeprefix("unix:")
    if "/" in listen:
        return Path(listen)
    host, port = parse_hostport(listen, 10023)
    return host.strip("[]"), port


def unix_listener(path: Path) -> socket.socket:
    """A UNIX socket bound at `path` (a stale one replaced, a live one refused) that
    Postfix's smtpd, running as the mail_owner user, may connect to."""
    clear_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o666)
    return sock


def inet_name(sockname: tuple[str, int] | tuple[str, int, int, int]) -> str:
    """A bound TCP address as Postfix's check_policy_service writes it."""
    host, port = sockname[0], sockname[1]
    return f"inet:[{host}]:{port}" if ":" in host else f"inet:{host}:{port}"


def bind(cfg: Config) -> tuple[socket.socket, str]:
    """The listening socket and how Postfix's check_policy_service names it."""
    try:
        target = listen_target(cfg)
        if isinstance(target, Path):
            sock = unix_listener(target)
            where = f"unix:{target}"
        else:
            host, port = target
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            where = inet_name(sock.getsockname())
        sock.listen(512)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            cfg.source, "policyd.listen", f"cannot listen on {cfg.policyd.listen}: {exc}"
        ) from None
    sock.setblocking(False)
    return sock, where


@dataclass
class Worker:
    index: int
    pid: int
    channel: socket.socket
    started: float
    connections: int = 0
    ready: bool = False


class Supervisor:
    """The parent: accept, hand over, keep the workers running."""

    def __init__(
        self,
        cfg: Config,
        run_worker: Callable[[Config, socket.socket, int], int],
        announce: Callable[[str], None],
    ) -> None:
        self.cfg = cfg
        self.run_worker = run_worker
        self.announce = announce
        self.count = worker_count(cfg)
        self.workers: dict[int, Worker] = {}  # by index
        self.sel = selectors.DefaultSelector()
        self.signals: list[int] = []
        self.restart_at: dict[int, float] = {}  # index -> when to start it again
        self.failed: int | None = None  # a worker's config error: stop, exit with it
        self.error: ConfigError | None = None  # and what it was
        self.served = False  # some worker has been ready: config errors are behind us
        self.wake: tuple[socket.socket, socket.socket] | None = None

    def run(self) -> int:
        prepare_state(self.cfg)
        self.listener, where = bind(self.cfg)
        wake_r, wake_w = self.wake = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno())
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(signum, lambda n, _frame: self.signals.append(n))
        signal.signal(signal.SIGCHLD, lambda n, _frame: None)  # wakes the select
        self.sel.register(wake_r, selectors.EVENT_READ, "signal")
        for index in range(self.count):
            self._start(index)
        self.sel.register(self.listener, selectors.EVENT_READ, "accept")
        self.announce(
            f"mxguard policyd for {', '.join(self.cfg.local_domains())}; state "
            f"{self.cfg.state.url}; events {self.cfg.log.events}; {self.count} workers"
        )
        self.announce(f"policyd listening on {where}")
        try:
            while True:
                timeout = 1.0 if self.restart_at else None
                for key, _ in self.sel.select(timeout):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "signal":
                        with contextlib.suppress(OSError):
                            wake_r.recv(4096)
                    else:
                        self._heard(key.data)
                self._reap()
                if self.failed is not None:
                    break
                self._restart_due()
                if self._signalled():
                    break
        finally:
            self._stop()
            signal.set_wakeup_fd(-1)
        if self.failed is not None:
            raise self.error or ConfigError(self.cfg.source, "", "a policyd worker could not start")
        self.announce("stopping")
        return 0

    def _start(self, index: int) -> None:
        parent_end, child_end = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.set_wakeup_fd(-1)
                parent_end.close()
                self.listener.close()
                self.sel.close()
                for sock in self.wake or ():
                    sock.close()
                for w in self.workers.values():
                    w.channel.close()
                for signum in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(signum, signal.SIG_DFL)
                # forwarded reload and reopen must not kill a worker that is still starting
                # (their default is to terminate); its loop's handlers replace these
                for signum in (signal.SIGHUP, signal.SIGUSR1):
                    signal.signal(signum, signal.SIG_IGN)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                code = self.run_worker(self.cfg, child_end, index)
            except ConfigError as exc:  # the state cannot be opened, say: every worker's fate
                # the parent says it, once, as any config error is said
                with contextlib.suppress(OSError):
                    child_end.sendall(
                        FAILED + json.dumps([exc.file, exc.key, exc.problem]).encode()
                    )
                code = CONFIG_FAILED
            except BaseException:  # a worker reports and exits; it never returns to the loop
                log.exception("policyd worker %d failed", index)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        child_end.close()
        parent_end.setblocking(False)
        worker = Worker(index, pid, parent_end, time.monotonic())
        self.workers[index] = worker
        self.sel.register(parent_end, selectors.EVENT_READ, worker)

    def _accept(self) -> None:
        for _ in range(64):  # bounded: the rest waits for the next round
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: Postfix retries
                log.warning("policyd: accept failed: %s", exc)
                time.sleep(0.1)  # the socket stays readable: do not spin on it
                return
            with conn:
                # the fewest connections first, a worker still starting after those that serve
                order = sorted(
                    self.workers.values(), key=lambda w: (not w.ready, w.connections, w.index)
                )
                for worker in order:
                    try:
                        socket.send_fds(worker.channel, [b"c"], [conn.fileno()])
                    except OSError as exc:  # going, or its queue is full: the next one
                        log.warning(
                            "policyd: worker %d did not take a connection: %s", worker.index, exc
                        )
                        continue
                    worker.connections += 1
                    break
                # else none took it: closed, Postfix answers 451 4.3.5 and retries

    def _heard(self, worker: Worker) -> None:
        try:
            data = worker.channel.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data.startswith(FAILED):
            with contextlib.suppress(ValueError, TypeError):
                self.error = ConfigError(*json.loads(data[len(FAILED) :]))
            return
        if data:
            if READY in data:
                worker.ready = self.served = True
            worker.connections = max(0, worker.connections - data.count(CLOSED))
            return
        # the worker's end closed: it is exiting; _reap collects it
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(worker.channel)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for index, w in list(self.workers.items()):
                if w.pid != pid:
                    continue
                del self.workers[index]
                with contextlib.suppress(KeyError, ValueError):
                    self.sel.unregister(w.channel)
                w.channel.close()
                code = os.waitstatus_to_exitcode(status)
                if code == CONFIG_FAILED and not self.served:
                    self.failed = CONFIG_FAILED
                    continue
                if code < 0:
                    how = f"was killed by {signal.Signals(-code).name}"
                else:
                    how = f"exited with {code}"
                    if code == CONFIG_FAILED and self.error:
                        how += f": {self.error}"
                quick = time.monotonic() - w.started < QUICK_DEATH
                when = f"in {QUICK_DEATH:.0f} s (it had just started)" if quick else "now"
                log.warning(
                    "policyd: worker %d (pid %d) %s; starting it again %s", index, pid, how, when
                )
                self.restart_at[index] = time.monotonic() + (QUICK_DEATH if quick else 0.0)

    def _restart_due(self) -> None:
        now = time.monotonic()
        for index, at in list(self.restart_at.items()):
            if at <= now and not self.signals:
                del self.restart_at[index]
                self._start(index)

    def _signalled(self) -> bool:
        signals, self.signals = self.signals, []
        stop = False
        for signum in signals:
            if signum in (signal.SIGTERM, signal.SIGINT):
                stop = True
            else:  # SIGHUP: reload recipients; SIGUSR1: reopen the event log
                for w in self.workers.values():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(w.pid, signum)
        return stop

    def _stop(self) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(self.listener)
        self.listener.close()
        for w in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15.0
        while self.workers and time.monotonic() < deadline:
            self._reap_stopping()
            time.sleep(0.05)
        for w in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(w.pid, 0)
        target = listen_target(self.cfg)
        if isinstance(target, Path):
            with contextlib.suppress(OSError):
                target.unlink()

    def _reap_stopping(self) -> None:
        for index, w in list(self.workers.items()):
            try:
                pid, _ = os.waitpid(w.pid, os.WNOHANG)
            except ChildProcessError:
                pid = w.pid
            if pid:
                del self.workers[index]
                w.channel.close()
