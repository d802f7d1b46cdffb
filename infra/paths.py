"""Where the stack keeps things: the repository's config and poms, the data directory, the jar cache.

A data directory holds one stack: ``stack/`` (supervisord's config, socket,
pid file and the programs' recorded pids), ``logs/`` (one log per program)
and each program's data (``kafka/``, ``s3/``, ``redis/``, ``dagster_home/``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from heatmap_core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CONFIG = Path(__file__).resolve().parent / "config"
MAVEN_DIR = Path(__file__).resolve().parent / "maven"


@dataclass(frozen=True)
class StackPaths:
    data: Path

    @property
    def stack(self) -> Path:
        return self.data / "stack"

    @property
    def logs(self) -> Path:
        return self.data / "logs"

    @property
    def conf(self) -> Path:
        return self.stack / "supervisord.conf"

    @property
    def pidfile(self) -> Path:
        return self.stack / "supervisord.pid"

    @property
    def socket(self) -> Path:
        return self.stack / "supervisor.sock"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def program_pid(self, name: str) -> Path:
        return self.stack / f"{name}.pid"

    def program_pids(self) -> list[Path]:
        return sorted(path for path in self.stack.glob("*.pid") if path != self.pidfile)


def jars_dir(settings: Settings, module: str) -> Path:
    """One Maven module's resolved jars (kafka, s3proxy, s3a) in the cache."""
    return settings.cache_dir / "jars" / module
