"""The whole pipeline on local defaults: `make demo`.

Starts the stack (Kafka, S3 server, Redis, ingestion API, landing, query API
with the dashboard, Dagster UI and daemon), renders the demo client's screen in
Chromium and uploads it as every demo screen's screenshot (the backdrop the
dashboard draws the maps on), sends realistic traffic through the real
ingestion API, waits until the Dagster daemon has materialized it into
ClickHouse (watching the query API), prints the URLs and runs until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import os
import shutil
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


# The demo client's screen element (dashboard/demo/): the page every demo screen's events are recorded on.
DEMO_SCREEN_SELECTOR = "#screen"


def render_demo_screen(demo_url: str, chromium: str) -> bytes:
    """A PNG of the demo client's whole screen element (taller than the viewport), as Chromium draws it.

    The page's batches are dropped, so rendering it records nothing.
    """
    from playwright.sync_api import sync_playwright  # a dev dependency: imported only when backdrops are made

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.route("**/events/batch", lambda route: route.abort())
            page.goto(demo_url)
            # Clipped to whole pixels: an element screenshot at a fractional offset gains a row.
            box = page.locator(DEMO_SCREEN_SELECTOR).bounding_box()
            if box is None:
                raise StackError(f"the demo page at {demo_url} shows no {DEMO_SCREEN_SELECTOR}")
            x, y, width, height = (round(box[key]) for key in ("x", "y", "width", "height"))
            return page.screenshot(clip={"x": x, "y": y, "width": width, "height": height}, full_page=True)
        finally:
            browser.close()


def upload_backdrops(demo_url: str, query_url: str, screens: list[tuple[str, str]], chromium: str) -> bytes:
    """Render the demo screen once and upload it as the screenshot of every (client, screen); returns the PNG."""
    png = render_demo_screen(demo_url, chromium)
    for client, screen in screens:
        httpx.put(
            f"{query_url}/screenshots/{client}/{screen}", content=png, headers={"Content-Type": "image/png"}, timeout=30
        ).raise_for_status()
    return png


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
    return sum(response.json()["cells"]["count"])


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

        spec = TrafficSpec(
            clients=("acme", "globex"),
            screens=("home_v1", "pricing_v2"),
            visitors=visitors,
            hours_back=hours_back,
            seed=int(time.time()),
            now=datetime.now(UTC),
        )
        console.rule("[bold]the demo screen as the screens' backdrop")
        chromium = shutil.which("chromium")
        if chromium is None:
            console.print("[yellow]no chromium (python -m infra.stack fetch): the maps sit on a blank canvas[/]")
        else:
            upload_backdrops(
                f"http://127.0.0.1:{settings.ingestion_port}/demo/",
                f"http://127.0.0.1:{settings.query_port}",
                [(client, screen) for client in spec.clients for screen in spec.screens],
                chromium,
            )
            console.print(f"uploaded the demo screen for {len(spec.clients) * len(spec.screens)} screens")

        console.rule("[bold]sending demo traffic through the ingestion API")
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
            f"dashboard    http://127.0.0.1:{settings.query_port}/?client={spec.clients[0]}&screen={spec.screens[0]}&grain=today\n"
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
