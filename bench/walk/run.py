"""Scripted senders and bots against a whole mxguard tier on loopback: the table of issue 4.

Each behaviour gets a fresh tier (fake MX 0 refusing, primary 10, backup 20 greylisting,
trap 30, a retired address; tests/helpers/walklab.py) on 127.0.0.x; its clients (5 by
default, one after the other) each have their own address, and run over real SMTP (tests/helpers/senders.py). Waiting for retries moves an
injected clock, so the whole run takes seconds.

    .venv/bin/python bench/walk/run.py                  # trap answers 451 at RCPT
    .venv/bin/python bench/walk/run.py --trap-answer connect
    .venv/bin/python bench/walk/run.py --trail          # every contact, per behaviour

Columns, per behaviour: messages attempted; delivered (a 250 after DATA at some MX, in some
attempt); delayed (not delivered at the first attempt and never refused: it waited or is
still waiting); refused (a 5xx ended it); blocklisted (clients on the blocklist at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tests.helpers.walklab import Row, run_behaviours  # noqa: E402


def render(rows: list[Row], trail: bool) -> Table:
    columns = ["behaviour", "kind", "attempted", "delivered", "delayed", "refused", "blocklisted"]
    table = Table(*columns, *(["first client's contacts"] if trail else []))
    for r in rows:
        cells = [r.name, "good" if r.good else "bot"]
        cells += [str(n) for n in (r.attempted, r.delivered, r.delayed, r.refused, r.blocklisted)]
        if trail:
            cells.append(", ".join(f"{h.split('.')[0]} {c or o}" for h, o, c in r.trail))
        table.add_row(*cells)
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trap-answer", choices=["rcpt", "connect"], default="rcpt")
    ap.add_argument("--clients", type=int, default=5, help="clients per behaviour (default 5)")
    ap.add_argument("--trail", action="store_true", help="show the first client's contacts")
    args = ap.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mxguard-walk-") as tmp:
        rows = asyncio.run(run_behaviours(Path(tmp), args.trap_answer, args.clients))
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(render(rows, args.trail))
    good_ok = all(r.delivered == r.attempted and not r.blocklisted for r in rows if r.good)
    bots_ok = all(r.delivered == 0 for r in rows if not r.good)
    console.print(
        f"trap answer at {args.trap_answer}; good senders all delivered, none blocklisted: "
        f"{good_ok}; bots delivered nothing: {bots_ok}; {time.monotonic() - started:.1f}s"
    )
    return 0 if good_ok and bots_ok else 1


if __name__ == "__main__":
    sys.exit(main())
