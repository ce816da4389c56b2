"""Pieces every sub-command shares: the --config option, one-line errors, logging set-up.

They live apart from cli.py so that sub-command modules can import them without importing
the command group (which imports the sub-commands: a cycle).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn

import click
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from mxguard.config import Config

err = Console(stderr=True, highlight=False)

CONFIG_HELP = "Config file (TOML). Without it, the built-in demo tier for example.test on loopback."


def config_option(f: Any) -> Any:
    return click.option(
        "--config",
        "-c",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        envvar="MXGUARD_CONFIG",
        help=CONFIG_HELP,
    )(f)


def table_console() -> Console:
    """stdout for tables: the terminal's width, or in a pipe or file wide enough for every
    column (rich would wrap at 80 columns there, and scripts read the lines)."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line to stderr and exit: 2 for usage/config errors, 1 for findings."""
    # the message quotes config values and file names: "[" in them is text, never markup
    err.print(f"[bold red]mxguard:[/] {escape(message)}", markup=True, soft_wrap=True)
    sys.exit(code)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when asked or available (about twice the sessions per CPU second), else asyncio."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            fail("server.event_loop: uvloop is not installed (pip install uvloop)")
        return None
    return uvloop.new_event_loop


def run_daemon(
    config_path: str | None,
    log_level: str | None,
    main: Callable[[Config], Coroutine[Any, Any, int]],
    without_loop: Callable[[Config], int | None] | None = None,
) -> NoReturn:
    """`serve` and `policyd`: load the config, set up logging, run `main(cfg)` on the
    configured event loop, and exit with its code (2 and one line for a bad config).

    `without_loop(cfg)` runs first, before any event loop exists (a parent that forks its
    workers); when it returns a code, that is the exit code and `main` does not run."""
    from mxguard.config import ConfigError, load_config

    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        fail(str(exc))
    setup_logging(log_level or cfg.log.level)
    try:
        code = without_loop(cfg) if without_loop is not None else None
        if code is None:
            code = run_on_loop(cfg, main(cfg))
    except ConfigError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


def run_on_loop(cfg: Config, coro: Coroutine[Any, Any, int]) -> int:
    """Run `coro` to its end on the event loop `[server].event_loop` names."""
    with asyncio.Runner(loop_factory=loop_factory(cfg.server.event_loop)) as runner:
        return runner.run(coro)
