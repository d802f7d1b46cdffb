"""Shared bench plumbing: machine description, repeated timing, result table, service processes."""

from __future__ import annotations

import importlib
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from rich.console import Console
from rich.table import Table
from tenacity import Retrying, stop_after_delay, wait_fixed

from heatmap_core.provision import ensure_topic, remove_topic
from heatmap_core.s3 import ensure_bucket, remove_bucket, s3_client
from heatmap_core.settings import Settings
from infra.programs import uvicorn_command

console = Console(width=150)


# Benches whose run() takes big=True: their large sizes, behind --big.
SIZED = ("landing", "scale", "replace", "reads")


def run_bench(name: str, settings: Settings, big: bool = False) -> list[Result]:
    """The figures of ``bench.<name>``, with its large sizes too when ``big`` and it has any."""
    module = importlib.import_module(f"bench.{name}")
    return module.run(settings, big=True) if big and name in SIZED else module.run(settings)


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = psutil.virtual_memory().total / 2**30
    return f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB, {platform.system()} {platform.release()}, Python {platform.python_version()}"


@contextmanager
def scratch_topic(settings: Settings) -> Iterator[Settings]:
    """``settings.topic`` for the bench's run, deleted after it: runs must not pile records up on the disk."""
    ensure_topic(settings)
    try:
        yield settings
    finally:
        remove_topic(settings)


@contextmanager
def scratch_bucket(settings: Settings) -> Iterator[Settings]:
    """``settings.raw_bucket`` for the bench's run, removed with its objects after it."""
    client = s3_client(settings)
    ensure_bucket(client, settings.raw_bucket)
    try:
        yield settings
    finally:
        remove_bucket(client, settings.raw_bucket)


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


@dataclass
class Result:
    bench: str
    subject: str
    subject_value: float
    reference: str
    reference_value: float
    unit: str
    higher_is_better: bool

    @property
    def ratio(self) -> float:
        return self.subject_value / self.reference_value if self.reference_value else float("nan")


def show(results: list[Result]) -> None:
    table = Table(title=f"benchmarks on {machine()}")
    for column in ("bench", "subject", "median", "reference", "median", "subject/reference"):
        table.add_column(column)
    for r in results:
        table.add_row(
            r.bench,
            r.subject,
            f"{r.subject_value:,.1f} {r.unit}",
            r.reference,
            f"{r.reference_value:,.1f} {r.unit}",
            f"{r.ratio:.2f}x ({'higher' if r.higher_is_better else 'lower'} is better)",
        )
    console.print(table)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    return {**os.environ, **settings.as_env(), **extra}


@dataclass(frozen=True)
class ServedApp:
    url: str  # base URL
    process: psutil.Process  # uvicorn's own process; with several workers, they are its children


@contextmanager
def uvicorn_app(
    module: str, settings: Settings, health_path: str = "/health", workers: int = 1, **extra_env: str
) -> Iterator[ServedApp]:
    """Run `module` (e.g. ingestion_api.app:app) under uvicorn on a free port, until it answers health."""
    port = free_port()
    process = subprocess.Popen(
        [*uvicorn_command(module, port, workers), "--log-level", "warning"],
        env=env_for(settings, **extra_env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for attempt in Retrying(stop=stop_after_delay(60), wait=wait_fixed(0.3), reraise=True):
            with attempt:
                httpx.get(url + health_path, timeout=2).raise_for_status()
        yield ServedApp(url, psutil.Process(process.pid))
    finally:
        process.terminate()
        process.wait(timeout=20)


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` 0.99 for p99) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]


def tree_rss(process: psutil.Process) -> int:
    """Resident bytes of ``process`` and all its descendants (the Spark driver's JVM, executors)."""
    total = 0
    for member in (process, *process.children(recursive=True)):
        with suppress(psutil.NoSuchProcess):  # a Python worker or executor that just ended
            total += member.memory_info().rss
    return total


class PeakMemory:
    """The peak of ``tree_rss`` of each named process tree while the block runs, sampled every 0.1 s."""

    def __init__(self, **processes: psutil.Process):
        self._processes = processes
        self.peak = dict.fromkeys(processes, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            for name, process in self._processes.items():
                self.peak[name] = max(self.peak[name], tree_rss(process))
            if self._stop.wait(0.1):
                return

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def private_clickhouse(settings: Settings, data_dir: Path) -> Iterator[tuple[Settings, psutil.Process]]:
    """The stack's `clickhouse` program (chdb_server) on a free port over ``data_dir``, under a
    supervisord of its own: its memory is this bench's alone. Yields the settings pointing at it
    and its process."""
    from infra import supervisor
    from infra.paths import StackPaths
    from infra.programs import PROGRAMS

    port = free_port()
    private = settings.model_copy(
        update={"data_dir": data_dir, "clickhouse_port": port, "clickhouse_dsn": f"http://127.0.0.1:{port}"}
    )
    supervisor.start(private, PROGRAMS, ["clickhouse"], do_fetch=False)
    try:
        process = psutil.Process(int(StackPaths(private.data_path).program_pid("clickhouse").read_text().split()[0]))
        with sampled(process):
            yield private, process
    finally:
        supervisor.stop(private)


# The sampling profiler of `python -m bench.profile`, installed beside this interpreter.
PY_SPY = Path(sys.executable).with_name("py-spy")
# Set by `python -m bench.profile` for the bench it runs: a folder, and py-spy's sampling options.
SAMPLE_DIR_ENV = "HEATMAP_BENCH_SAMPLE_DIR"
SAMPLE_OPTIONS_ENV = "HEATMAP_BENCH_SAMPLE_OPTIONS"


@contextmanager
def sampled(process: psutil.Process) -> Iterator[None]:
    """Under `bench.profile`, a py-spy of its own on ``process``, writing its stacks into the profile's folder.

    A program of a supervisord is not in the profiled bench's process tree (supervisord runs as a
    daemon), so `py-spy --subprocesses` never sees it; bench.profile adds these stacks to the run's.
    """
    folder = os.environ.get(SAMPLE_DIR_ENV)
    if not folder:
        yield
        return
    output = Path(folder) / f"{process.pid}.collapsed"
    options = os.environ.get(SAMPLE_OPTIONS_ENV, "").split()
    # --subprocesses only for its root frame, `process PID:"command"`, which names the process in the summary.
    command = [str(PY_SPY), "record", "--pid", str(process.pid), "--subprocesses", "-f", "raw", "-o", str(output)]
    sampler = subprocess.Popen([*command, *options], stdout=subprocess.DEVNULL)
    try:
        yield
    finally:
        sampler.send_signal(signal.SIGINT)  # py-spy writes its output on an interrupt
        sampler.wait(timeout=60)
