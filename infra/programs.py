"""The project's own long-running processes, run by the stack beside the infrastructure.

Each is started by its package's documented entry point; infra imports no
service code, it only runs the commands.
"""

from __future__ import annotations

import sys

import httpx

from heatmap_core.settings import Settings
from infra.stack import ROOT, Program, StackPaths, register


def _http_ok(url: str) -> None:
    httpx.get(url, timeout=2.0).raise_for_status()


def _uvicorn(module: str, port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", module, "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]


register(
    Program(
        "ingestion",
        lambda s, p: _uvicorn("ingestion_api.app:app", s.ingestion_port),
        lambda s: _http_ok(f"http://127.0.0.1:{s.ingestion_port}/health"),
        requires=("kafka", "redis"),
        ports=lambda s: (s.ingestion_port,),
    )
)
register(
    Program(
        "landing",
        lambda s, p: [sys.executable, "-m", "landing", "run"],
        lambda s: None,
        requires=("kafka", "s3"),
    )
)
register(
    Program(
        "query",
        lambda s, p: _uvicorn("query_api.app:app", s.query_port),
        lambda s: _http_ok(f"http://127.0.0.1:{s.query_port}/health"),
        requires=("s3",),
        ports=lambda s: (s.query_port,),
    )
)


def _dagster_command(settings: Settings, paths: StackPaths) -> list[str]:
    home = paths.data / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
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
        requires=("kafka", "s3"),
        start_timeout_s=180.0,
        ports=lambda s: (s.dagster_port,),
    )
)
