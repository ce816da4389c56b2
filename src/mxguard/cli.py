"""The `mxguard` command: one program, sub-commands for each job.

Exit codes scripts can trust: 0 success, 1 the command ran and found a problem (e.g. an
audit finding), 2 bad usage or bad config (one line naming file, key and problem).
"""

from __future__ import annotations

import click
from rich.markup import escape

from mxguard import COMPILED, __version__
from mxguard.cliutil import config_option, err, fail, run_daemon
from mxguard.config import ConfigError, effective_toml, load_config


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(
    __version__,
    "-V",
    "--version",
    message=f"%(prog)s %(version)s ({COMPILED})",
    prog_name="mxguard",
)
def main() -> None:
    """mxguard guards a domain's whole MX tier (primary, backup, trap and retired addresses)
    with one policy and one shared state.

    \b
    Start the demo tier:   mxguard serve
    Check a config:        mxguard check-config -c mxguard.toml
    """


@main.command()
@config_option
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="Overrides [log].level.",
)
def serve(config_path: str | None, log_level: str | None) -> None:
    """Run the SMTP listeners of every [[mx]] entry that has a listen address."""
    from mxguard.serve import serve_forever

    run_daemon(
        config_path,
        log_level,
        lambda cfg: serve_forever(config_path, lambda line: print(line, flush=True)),
    )


@main.command("check-config")
@config_option
@click.option("--quiet", "-q", is_flag=True, help="Print nothing when the config is good.")
def check_config(config_path: str | None, quiet: bool) -> None:
    """Validate the config and print the effective settings (defaults filled in)."""
    try:
        cfg = load_config(config_path)
        from mxguard.recipients import RecipientDirectory

        RecipientDirectory(cfg.domain, cfg.source)
    except ConfigError as exc:
        fail(str(exc))
        return
    from mxguard.policyd import workers

    try:
        workers.check(cfg)  # what only `mxguard policyd` refuses
    except ConfigError as exc:
        fail(str(exc))
        return
    from mxguard.checkconfig import warnings_for

    for w in warnings_for(cfg):
        err.print(f"[yellow]warning:[/] {escape(w)}", soft_wrap=True)
    if not quiet:
        click.echo(f"# {cfg.source}: OK\n" + effective_toml(cfg), nl=False)


@main.command()
def version() -> None:
    """Print the version, and how the hot modules run: compiled, source (a pure install, or
    MXGUARD_SOURCE=1) or stale (a source changed since they were compiled)."""
    click.echo(f"mxguard {__version__} ({COMPILED})")


def _register_optional() -> None:
    """Sub-commands that live in their own modules (report, queue, ...), added when present."""
    from mxguard.features import optional

    for module, attr in (
        ("mxguard.report_cli", "report"),
        ("mxguard.queue.cli", "queue"),
        ("mxguard.policyd.cli", "policyd"),
        ("mxguard.mxplan.cli", "plan"),
        ("mxguard.mxplan.cli", "audit"),
        ("mxguard.walk.cli", "block"),
        ("mxguard.walk.cli", "explain"),
        ("mxguard.sim.cli", "simulate"),
        ("mxguard.ops.top", "top"),
    ):
        cmd = optional(module, attr)
        if cmd is not None:
            main.add_command(cmd)


_register_optional()

if __name__ == "__main__":
    main()
