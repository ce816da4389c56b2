"""`mxguard policyd`: run the Postfix policy server from the same config as `serve`.

The option is declared here rather than imported from `mxguard.cli`, because `mxguard.cli`
imports this module while it is still loading (sub-command registration).
"""

from __future__ import annotations

import click


@click.command("policyd")
@click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    envvar="MXGUARD_CONFIG",
    help="Config file (TOML); [policyd].listen says where to listen.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="Overrides [log].level.",
)
def policyd(config_path: str | None, log_level: str | None) -> None:
    """Answer Postfix's check_policy_service with mxguard's policy and shared state.

    \b
    main.cf:  smtpd_recipient_restrictions = ..., reject_unauth_destination,
                  check_policy_service inet:127.0.0.1:10023

    [policyd] workers = N (0: one per CPU) runs N processes behind the one socket.
    Signals: SIGHUP re-reads recipient files, SIGUSR1 reopens the event log, SIGTERM or
    SIGINT stops (with workers, sent to the parent, which passes them on). See
    docs/postfix.md.
    """
    from mxguard.cliutil import run_daemon
    from mxguard.policyd.server import run_forever, supervise

    def say(line: str) -> None:
        print(line, flush=True)

    run_daemon(
        config_path, log_level, lambda cfg: run_forever(cfg, say), lambda cfg: supervise(cfg, say)
    )
