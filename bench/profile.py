"""python -m bench.profile NAME: run one benchmark under py-spy and keep what dominated.

Every process of the run is sampled (the bench itself, which is the load
generator or the reference, and the service it starts: uvicorn, landing),
and the bench's own ClickHouse server (chdb_server) by a py-spy of its own.
Written to bench/profiles/:

- ``NAME.collapsed.gz``: py-spy's raw collapsed stacks, gzipped (flamegraph.pl,
  speedscope and inferno read them once unzipped);
- ``NAME.svg`` (with ``--svg``): py-spy's flame graph of a second run;
- ``NAME.txt``: per process, the functions holding the most samples, by own
  time and by inclusive time, as a share of that process's samples.
"""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from bench.common import PY_SPY, SAMPLE_DIR_ENV, SAMPLE_OPTIONS_ENV, SIZED, console, run_bench, show
from heatmap_core.settings import get_settings

PROFILES = Path(__file__).resolve().parent / "profiles"
TOP = 25
app = typer.Typer(add_completion=False, no_args_is_help=True)
# py-spy's root frame of each process: `process 1234:"python -m landing run"`.
_PROCESS = re.compile(r'^process \d+:"(?P<command>[^"]*)"')


def _py_spy(name: str, fmt: str, output: Path, rate: int, idle: bool, big: bool) -> None:
    command = [sys.executable, "-m", "bench.profile", "run-bench", name, *(["--big"] if big else [])]
    sampling = ["--nonblocking", "-r", str(rate), *(["--idle"] if idle else [])]
    options = ["--subprocesses", *sampling, "-f", fmt, "-o", str(output)]
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as folder:
        # The bench's own ClickHouse server is sampled apart (bench.common.sampled); raw stacks join the run's.
        server_sampling = {SAMPLE_DIR_ENV: folder, SAMPLE_OPTIONS_ENV: " ".join(sampling)} if fmt == "raw" else {}
        subprocess.run(
            [str(PY_SPY), "record", *options, "--", *command], check=True, env={**os.environ, **server_sampling}
        )
        with output.open("a") as stacks:
            for extra in sorted(Path(folder).glob("*.collapsed")):
                stacks.write(extra.read_text())


def _process_name(root: str) -> str:
    match = _PROCESS.match(root.replace("\n", " "))
    command = match["command"] if match else root
    if not command:  # py-spy names the process it launched before it has read its command line
        return "bench (reference)"
    # The bench's own command line names its bench ("run-bench landing"): it is tried first.
    for marker in ("bench.profile", "uvicorn", "landing", "bench.loadgen", "ProducerPerformance", "chdb_server"):
        if marker in command:
            return {"bench.profile": "bench (reference)", "bench.loadgen": "load generator"}.get(marker, marker)
    return command[:60]


def summarize(collapsed: Path) -> str:
    """Top functions by own and inclusive samples, per process, from py-spy's collapsed stacks."""
    own: dict[str, Counter[str]] = {}
    inclusive: dict[str, Counter[str]] = {}
    totals: Counter[str] = Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        # A child's stacks start with its ancestors' process frames, then its own.
        depth = next((i for i, frame in enumerate(frames) if not frame.startswith("process ")), len(frames))
        process = _process_name(frames[depth - 1])
        frames = frames[depth:] or ["(no Python frame)"]
        if any(frame.startswith("_find_and_load ") for frame in frames):
            frames = ["(imports at start-up)"]  # not the hot path: one bucket instead of the import machinery
        count = int(count_text)
        totals[process] += count
        own.setdefault(process, Counter())[frames[-1]] += count
        for frame in set(frames):
            inclusive.setdefault(process, Counter())[frame] += count
    lines = [f"# {collapsed.name}: py-spy samples per process", ""]
    for process, total in totals.most_common():
        lines.append(f"## {process}: {total} samples")
        for title, table in (("own", own[process]), ("inclusive", inclusive[process])):
            lines.append(f"### by {title} time")
            for frame, count in table.most_common(TOP):
                lines.append(f"{100 * count / total:6.1f}%  {frame}")
        lines.append("")
    return "\n".join(lines)


@app.command()
def profile(
    name: Annotated[str, typer.Argument(help="ingest or landing")],
    svg: Annotated[bool, typer.Option(help="Also record a flame graph (a second run of the bench).")] = False,
    rate: Annotated[int, typer.Option(help="Samples per second per process.")] = 200,
    tag: Annotated[str, typer.Option(help="Suffix of the output names, e.g. before or after.")] = "",
    idle: Annotated[bool, typer.Option(help="Also sample threads while they wait (wall time, not CPU).")] = False,
    big: Annotated[
        bool, typer.Option(help=f"Also the large sizes of {', '.join(SIZED)}, as `python -m bench --big`.")
    ] = False,
) -> None:
    """Profile one bench run; write NAME[-TAG].collapsed/.txt (and .svg) under bench/profiles/."""
    PROFILES.mkdir(exist_ok=True)
    stem = f"{name}-{tag}" if tag else name
    collapsed = PROFILES / f"{stem}.collapsed"
    _py_spy(name, "raw", collapsed, rate, idle, big)
    summary = PROFILES / f"{stem}.txt"
    summary.write_text(summarize(collapsed))
    kept = collapsed.with_name(collapsed.name + ".gz")
    kept.write_bytes(gzip.compress(collapsed.read_bytes()))
    collapsed.unlink()
    console.print(f"wrote {kept} and {summary}")
    if svg:
        _py_spy(name, "flamegraph", PROFILES / f"{stem}.svg", rate, idle, big)


@app.command("run-bench", hidden=True)
def profiled_bench(name: str, big: bool = False) -> None:
    """The profiled process: one bench against the running stack (started by the caller)."""
    show(run_bench(name, get_settings(), big))


if __name__ == "__main__":
    app()
