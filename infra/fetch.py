"""Getting what the stack runs: jars from Maven Central, Debian packages, the dashboard's npm modules.

Every step is idempotent and says what it does; a second run downloads nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterable

from heatmap_core.settings import Settings
from infra.console import StackError, console
from infra.paths import MAVEN_DIR, ROOT

# binary -> Debian package; docker-compose only matters where a docker client exists
APT_PACKAGES = {"redis-server": "redis-server", "chromium": "chromium", "docker-compose": "docker-compose"}


def _pom_digest() -> str:
    digest = hashlib.sha256()
    for pom in sorted(MAVEN_DIR.rglob("pom.xml")):
        digest.update(pom.read_bytes())
    return digest.hexdigest()[:16]


def fetch_jars(settings: Settings) -> None:
    """Resolve Kafka, S3Proxy and hadoop-aws from Maven Central into the cache (once per pom change)."""
    marker = settings.cache_dir / "jars" / f".resolved-{_pom_digest()}"
    if marker.exists():
        console.print(f"[green]jars[/] cached in {marker.parent}")
        return
    if shutil.which("mvn") is None:
        raise StackError("Maven (mvn) is required to fetch the stack's jars: apt-get install -y maven")
    console.print("[cyan]jars[/] resolving Kafka, S3Proxy and hadoop-aws from Maven Central ...")
    jars_root = settings.cache_dir / "jars"
    for module in ("kafka", "s3proxy", "s3a"):
        shutil.rmtree(jars_root / module, ignore_errors=True)
    subprocess.run(
        ["mvn", "-B", "-q", "-f", str(MAVEN_DIR / "pom.xml"), "package", f"-Djars.dir={jars_root}"],
        check=True,
    )
    marker.touch()
    console.print(f"[green]jars[/] ready in {jars_root}")


def fetch_apt(packages: Iterable[str]) -> None:
    """Install Debian packages whose binary is missing (apt-get update first, once)."""
    missing = [pkg for binary, pkg in APT_PACKAGES.items() if pkg in packages and shutil.which(binary) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise StackError(f"missing {', '.join(missing)}: run as root or `sudo apt-get install -y {' '.join(missing)}`")
    console.print(f"[cyan]apt[/] installing {', '.join(missing)} ...")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


def fetch_npm() -> None:
    """Install the dashboard's JavaScript dependencies (heatmap.js) from npm."""
    dashboard = ROOT / "dashboard"
    if not (dashboard / "package.json").exists():
        return
    if (dashboard / "node_modules" / ".package-lock.json").exists():
        console.print("[green]npm[/] dashboard modules present")
        return
    console.print("[cyan]npm[/] installing dashboard modules ...")
    command = ["npm", "ci"] if (dashboard / "package-lock.json").exists() else ["npm", "install"]
    subprocess.run([*command, "--no-audit", "--no-fund"], cwd=dashboard, check=True)


def compose_command() -> list[str] | None:
    """How this machine runs docker compose (the plugin, or Debian's docker-compose); None without either."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def fetch(settings: Settings, browser: bool = True) -> None:
    """Everything the stack and the tests need: jars, redis-server (and Chromium, docker-compose), npm modules."""
    fetch_jars(settings)
    compose = ["docker-compose"] if shutil.which("docker") and compose_command() is None else []
    fetch_apt(["redis-server", *(["chromium"] if browser else []), *compose])
    fetch_npm()
