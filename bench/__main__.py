"""python -m bench [NAME ...]: run benchmarks against the local stack and print their figures."""

from __future__ import annotations

import importlib

import typer

from bench.common import Result, console, machine, show
from heatmap_core.settings import get_settings
from infra import stack

BENCHES = ("ingest", "landing", "hourly", "query")
app = typer.Typer(add_completion=False)


@app.command()
def main(names: list[str] = typer.Argument(None, help=f"Benchmarks to run (default: all of {', '.join(BENCHES)}).")) -> None:
    settings = get_settings()
    stack.start(settings, (*stack.INFRA_SERVICES, "clickhouse"))
    console.print(f"machine: {machine()}")
    results: list[Result] = []
    for name in names or BENCHES:
        console.rule(name)
        results.extend(importlib.import_module(f"bench.{name}").run(settings))
        show(results)


if __name__ == "__main__":
    app()
