"""Read a running mxguard's metrics and status over HTTP, by TCP or by its control socket.

Only the daemon's endpoints are read, never its files: what `top` shows is what the daemon
counts, including what no file holds (open connections, recent rates).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

TIMEOUT = 3.0


class Unreachable(Exception):
    """The endpoint did not answer (daemon down, wrong address, no permission)."""


@dataclass(frozen=True)
class Source:
    """Where a daemon answers: http://HOST:PORT or a UNIX socket path."""

    url: str | None = None
    socket_path: str | None = None

    def __str__(self) -> str:
        return f"unix:{self.socket_path}" if self.socket_path else str(self.url)

    def _connect(self) -> socket.socket:
        if self.socket_path:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(TIMEOUT)
            s.connect(self.socket_path)
            return s
        parts = urlsplit(self.url or "")
        if parts.scheme != "http" or not parts.hostname:
            raise Unreachable(f"{self.url}: use http://HOST:PORT")
        return socket.create_connection((parts.hostname, parts.port or 80), timeout=TIMEOUT)

    def get(self, path: str) -> bytes:
        try:
            with self._connect() as s:
                s.sendall(f"GET {path} HTTP/1.0\r\nHost: mxguard\r\n\r\n".encode())
                chunks = []
                while chunk := s.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise Unreachable(f"{self}: {exc.strerror or exc}") from None
        head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].split()
        if len(status) < 2 or status[1] != b"200":
            raise Unreachable(f"{self}{path}: {head[:80].decode('latin-1', 'replace')}")
        return body


@dataclass
class Snapshot:
    """One reading: the status document and every metric sample, flattened."""

    status: dict[str, Any]
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)
    families: set[str] = field(default_factory=set)

    def select(self, name: str, **match: str) -> Iterator[tuple[dict[str, str], float]]:
        for n, labels, value in self.samples:
            if n == name and all(labels.get(k) == v for k, v in match.items()):
                yield labels, value

    def total(self, name: str, **match: str) -> float:
        return sum(v for _, v in self.select(name, **match))

    def by(self, name: str, key: str, **match: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for labels, value in self.select(name, **match):
            out[labels.get(key, "")] = out.get(labels.get(key, ""), 0.0) + value
        return out

    def has(self, name: str) -> bool:
        return any(n == name for n, _, _ in self.samples)


def parse_metrics(text: str) -> tuple[list[tuple[str, dict[str, str], float]], set[str]]:
    samples, families = [], set()
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for s in family.samples:
            samples.append((s.name, dict(s.labels), float(s.value)))
    return samples, families


def read(source: Source) -> Snapshot:
    status = json.loads(source.get("/status.json"))
    samples, families = parse_metrics(source.get("/metrics").decode("utf-8", "replace"))
    return Snapshot(status, samples, families)
