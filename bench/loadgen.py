"""The ingestion bench's load generator, run in a process of its own so the server is measured alone.

``python -m bench.loadgen URL BODIES`` POSTs every body of BODIES (JSON lines,
one request body a line, already encoded: the generator does no JSON work while
timed) to URL/events/batch and prints one JSON document on stdout: the elapsed
seconds, each request's latency and the HTTP statuses seen.

- ``--rate 0`` (closed loop): ``--concurrency`` clients, each sending its next
  body as soon as the previous one is answered: the maximum throughput. With
  ``--seconds S`` no body is started after S seconds; the bodies sent are then
  the file's first ones, as many as the statuses count. ``--repeat`` sends the
  file over and over until then, every body with a fresh batch_id in place of
  the file's (a batch id sent twice is answered as a duplicate): a load held for
  minutes needs one round of bodies on disk, not minutes of them.
- ``--rate R`` (open loop): body i is due at ``sum(events before i) / R``
  seconds, sent then whatever is still in flight; its latency counts from that
  due time, so a server that falls behind shows it (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated

import aiohttp
import msgspec
import typer

app = typer.Typer(add_completion=False)
HEADERS = {"Content-Type": "application/json"}
OPEN_LOOP_CONNECTIONS = 32


class Report(msgspec.Struct):
    seconds: float
    latencies_ms: list[float]
    statuses: dict[str, int]


def _with_fresh_batch_ids(lines: list[bytes]) -> Iterator[bytes]:
    """The bodies in file order, over and over, each sent with a batch id of its own."""
    fields = [b'"batch_id":' + msgspec.json.encode(msgspec.json.decode(line)["batch_id"]) for line in lines]
    for line, field in itertools.cycle(zip(lines, fields, strict=True)):
        yield line.replace(field, b'"batch_id":"' + str(uuid.uuid4()).encode() + b'"', 1)


async def _send(
    url: str, bodies: Iterable[bytes], events: list[int], concurrency: int, rate: float, seconds: float
) -> Report:
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    # aiohttp, not httpx: about a quarter of httpx's CPU per request (0.23 against 0.93 ms, measured beside
    # the server), on the cores the generator shares with the server it measures. A wait for a connection
    # counts as latency.
    connector = aiohttp.TCPConnector(limit=concurrency if rate <= 0 else OPEN_LOOP_CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as client:

        async def post(body: bytes, due: float) -> None:
            async with client.post(url, data=body, headers=HEADERS) as response:
                await response.read()
            latencies.append((time.perf_counter() - due) * 1000)
            statuses[str(response.status)] = statuses.get(str(response.status), 0) + 1

        started = time.perf_counter()
        if rate <= 0:
            queue = iter(bodies)
            deadline = started + seconds if seconds > 0 else float("inf")

            async def worker() -> None:
                # Taken in file order and only before the deadline: the bodies sent are a prefix of the file.
                while time.perf_counter() < deadline and (body := next(queue, None)) is not None:
                    await post(body, time.perf_counter())

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        else:
            tasks = []
            offered = 0
            for body, count in zip(bodies, events, strict=True):
                due = started + offered / rate
                offered += count
                if (wait := due - time.perf_counter()) > 0:
                    await asyncio.sleep(wait)
                tasks.append(asyncio.create_task(post(body, due)))
            await asyncio.gather(*tasks)
        return Report(time.perf_counter() - started, latencies, statuses)


@app.command()
def main(
    url: str,
    bodies: Path,
    concurrency: Annotated[int, typer.Option(help="Clients in the closed loop.")] = 8,
    rate: Annotated[float, typer.Option(help="Offered events/s (0: closed loop, as fast as answered).")] = 0.0,
    seconds: Annotated[float, typer.Option(help="Closed loop: start no body after this long (0: send all).")] = 0.0,
    repeat: Annotated[
        bool,
        typer.Option(help="Closed loop with --seconds: send the file over and over, each body with a fresh batch_id."),
    ] = False,
) -> None:
    if repeat and (rate > 0 or seconds <= 0):
        raise typer.BadParameter("--repeat needs the closed loop (--rate 0) and --seconds")
    lines = bodies.read_bytes().splitlines()
    events = [len(msgspec.json.decode(line)["events"]) for line in lines]
    sent = _with_fresh_batch_ids(lines) if repeat else lines
    report = asyncio.run(_send(url.rstrip("/") + "/events/batch", sent, events, concurrency, rate, seconds))
    print(msgspec.json.encode(report).decode())


if __name__ == "__main__":
    app()
