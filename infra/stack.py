"""The local stack's command line: fetch, start, stop and report the real components.

    python -m infra.stack fetch            # jars, apt packages, npm modules (idempotent)
    python -m infra.stack start [kafka s3 redis ingestion landing query dagster]
    python -m infra.stack status
    python -m infra.stack stop

``heatmap-stack`` is the same command. Every setting comes from the HEATMAP_*
environment (heatmap_core.settings); the data directory holds one stack. The
work is done by infra.fetch, infra.programs (the table of programs),
infra.supervisor and infra.processes; this module only parses the command.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from heatmap_core.settings import get_settings
from infra import supervisor
from infra.console import StackError, console
from infra.fetch import fetch
from infra.programs import INFRA_SERVICES, PROGRAMS

app = typer.Typer(
    help="Local stack of the heatmap lakehouse (Kafka, S3 server, Redis and the services).", no_args_is_help=True
)


@app.command("fetch")
def fetch_command(browser: bool = typer.Option(True, help="Also install Debian's Chromium for browser tests.")) -> None:
    """Download what the stack needs into caches (idempotent)."""
    fetch(get_settings(), browser=browser)


@app.command("start")
def start_command(
    programs: Annotated[
        list[str] | None,
        typer.Argument(
            help=f"Programs to start, with what they require: {', '.join(PROGRAMS)} (default: {' '.join(INFRA_SERVICES)})."
        ),
    ] = None,
) -> None:
    """Start programs in the background and wait until they are healthy."""
    try:
        supervisor.start(get_settings(), PROGRAMS, programs or INFRA_SERVICES)
    except StackError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc


@app.command("stop")
def stop_command() -> None:
    """Stop every program of the stack; nothing is left running."""
    supervisor.stop(get_settings())


@app.command("status")
def status_command() -> None:
    """Show the state of each program."""
    settings = get_settings()
    states = supervisor.status(settings)
    if not states:
        console.print(f"stack in {settings.data_path} is not running")
        return
    table = Table(title=f"stack in {settings.data_path}")
    table.add_column("program")
    table.add_column("state")
    for name, state in states.items():
        table.add_row(name, state)
    console.print(table)


if __name__ == "__main__":
    app()
