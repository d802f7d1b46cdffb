"""python -m bench [NAME ...]: run benchmarks against the local stack and print their figures."""

from __future__ import annotations

from typing import Annotated

import typer

from bench.common import SIZED, Result, console, machine, run_bench, show
from heatmap_core.settings import get_settings
from infra import supervisor
from infra.programs import INFRA_SERVICES, PROGRAMS

BENCHES = ("ingest", "landing", "hourly", "query", "scale", "replace", "reads")
app = typer.Typer(add_completion=False)


@app.command()
def main(
    names: Annotated[
        list[str] | None, typer.Argument(help=f"Benchmarks to run (default: all of {', '.join(BENCHES)}).")
    ] = None,
    big: Annotated[bool, typer.Option(help=f"Also the large sizes of {', '.join(SIZED)} (many minutes).")] = False,
) -> None:
    settings = get_settings()
    supervisor.start(settings, PROGRAMS, (*INFRA_SERVICES, "clickhouse"))
    console.print(f"machine: {machine()}")
    results: list[Result] = []
    for name in names or BENCHES:
        console.rule(name)
        results.extend(run_bench(name, settings, big))
        show(results)


if __name__ == "__main__":
    app()
