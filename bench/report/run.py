"""Benchmark: ``mxguard report`` against Debian's ``pflogsumm`` on the same Postfix log.

The log is the pixelpark sample from the shared corpus, concatenated until it has at
least ``--lines`` lines.  Both programs run on the same file in one invocation of
this script; for each we measure wall time and the peak resident memory of the whole
process tree (main process plus parser workers), sampling /proc every 50 ms.  RSS
counts pages shared between processes once per process, so it overstates a
multi-process program; PSS (shared pages divided among sharers) is shown beside it.

    .venv/bin/python bench/report/run.py [--lines 1000000] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CORPUS = Path(os.environ.get("MXGUARD_CORPUS", REPO / ".." / "shared" / "corpus" / "logs"))


def build_log(corpus: Path, min_lines: int, out: Path) -> int:
    sample = lzma.decompress((corpus / "pixelpark-postfix-logsums" / "mail.log.xz").read_bytes())
    per = sample.count(b"\n")
    copies = -(-min_lines // per)
    with out.open("wb") as fh:
        for _ in range(copies):
            fh.write(sample)
    return per * copies


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def _tree_memory(root: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB summed over ``root`` and its descendants."""
    kids = _children()
    todo, rss, pss = [root], 0, 0
    while todo:
        pid = todo.pop()
        todo.extend(kids.get(pid, []))
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            pass
    return rss, pss


def measure(cmd: list[str]) -> dict[str, float]:
    peak = {"rss": 0, "pss": 0}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss, pss = _tree_memory(proc.pid)
            peak["rss"] = max(peak["rss"], rss)
            peak["pss"] = max(peak["pss"], pss)
            done.wait(0.05)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    _, err = proc.communicate()
    elapsed = time.perf_counter() - start
    done.set()
    t.join()
    if proc.returncode != 0:
        raise SystemExit(
            f"{cmd[0]} failed ({proc.returncode}): {err.decode(errors='replace')[-500:]}"
        )
    return {"seconds": elapsed, "rss_mib": peak["rss"] / 1024, "pss_mib": peak["pss"] / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--keep", action="store_true", help="keep the generated log")
    ap.add_argument("--repeat", type=int, default=2, help="runs per tool; the fastest counts")
    args = ap.parse_args()
    pflogsumm = shutil.which("pflogsumm")
    if pflogsumm is None:
        raise SystemExit("pflogsumm not installed (apt-get install -y pflogsumm)")
    work = Path(tempfile.mkdtemp(prefix="mxguard-bench-"))
    try:
        log = work / "mail.log"
        lines = build_log(args.corpus.resolve(), args.lines, log)
        size = log.stat().st_size / 2**20
        print(f"input: {lines:,} lines, {size:.0f} MiB (pixelpark sample x {lines // 69861})")
        ours = [
            sys.executable,
            "-m",
            "mxguard.report_cli",
            str(log),
            "--format",
            "json",
            "--no-progress",
        ]
        # Read the log once so neither tool pays for a cold page cache, then run each
        # tool twice, alternating, and keep each one's faster run.
        with log.open("rb") as f:
            while f.read(1 << 20):
                pass
        runs: dict[str, list[dict[str, float]]] = {"pflogsumm": [], "mxguard report": []}
        for _ in range(args.repeat):
            runs["pflogsumm"].append(measure([pflogsumm, str(log)]))
            runs["mxguard report"].append(measure(ours))
        results = {
            name: {
                "seconds": min(r["seconds"] for r in rs),
                "rss_mib": max(r["rss_mib"] for r in rs),
                "pss_mib": max(r["pss_mib"] for r in rs),
            }
            for name, rs in runs.items()
        }
        for name, r in results.items():
            print(
                f"{name:15s} {r['seconds']:6.2f} s  {lines / r['seconds']:>10,.0f} lines/s  "
                f"peak RSS {r['rss_mib']:5.1f} MiB  (PSS {r['pss_mib']:5.1f} MiB)"
            )
        ratio = results["pflogsumm"]["seconds"] / results["mxguard report"]["seconds"]
        print(f"speed ratio mxguard/pflogsumm: {ratio:.2f}x (target >= 3x); RSS target < 64 MiB")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


if __name__ == "__main__":
    main()
