"""The `dns_server` fixture: a fresh authoritative DNS server on 127.0.0.1 per test.

A fresh server per test keeps zones, faults and query counts from leaking between tests; it
starts in a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .dnsserver import DnsTestServer


@pytest.fixture
def dns_server() -> Iterator[DnsTestServer]:
    with DnsTestServer() as server:
        yield server
