"""The whole pipeline on local defaults: `make demo`.

Starts the stack (Kafka, S3 server, Redis, ingestion API, landing, query API
with the dashboard, Dagster UI and daemon), sends realistic traffic through the
real ingestion API, waits until the Dagster daemon has materialized it into
ClickHouse (watching the query API), prints the URLs and runs until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import UTC, datetime

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from heatmap_core.settings import Settings
from infra import supervisor
from infra.console import StackError
from infra.programs import APP_PROGRAMS, INFRA_SERVICES, PROGRAMS
from traffic.cli import send_batches
from traffic.generator import GroundTruth, TrafficSpec, build

console = Console(stderr=True)
app = typer.Typer(help=__doc__, add_completion=False)


def day_totals(truth: GroundTruth) -> dict[tuple[str, str, str], int]:
    totals: dict[tuple[str, str, str], int] = {}
    for (client, screen, hour, _, _), count in truth.cells.items():
        key = (client, screen, hour.strftime("%Y-%m-%d"))
        totals[key] = totals.get(key, 0) + count
    return totals


def served_total(settings: Settings, client: str, screen: str, dt: str) -> int:
    response = httpx.get(
        f"http://127.0.0.1:{settings.query_port}/heatmap/daily",
        params={"client_id": client, "screen_id": screen, "dt": dt},
        timeout=10,
    )
    response.raise_for_status()
    return sum(cell["count"] for cell in response.json()["cells"])


def served_totals(settings: Settings, keys) -> dict[tuple[str, str, str], int]:
    try:
        return {key: served_total(settings, *key) for key in keys}
    except httpx.HTTPError:
        return {}


def wait_for_pipeline(
    settings: Settings,
    expected: dict[tuple[str, str, str], int],
    baseline: dict[tuple[str, str, str], int],
    timeout_s: float,
) -> bool:
    """Poll the query API until every day of the demo traffic is served on top of what it served before."""
    goal = sum(expected.values())
    deadline = time.monotonic() + timeout_s
    with Progress(
        TextColumn("[cyan]pipeline[/] events served by the query API"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("wait", total=goal)
        while time.monotonic() < deadline:
            gained = {key: total - baseline.get(key, 0) for key, total in served_totals(settings, expected).items()}
            bar.update(task, completed=sum(min(gained.get(k, 0), v) for k, v in expected.items()))
            if gained and all(gained[key] >= count for key, count in expected.items()):
                return True
            time.sleep(5)
    return False


@app.command()
def run(
    visitors: int = typer.Option(60, help="Visitor sessions of demo traffic."),
    hours_back: int = typer.Option(3, help="Spread the demo traffic over the last N hours."),
    wait_minutes: float = typer.Option(15, help="How long to wait for the pipeline before printing the URLs anyway."),
    keep_running: bool = typer.Option(True, help="Stay up until Ctrl-C (off: stop after the check)."),
) -> None:
    # The demo client has no write keys; the production default keeps auth on.
    os.environ.setdefault("HEATMAP_AUTH_ENABLED", "false")
    settings = Settings()
    # Ctrl-C and SIGTERM both end in the `finally` below; SIGINT's default is
    # restored because a shell may start us with it ignored (background jobs).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        console.rule("[bold]starting the stack")
        supervisor.start(settings, PROGRAMS, (*INFRA_SERVICES, *APP_PROGRAMS))

        console.rule("[bold]sending demo traffic through the ingestion API")
        spec = TrafficSpec(
            clients=("acme", "globex"),
            screens=("home_v1", "pricing_v2"),
            visitors=visitors,
            hours_back=hours_back,
            seed=int(time.time()),
            now=datetime.now(UTC),
        )
        batches, truth = build(spec)
        expected = day_totals(truth)
        # A second demo run adds to the days the first one filled: wait for the increase.
        baseline = served_totals(settings, expected)
        asyncio.run(send_batches(batches, f"http://127.0.0.1:{settings.ingestion_port}"))
        console.print(f"sent {truth.total()} events over {len(truth.hours())} hour(s)")

        console.rule("[bold]landing -> lake -> Dagster daemon -> ClickHouse")
        done = wait_for_pipeline(settings, expected, baseline, wait_minutes * 60)
        if not done:
            console.print(
                "[yellow]the pipeline has not caught up yet; check the Dagster UI and logs under "
                f"{settings.data_path / 'logs'}[/]"
            )

        console.rule("[bold green]ready")
        console.print(
            f"dashboard    http://127.0.0.1:{settings.query_port}/?client={spec.clients[0]}&screen={spec.screens[0]}&grain=day\n"
            f"demo client  http://127.0.0.1:{settings.ingestion_port}/demo/\n"
            f"Dagster UI   http://127.0.0.1:{settings.dagster_port}/asset-groups\n"
            f"logs         {settings.data_path / 'logs'}"
        )
        if keep_running:
            console.print("running; press Ctrl-C to stop everything")
            while True:
                time.sleep(1)
    except KeyboardInterrupt:
        pass
    except StackError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    finally:
        console.rule("[bold]stopping")
        supervisor.stop(settings)


if __name__ == "__main__":
    app()
