"""heatmap-traffic: send generated traffic through the ingestion API.

python -m traffic send --visitors 40 --clients acme,globex --screens home_v1 --truth-out truth.json
python -m traffic send --v1    # v1 requests, as clients before page views sent them
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from heatmap_core.settings import get_settings
from traffic.generator import Batch, GroundTruth, TrafficSpec, build

app = typer.Typer(help="Synthetic heatmap traffic with exact ground truth.", no_args_is_help=True)
console = Console(stderr=True)


class Rejected(Exception):
    pass


async def _post(client: httpx.AsyncClient, url: str, batch: Batch, headers: dict[str, str]) -> None:
    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(6),
        wait=wait_exponential(multiplier=0.2, max=5),
        retry=retry_if_exception_type((httpx.TransportError, Rejected)),
        reraise=True,
    ):
        with attempt:
            response = await client.post(url, json=batch.payload(), headers=headers)
            if response.status_code in (429, 503):
                raise Rejected(f"{response.status_code}: {response.text}")
            if response.status_code != 202:
                raise RuntimeError(f"ingestion refused a batch ({response.status_code}): {response.text}")


async def send_batches(
    batches: list[Batch],
    ingestion_url: str,
    write_keys: dict[str, str] | None = None,
    rate: float = 0.0,
    concurrency: int = 4,
    progress: bool = True,
) -> None:
    """POST every batch (at most `rate` events per second when rate > 0); 202 only counts."""
    total_events = sum(len(b.events) for b in batches)
    semaphore = asyncio.Semaphore(concurrency)
    started = time.monotonic()
    sent_events = 0
    url = ingestion_url.rstrip("/") + "/events/batch"
    async with httpx.AsyncClient(timeout=30) as client:
        with Progress(
            TextColumn("[cyan]traffic"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("events"),
            TimeElapsedColumn(),
            console=console,
            disable=not progress,
        ) as bar:
            task = bar.add_task("send", total=total_events)

            async def one(batch: Batch) -> None:
                nonlocal sent_events
                async with semaphore:
                    if rate > 0:
                        ahead = sent_events / rate - (time.monotonic() - started)
                        if ahead > 0:
                            await asyncio.sleep(ahead)
                    sent_events += len(batch.events)
                    headers = (
                        {"X-Write-Key": write_keys[batch.client_id]}
                        if write_keys and batch.client_id in write_keys
                        else {}
                    )
                    await _post(client, url, batch, headers)
                    bar.advance(task, len(batch.events))

            await asyncio.gather(*(one(batch) for batch in batches))


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@app.command()
def send(
    ingestion_url: str | None = typer.Option(
        None, help="Base URL of the ingestion API (default: settings' local port)."
    ),
    clients: str = typer.Option("acme,globex", help="Comma-separated client ids."),
    screens: str = typer.Option("home_v1,pricing_v2", help="Comma-separated screen ids."),
    visitors: int = typer.Option(40, min=1, help="Visitor sessions to simulate."),
    moves: int = typer.Option(120, min=1, help="Mouse moves per visitor (clicks and scrolls come on top)."),
    hours_back: int = typer.Option(3, min=1, help="Spread event times over the last N hours."),
    seed: int = typer.Option(7, help="Random seed: same seed, same events."),
    rate: float = typer.Option(0.0, min=0.0, help="Events per second (0 = as fast as accepted)."),
    duration: float = typer.Option(0.0, min=0.0, help="Seconds to keep sending fresh sessions (0 = one pass)."),
    truth_out: Path | None = typer.Option(
        None, help="Write the exact ground truth here (JSON): cells per type and device, and scroll reach."
    ),
    v1: bool = typer.Option(False, "--v1", help="Send v1 requests: no page view (device unknown), no scrolling."),
) -> None:
    """Generate traffic, send it, and optionally record its ground truth."""
    settings = get_settings()
    url = ingestion_url or f"http://127.0.0.1:{settings.ingestion_port}"
    truth = GroundTruth()
    deadline = time.monotonic() + duration
    round_seed = seed
    while True:
        spec = TrafficSpec(
            clients=_split(clients),
            screens=_split(screens),
            visitors=visitors,
            moves_per_visitor=moves,
            hours_back=hours_back,
            seed=round_seed,
            now=datetime.now(UTC),
            version=1 if v1 else 2,
        )
        batches, round_truth = build(spec)
        asyncio.run(send_batches(batches, url, settings.keys("write_keys"), rate=rate))
        truth.merge(round_truth)
        round_seed += 1
        if time.monotonic() >= deadline:
            break
    console.print(f"[green]sent[/] {truth.total()} events in {len(truth.hours())} hour(s) to {url}")
    if truth_out:
        truth_out.write_text(json.dumps(truth.to_json()))
        console.print(f"ground truth: {truth_out}")


@app.callback()
def main() -> None:
    """Synthetic heatmap traffic with exact ground truth."""
