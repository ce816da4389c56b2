"""`mxguard audit` as a user runs it: a subprocess, real DNS, real listeners, exit codes."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

GOOD_ZONE = """
@      MX 10 mx1
@      MX 20 mx2
@      MX 30 trap
@      MX 90 fake
mx1    A  127.0.0.11
mx2    A  127.0.0.12
trap   A  127.0.0.13
fake   A  127.0.0.19
"""


async def run_cli(*args: str) -> tuple[int, str, str]:
    """Run the command while this loop keeps serving the tier the command probes."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mxguard",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def audit_args(dns_server: Any, ports: dict[str, int], *more: str) -> list[str]:
    args = [
        "audit",
        "audit.test",
        "--probe",
        "--nameserver",
        dns_server.nameserver,
        "--timeout",
        "1",
        "--interval",
        "0",
        "--helo",
        "probe.client.test",
    ]
    for address, port in ports.items():
        args += ["--port-map", f"{address}={port}"]
    return args + list(more)


async def test_good_tier_passes_at_warning(
    tier: Any, peers: Any, zone: Any, dns_server: Any
) -> None:
    zone(GOOD_ZONE)
    peers.closed("127.0.0.19")
    ports = {**tier.ports, **peers.ports}
    code, out, err = await run_cli(
        *audit_args(
            dns_server,
            ports,
            "--config",
            str(tier.config_path),
            "--tls-cafile",
            tier.cafile,
            "--format",
            "json",
            "--fail-on",
            "warning",
        )
    )
    assert code == 0, err
    doc = json.loads(out)
    assert [m["role"] for m in doc["dns"]["mx"]] == ["primary", "backup", "trap", "fake"]
    assert all(f["severity"] == "info" for f in doc["findings"])
    assert {p["address"] for p in doc["probes"]} == {
        "127.0.0.11",
        "127.0.0.12",
        "127.0.0.13",
        "127.0.0.19",
    }


async def test_back_door_fails_the_run(tier: Any, peers: Any, zone: Any, dns_server: Any) -> None:

    zone("@ MX 10 mx1\n@ MX 20 bad\nmx1 A 127.0.0.11\nbad A 127.0.0.14\n")
    peers.accept_all("127.0.0.14")
    ports = {**tier.ports, **peers.ports}
    code, out, _err = await run_cli(*audit_args(dns_server, ports, "--tls-cafile", tier.cafile))
    assert code == 1
    assert "backscatter-backdoor" in out and "bad.audit.test" in out
    assert "fix:" in out and "evidence:" in out


async def test_dns_only_and_usage_errors(zone: Any, dns_server: Any, tmp_path: Any) -> None:
    zone("@ MX 0 .")
    code, out, _ = await run_cli("audit", "audit.test", "--nameserver", dns_server.nameserver)
    assert code == 0 and "null-mx" in out
    code, _, err = await run_cli("audit", "audit.test", "--port-map", "127.0.0.11")
    assert code == 2 and "ADDR=PORT" in err
    code, _, err = await run_cli("audit", "audit.test", "--role", "mx1.audit.test=boss")
    assert code == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[[mx]]\nhost = 1\n")
    code, _, err = await run_cli("audit", "audit.test", "--config", str(bad))
    assert code == 2 and "bad.toml" in err
