"""`mxguard simulate`: sender behaviours against an MX layout, on a virtual clock or live.

Exit status: 0 success, 2 a bad scenario, config or option (one line naming file and key).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from rich.console import Console

from mxguard.cliutil import config_option, fail
from mxguard.config import ConfigError, load_config


@click.command()
@click.argument("scenario_path", metavar="[SCENARIO.toml]", required=False,
                type=click.Path(dir_okay=False))  # fmt: skip
@config_option
@click.option("--seed", type=int, default=None, help="Overrides [scenario].seed.")
@click.option("--compare", is_flag=True,
              help="Run every layout of [compare].layouts on the same senders, side by side.")  # fmt: skip
@click.option("--layout", "layouts", multiple=True, metavar="NAME",
              help="Run this layout (repeatable): config, single, classic, mxguard, greylist, "
              "nolisting, trap, recommended, all. Default: config.")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write the trade-off plot (spam stopped vs good mail hurt) as SVG.")  # fmt: skip
@click.option("--jobs", "-j", type=int, default=None,
              help="Layouts simulated in parallel (default: one per CPU).")  # fmt: skip
@click.option("--live", is_flag=True,
              help="Start the default tier on loopback and drive real SMTP senders at it "
              "for about --seconds, then print the per-MX table from its event log.")  # fmt: skip
@click.option("--seconds", type=float, default=30.0, show_default=True,
              help="How long --live drives senders.")  # fmt: skip
def simulate(
    scenario_path: str | None,
    config_path: str | None,
    seed: int | None,
    compare: bool,
    layouts: tuple[str, ...],
    fmt: str,
    plot_path: str | None,
    jobs: int | None,
    live: bool,
    seconds: float,
) -> None:
    """Measure an MX layout against real sender behaviours: spam stopped, good mail delayed or lost.

    \b
    mxguard simulate                         the built-in scenario against the config
    mxguard simulate --compare --plot t.svg  every layout variant, side by side
    mxguard simulate examples/scenario.toml --seed 7 --format json
    mxguard simulate --live                  a 30-second tour over real sockets
    """
    if live:
        from mxguard.sim.live import run_live

        try:
            code = run_live(config_path, seconds, seed if seed is not None else 1)
        except ConfigError as exc:
            fail(str(exc))
        sys.exit(code)
    from mxguard.sim.layouts import LAYOUTS, make_layout
    from mxguard.sim.report import print_report, svg_plot, to_json
    from mxguard.sim.run import run_layouts
    from mxguard.sim.scenario import load_scenario

    if plot_path is not None and not plot_path.lower().endswith(".svg"):
        fail(f"--plot {plot_path}: only SVG is written (PNG would need matplotlib, which "
             "mxguard does not depend on); give a .svg name")  # fmt: skip
    try:
        scenario = load_scenario(scenario_path)
        cfg = load_config(config_path)
    except ConfigError as exc:
        fail(str(exc))
    names = list(layouts)
    if compare and not names:
        names = list(scenario.layouts) or [n for n in LAYOUTS if n not in ("config", "recommended")]
    names = names or ["config"]
    for name in names:
        if name not in LAYOUTS:
            fail(f"--layout {name}: not one of {', '.join(LAYOUTS)}")
    try:
        variants = [make_layout(cfg, n) for n in names]
    except ValueError as exc:
        fail(f"{cfg.source}: {exc}")
    workers = jobs if jobs is not None else (os.cpu_count() or 1)
    try:
        results = list(run_layouts(scenario, variants, seed, jobs=workers))
    except ConfigError as exc:
        fail(str(exc))
    if seed is not None:
        import dataclasses

        scenario = dataclasses.replace(scenario, seed=seed)
    if fmt == "json":
        click.echo(json.dumps(to_json(scenario, results), indent=2, sort_keys=True))
    else:
        # wide tables: let them be wide when piped rather than fold every cell
        console = Console(highlight=False, width=None if sys.stdout.isatty() else 170)
        print_report(console, scenario, results, compare or len(results) > 1)
    if plot_path is not None:
        try:
            Path(plot_path).write_text(svg_plot(results, scenario.name), encoding="utf-8")
        except OSError as exc:
            fail(f"--plot {plot_path}: {exc.strerror or exc}")
