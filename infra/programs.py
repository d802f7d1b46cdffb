"""The project's own long-running processes, run by the stack beside the infrastructure.

Each is started by its package's documented entry point; infra imports no
service code, it only runs the commands.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import httpx

from heatmap_core.settings import Settings
from infra.stack import ROOT, Program, StackPaths, register


def _http_ok(url: str) -> None:
    httpx.get(url, timeout=2.0).raise_for_status()


def _uvicorn_program(name: str, module: str, port_of: Callable[[Settings], int], requires: tuple[str, ...]) -> Program:
    """A Litestar app under uvicorn on its configured port, healthy once /health answers."""
    return Program(
        name,
        lambda s, p: [
            sys.executable, "-m", "uvicorn", module, "--host", "127.0.0.1", "--port", str(port_of(s)), "--no-access-log"
        ],
        lambda s: _http_ok(f"http://127.0.0.1:{port_of(s)}/health"),
        requires=requires,
        ports=lambda s: (port_of(s),),
    )


register(_uvicorn_program("ingestion", "ingestion_api.app:app", lambda s: s.ingestion_port, ("kafka", "redis")))
register(
    Program(
        "landing",
        lambda s, p: [sys.executable, "-m", "landing", "run"],
        lambda s: None,
        requires=("kafka", "s3"),
    )
)
register(_uvicorn_program("query", "query_api.app:app", lambda s: s.query_port, ("s3", "clickhouse")))


DAGSTER_INSTANCE = "telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n"


def _dagster_command(settings: Settings, paths: StackPaths) -> list[str]:
    home = paths.data / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    # One bucket write at a time: replacing an hour swaps its whole day partition.
    (home / "dagster.yaml").write_text(DAGSTER_INSTANCE)
    return [
        sys.executable, "-m", "dagster", "dev",
        "-w", str(ROOT / "workspace.yaml"),
        "-h", "127.0.0.1", "-p", str(settings.dagster_port),
    ]


register(
    Program(
        "dagster",
        _dagster_command,
        lambda s: _http_ok(f"http://127.0.0.1:{s.dagster_port}/server_info"),
        requires=("kafka", "s3", "clickhouse"),
        start_timeout_s=180.0,
        ports=lambda s: (s.dagster_port,),
    )
)
