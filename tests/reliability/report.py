"""RELIABILITY.md's table from the figures the reliability tests wrote in test-artifacts/reliability/.

    .venv/bin/python -m tests.reliability.report           # print the table
    .venv/bin/python -m tests.reliability.report --write   # and put it into RELIABILITY.md

The table sits between two markers in RELIABILITY.md, so the prose around it is kept.
"""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import typer

from .figures import FIGURES_DIR, ROOT, Figures, load_all

DOCUMENT = ROOT / "RELIABILITY.md"
BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"
COLUMNS = ("scenario", "load", "faults injected", "acknowledged", "served", "lost", "duplicated", "5xx", "test")


def _machine() -> str:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    return (
        f"{os.cpu_count()} cores ({model}), {memory_gib:.0f} GiB, Python {platform.python_version()}, "
        f"commit {commit.strip() or 'unknown'}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )


# The order: the path of an event from the client to the map, then input and tenants, then load.
ORDER = (
    "Kafka",
    "Redis",
    "Landing",
    "S3 server",
    "S3 refusing",
    "Hourly run",
    "ClickHouse",
    "Hostile",
    "Tenants",
    "Load",
)


def _rank(figures: Figures) -> tuple[int, str]:
    return next(
        (i for i, prefix in enumerate(ORDER) if figures.scenario.startswith(prefix)), len(ORDER)
    ), figures.scenario


def table(figures: list[Figures]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for f in sorted(figures, key=_rank):
        cells = (
            f.scenario,
            f.load,
            f.faults + (f"; {f.notes}" if f.notes else ""),
            f"{f.acknowledged:,}",
            f"{f.served:,}",
            f"{f.lost:,}",
            f"{f.duplicated:,}",
            f"{f.http_5xx:,}",
            f"`{f.test}`",
        )
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def main(write: bool = typer.Option(False, help="replace the table in RELIABILITY.md")) -> None:
    figures = load_all()
    if not figures:
        raise typer.BadParameter(f"no figures in {FIGURES_DIR}: run `pytest -m reliability` first")
    section = f"{BEGIN}\nMachine: {_machine()}.\n\n{table(figures)}\n{END}"
    print(section)
    if write:
        text = DOCUMENT.read_text()
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        DOCUMENT.write_text(head + section + tail)
        print(f"written to {DOCUMENT}")


if __name__ == "__main__":
    typer.run(main)
