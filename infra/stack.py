"""The local stack: fetch, start, stop and report the real components.

Processes run under supervisord (one per data directory), with logs in
``HEATMAP_DATA_DIR/logs`` and configuration, socket and pid file in
``HEATMAP_DATA_DIR/stack``. Every process gets ``HEATMAP_STACK_ID`` in its
environment, so a start after an unclean stop finds and ends what is left of
the previous run before starting again.

    python -m infra.stack fetch            # jars, apt packages, npm modules (idempotent)
    python -m infra.stack start [kafka s3 redis ...]
    python -m infra.stack status
    python -m infra.stack stop
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import typer
from rich.console import Console
from rich.table import Table
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from heatmap_core.settings import Settings, get_settings

ROOT = Path(__file__).resolve().parent.parent
CONFIG = Path(__file__).resolve().parent / "config"
MAVEN_DIR = Path(__file__).resolve().parent / "maven"
console = Console(stderr=True)

INFRA_SERVICES = ("kafka", "s3", "redis")
# binary -> Debian package; docker-compose only matters where a docker client exists
APT_PACKAGES = {"redis-server": "redis-server", "chromium": "chromium", "docker-compose": "docker-compose"}


class StackError(RuntimeError):
    pass


# --------------------------------------------------------------------------- paths


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


def jars_dir(settings: Settings, module: str) -> Path:
    return settings.cache_dir / "jars" / module


# --------------------------------------------------------------------------- fetch


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
    fetch_jars(settings)
    compose = ["docker-compose"] if shutil.which("docker") and compose_command() is None else []
    fetch_apt(["redis-server", *(["chromium"] if browser else []), *compose])
    fetch_npm()


# --------------------------------------------------------------------------- programs


def _fill(template: str, **values) -> str:
    text = (CONFIG / template).read_text()
    for key, value in values.items():
        text = text.replace("{" + key + "}", str(value))
    return text


def _java_command(settings: Settings, module: str, main: str, heap: str, *args: str, props: Iterable[str] = ()) -> list[str]:
    classpath = f"{jars_dir(settings, module)}/*"
    return ["java", f"-Xmx{heap}", "-XX:+UseSerialGC", "-Djava.awt.headless=true", *props, "-cp", classpath, main, *args]


def _kafka_prepare(settings: Settings, paths: StackPaths) -> list[str]:
    props = paths.stack / "kafka-server.properties"
    props.write_text(
        _fill(
            "kafka-server.properties",
            kafka_port=settings.kafka_port,
            controller_port=settings.kafka_controller_port,
            data_dir=paths.data,
            partitions=settings.topic_partitions,
            retention_hours=settings.topic_retention_hours,
        )
    )
    log4j = [f"-Dlog4j2.configurationFile={CONFIG / 'kafka-log4j2.properties'}"]
    if not (paths.data / "kafka" / "data" / "meta.properties").exists():
        # `--cluster-id=...`: a random id may begin with "-", which a bare argument would turn into an option
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        console.print("[cyan]kafka[/] formatting KRaft storage")
        subprocess.run(
            _java_command(settings, "kafka", "kafka.tools.StorageTool", "256m", "format", f"--cluster-id={cluster_id}", "-c", str(props), props=log4j),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return _java_command(settings, "kafka", "kafka.Kafka", "768m", str(props), props=log4j)


def _s3_prepare(settings: Settings, paths: StackPaths) -> list[str]:
    (paths.data / "s3").mkdir(parents=True, exist_ok=True)
    props = paths.stack / "s3proxy.properties"
    props.write_text(
        _fill(
            "s3proxy.properties",
            s3_port=settings.s3_port,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            data_dir=paths.data,
        )
    )
    logback = f"-Dlogback.configurationFile={CONFIG / 's3proxy-logback.xml'}"
    return _java_command(settings, "s3proxy", "org.gaul.s3proxy.Main", "384m", "--properties", str(props), props=[logback])


def _redis_prepare(settings: Settings, paths: StackPaths) -> list[str]:
    (paths.data / "redis").mkdir(parents=True, exist_ok=True)
    conf = paths.stack / "redis.conf"
    conf.write_text(
        f"bind 127.0.0.1\nport {settings.redis_port}\ndir {paths.data / 'redis'}\n"
        "appendonly yes\nsave \"\"\nprotected-mode yes\n"
    )
    return [shutil.which("redis-server") or "redis-server", str(conf)]


def _port_open(port: int) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def _kafka_healthy(settings: Settings) -> None:
    from kafka import KafkaAdminClient

    # A closed port fails at once; kafka-python's own bootstrap backs off for many seconds.
    _port_open(settings.kafka_port)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=3000)
    try:
        admin.list_topics()
    finally:
        admin.close()


def _s3_healthy(settings: Settings) -> None:
    from heatmap_core.s3 import s3_client

    s3_client(settings).list_buckets()


def _redis_healthy(settings: Settings) -> None:
    import redis

    redis.Redis.from_url(settings.redis_url, socket_timeout=2).ping()


def _clickhouse_healthy(settings: Settings) -> None:
    import httpx

    answer = httpx.get(f"http://127.0.0.1:{settings.clickhouse_port}/ping", timeout=2)
    if answer.text != "Ok.\n":
        raise StackError(f"clickhouse /ping answered {answer.status_code} {answer.text[:80]!r}")


def ensure_topic(settings: Settings, topic: str | None = None, partitions: int | None = None) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10000)
    try:
        new = NewTopic(
            name=topic or settings.topic,
            num_partitions=partitions or settings.topic_partitions,
            replication_factor=1,
            topic_configs={"retention.ms": str(settings.topic_retention_hours * 3600 * 1000)},
        )
        try:
            admin.create_topics([new])
        except TopicAlreadyExistsError:
            pass
    finally:
        admin.close()


def _ensure_buckets(settings: Settings) -> None:
    from heatmap_core.s3 import ensure_bucket, s3_client

    client = s3_client(settings)
    for bucket in (settings.raw_bucket, settings.assets_bucket):
        ensure_bucket(client, bucket)


@dataclass(frozen=True)
class Program:
    name: str
    prepare: Callable[[Settings, StackPaths], list[str]]
    health: Callable[[Settings], None]
    after_start: Callable[[Settings], None] | None = None
    start_timeout_s: float = 90.0
    requires: tuple[str, ...] = field(default=())
    # The ports it listens on: checked free before a start, so a health check
    # never mistakes someone else's server for ours.
    ports: Callable[[Settings], tuple[int, ...]] = lambda settings: ()


PROGRAMS: dict[str, Program] = {
    "kafka": Program(
        "kafka", _kafka_prepare, _kafka_healthy, ensure_topic,
        ports=lambda s: (s.kafka_port, s.kafka_controller_port),
    ),
    "s3": Program("s3", _s3_prepare, _s3_healthy, _ensure_buckets, ports=lambda s: (s.s3_port,)),
    "redis": Program("redis", _redis_prepare, _redis_healthy, ports=lambda s: (s.redis_port,)),
    # chdb_server owns <data dir>/clickhouse and serves ClickHouse's HTTP interface.
    "clickhouse": Program(
        "clickhouse", lambda s, p: [sys.executable, "-m", "chdb_server"], _clickhouse_healthy,
        ports=lambda s: (s.clickhouse_port,),
    ),
}


def register(program: Program) -> None:
    """Application packages add their long-running processes (ingestion, landing, ...)."""
    PROGRAMS[program.name] = program


# --------------------------------------------------------------------------- supervisord


def _env(settings: Settings, paths: StackPaths) -> dict[str, str]:
    env = settings.as_env()
    env["HEATMAP_DATA_DIR"] = str(paths.data)
    env["HEATMAP_STACK_ID"] = str(paths.stack)
    env["DAGSTER_HOME"] = str(paths.data / "dagster_home")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _supervisorctl(paths: StackPaths, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(paths.conf), *args],
        capture_output=True,
        text=True,
        check=check,
    )


def _supervisord_pid(paths: StackPaths) -> int | None:
    try:
        pid = int(paths.pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        proc = psutil.Process(pid)
        if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE and "supervisord" in " ".join(proc.cmdline()):
            return pid
    except psutil.Error:
        pass
    return None


def _record_pid(paths: StackPaths, name: str) -> None:
    """Remember a program's pid and start time: some (redis) rewrite their environment block."""
    answer = _supervisorctl(paths, "pid", name, check=False).stdout.strip()
    if not answer.isdigit() or answer == "0":
        raise StackError(f"{name} is not running ({answer}); see {paths.log(name)}\n{_tail(paths.log(name))}")
    pid = int(answer)
    (paths.stack / f"{name}.pid").write_text(f"{pid} {psutil.Process(pid).create_time()}")


def listening_pids() -> dict[int, int | None]:
    """{port: pid} of every listening TCP socket on this machine (pid None when it is not ours to see)."""
    return {
        conn.laddr.port: conn.pid
        for conn in psutil.net_connections("tcp")
        if conn.laddr and conn.status == psutil.CONN_LISTEN
    }


def _ensure_ports_free(program: Program, settings: Settings) -> None:
    listening = listening_pids()
    for port in program.ports(settings):
        if port in listening:
            owner = listening[port]
            try:
                what = " ".join(psutil.Process(owner).cmdline())[:120] if owner else "another process"
            except psutil.Error:
                what = "another process"
            raise StackError(
                f"port {port} needed by {program.name} is taken by pid {owner}: {what}\n"
                "stop that process (another stack? `python -m infra.stack stop` with its HEATMAP_DATA_DIR) "
                "or point the HEATMAP_* setting for this port elsewhere"
            )


def _recorded_processes(paths: StackPaths) -> list[psutil.Process]:
    found = []
    for pidfile in paths.stack.glob("*.pid"):
        try:
            pid, created = pidfile.read_text().split()
            proc = psutil.Process(int(pid))
            if abs(proc.create_time() - float(created)) < 0.01:
                found.append(proc)
        except (ValueError, psutil.Error):
            continue
    return found


def stack_processes(paths: StackPaths) -> list[psutil.Process]:
    """Every live process started for this data directory (by HEATMAP_STACK_ID or recorded pid)."""
    found = {proc.pid: proc for proc in _recorded_processes(paths)}
    marker = str(paths.stack)
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid() or proc.pid in found:
            continue
        try:
            if proc.environ().get("HEATMAP_STACK_ID") == marker or str(paths.conf) in proc.cmdline():
                found[proc.pid] = proc
        except psutil.Error:
            continue
    # This machine's init does not always reap orphans: a zombie is already gone.
    return [proc for proc in found.values() if _alive(proc)]


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _kill(processes: list[psutil.Process], timeout: float = 15.0) -> None:
    for proc in processes:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _wait_gone(processes, timeout)
    for proc in processes:
        if _alive(proc):
            try:
                proc.kill()
            except psutil.Error:
                pass
    _wait_gone(processes, 5.0)


def _wait_gone(processes: list[psutil.Process], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(proc) for proc in processes):
        time.sleep(0.2)


def _global_sections(settings: Settings, paths: StackPaths) -> str:
    env = _env(settings, paths)
    env_line = ",".join(f'{key}="{value.replace("%", "%%").replace(chr(34), "")}"' for key, value in env.items())
    return "\n".join(
        [
            f"[unix_http_server]\nfile={paths.socket}\nchmod=0700\n",
            f"[supervisord]\nlogfile={paths.log('supervisord')}\npidfile={paths.pidfile}\n"
            f"directory={ROOT}\nenvironment={env_line}\nminfds=4096\n",
            "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n",
            f"[supervisorctl]\nserverurl=unix://{paths.socket}\n",
        ]
    )


def _program_section(name: str, command: list[str], paths: StackPaths) -> str:
    quoted = " ".join(_quote(part) for part in command)
    return (
        f"\n[program:{name}]\ncommand={quoted}\nautostart=false\nautorestart=unexpected\nstartsecs=2\n"
        f"startretries=3\nstopasgroup=true\nkillasgroup=true\nstopwaitsecs=30\nstopsignal=TERM\n"
        f"redirect_stderr=true\nstdout_logfile={paths.log(name)}\nstdout_logfile_maxbytes=50MB\n"
        f"stdout_logfile_backups=2\n"
    )


def _quote(part: str) -> str:
    part = part.replace("%", "%%")
    return f'"{part}"' if any(ch in part for ch in " ;*") else part


def _wait_healthy(program: Program, settings: Settings, paths: StackPaths) -> None:
    started = time.monotonic()
    try:
        for attempt in Retrying(
            stop=stop_after_delay(program.start_timeout_s),
            wait=wait_fixed(0.5),
            retry=retry_if_exception_type(Exception),
            reraise=False,
        ):
            with attempt:
                state = _supervisorctl(paths, "status", program.name, check=False).stdout
                if "FATAL" in state or "BACKOFF" in state:
                    raise StackError(f"{program.name} failed to start: {state.strip()}; see {paths.log(program.name)}")
                program.health(settings)
    except RetryError as exc:
        cause = exc.last_attempt.exception()
        tail = _tail(paths.log(program.name))
        raise StackError(f"{program.name} not healthy after {program.start_timeout_s:.0f} s: {cause}\n{tail}") from cause
    console.print(f"[green]{program.name}[/] healthy in {time.monotonic() - started:.1f} s")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {path})"


def is_running(settings: Settings) -> bool:
    return _supervisord_pid(StackPaths(settings.data_path)) is not None


def start(
    settings: Settings, services: Iterable[str] = INFRA_SERVICES, do_fetch: bool = True, with_requirements: bool = True
) -> None:
    """Start the named programs (and, unless told not to, what they require), waiting until each is healthy.

    with_requirements=False runs only the named programs, against infrastructure
    that already runs elsewhere (the end-to-end tests use this).
    """
    paths = StackPaths(settings.data_path)
    wanted: list[str] = []
    for name in services:
        if name not in PROGRAMS:
            raise StackError(f"unknown program {name!r}; known: {', '.join(PROGRAMS)}")
        for dep in (*(PROGRAMS[name].requires if with_requirements else ()), name):
            if dep not in wanted:
                wanted.append(dep)
    if do_fetch:
        fetch_jars(settings)
        if "redis" in wanted:
            fetch_apt(["redis-server"])
    for directory in (paths.stack, paths.logs):
        directory.mkdir(parents=True, exist_ok=True)

    if _supervisord_pid(paths) is None:
        _clear_leftovers(paths, "recovering from an unclean stop: ")
        paths.conf.write_text(_global_sections(settings, paths) + _sections(settings, paths, wanted))
        subprocess.run(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(paths.conf)],
            check=True,
            env={**os.environ, **_env(settings, paths)},
        )
        for attempt in Retrying(stop=stop_after_delay(15), wait=wait_fixed(0.2), reraise=True):
            with attempt:
                _supervisorctl(paths, "pid")
    else:
        # Append only the programs the running supervisord lacks: rewriting the
        # global section would make `update` restart everything already running.
        known = paths.conf.read_text()
        missing = [name for name in wanted if f"[program:{name}]" not in known]
        if missing:
            paths.conf.write_text(known + _sections(settings, paths, missing))
            _supervisorctl(paths, "update")

    for name in wanted:
        program = PROGRAMS[name]
        state = _supervisorctl(paths, "status", name, check=False).stdout
        if "RUNNING" not in state:
            _ensure_ports_free(program, settings)
            console.print(f"[cyan]{name}[/] starting (log: {paths.log(name)})")
            _supervisorctl(paths, "start", name, check=False)
        _wait_healthy(program, settings, paths)
        _record_pid(paths, name)
        if program.after_start:
            program.after_start(settings)


def stop(settings: Settings, timeout: float = 60.0) -> None:
    """Stop every program and supervisord; then make sure no process of this stack is left."""
    paths = StackPaths(settings.data_path)
    pid = _supervisord_pid(paths)
    if pid is not None:
        console.print("[cyan]stack[/] stopping ...")
        _supervisorctl(paths, "stop", "all", check=False)
        _supervisorctl(paths, "shutdown", check=False)
        try:
            psutil.Process(pid).wait(timeout=timeout)
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            console.print("[yellow]supervisord did not exit in time; killing it[/]")
    _clear_leftovers(paths)
    console.print("[green]stack[/] stopped")


def _sections(settings: Settings, paths: StackPaths, names: list[str]) -> str:
    return "".join(_program_section(name, PROGRAMS[name].prepare(settings, paths), paths) for name in names)


def _clear_leftovers(paths: StackPaths, why: str = "") -> None:
    """End every process of this stack that survived its supervisord, and forget its socket and pids."""
    leftovers = stack_processes(paths)
    if leftovers:
        if why:
            console.print(f"[yellow]{why}[/]ending {len(leftovers)} leftover process(es)")
        _kill(leftovers)
    paths.socket.unlink(missing_ok=True)
    for pidfile in paths.stack.glob("*.pid"):
        pidfile.unlink()


def stop_program(settings: Settings, name: str) -> None:
    _supervisorctl(StackPaths(settings.data_path), "stop", name, check=False)


def status(settings: Settings) -> dict[str, str]:
    paths = StackPaths(settings.data_path)
    if _supervisord_pid(paths) is None:
        return {}
    states = {}
    for line in _supervisorctl(paths, "status", check=False).stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2:
            states[parts[0]] = " ".join(parts[1:])
    return states


# --------------------------------------------------------------------------- CLI

app = typer.Typer(help="Local stack of the heatmap lakehouse (Kafka, S3 server, Redis and the services).", no_args_is_help=True)


@app.command("fetch")
def fetch_command(browser: bool = typer.Option(True, help="Also install Debian's Chromium for browser tests.")) -> None:
    """Download what the stack needs into caches (idempotent)."""
    fetch(get_settings(), browser=browser)


@app.command("start")
def start_command(services: list[str] = typer.Argument(None, help=f"Programs to start (default: {' '.join(INFRA_SERVICES)}).")) -> None:
    """Start programs in the background and wait until they are healthy."""
    _load_app_programs()
    try:
        start(get_settings(), services or INFRA_SERVICES)
    except StackError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc


@app.command("stop")
def stop_command() -> None:
    """Stop every program of the stack; nothing is left running."""
    stop(get_settings())


@app.command("status")
def status_command() -> None:
    """Show the state of each program."""
    settings = get_settings()
    states = status(settings)
    table = Table(title=f"stack in {settings.data_path}")
    table.add_column("program")
    table.add_column("state")
    if not states:
        console.print(f"stack in {settings.data_path} is not running")
        return
    for name, state in states.items():
        table.add_row(name, state)
    console.print(table)


def _load_app_programs() -> None:
    """Register the application programs (infra.programs imports this module, so import late)."""
    import infra.programs  # noqa: F401


if __name__ == "__main__":
    app()
