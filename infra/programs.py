"""The program table: every process the local stack can run, in one place.

A Program says how to build its command line (writing the config it needs
into the stack directory first), how to tell that it is healthy, what to do
once it is (create the topic, the buckets), which programs it needs and which
ports it listens on. ``PROGRAMS`` is a read-only constant that start receives
as an argument: nothing registers into it, so every entry point (``python -m
infra.stack``, ``heatmap-stack``, the demo, the tests) sees the same programs.

Application programs run their package's documented entry point (uvicorn with
the app, ``python -m landing run``, ``dagster dev``); infra imports no service code.
"""

from __future__ import annotations

import base64
import importlib.util
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import httpx
import redis
import yaml
from kafka import KafkaAdminClient

from heatmap_core.provision import ensure_buckets, ensure_topic
from heatmap_core.s3 import s3_client
from heatmap_core.settings import DagsterSettings, LandingSettings, Settings, env_name
from infra.console import StackError, console
from infra.paths import CONFIG, ROOT, StackPaths, jars_dir


@dataclass(frozen=True)
class Processes:
    """A program that runs several copies of one command (supervisord's ``numprocs``): ``count`` of them,
    named ``<program>-<n>`` for n in 0..count-1 whatever the count, each told its n in ``number_variable``."""

    count: Callable[[Settings], int]
    number_variable: str


@dataclass(frozen=True)
class Program:
    name: str
    # Writes what the program reads (config files, formatted storage) and returns its command line.
    command: Callable[[Settings, StackPaths], list[str]]
    # Raises until the program serves (what it returns is ignored); the stack polls it after a start.
    health: Callable[[Settings], object]
    after_start: Callable[[Settings], None] | None = None
    start_timeout_s: float = 90.0
    requires: tuple[str, ...] = ()
    # The ports it listens on: checked free before a start, so a health check
    # never mistakes someone else's server for ours.
    ports: Callable[[Settings], tuple[int, ...]] = lambda settings: ()
    # Unset: one process, named as the program.
    processes: Processes | None = None


# --------------------------------------------------------------------------- infrastructure


def _write_config(paths: StackPaths, template: str, **values) -> Path:
    """infra/config/<template> with its {placeholders} filled, written to the stack directory."""
    text = (CONFIG / template).read_text()
    for key, value in values.items():
        text = text.replace("{" + key + "}", str(value))
    written = paths.stack / template
    written.write_text(text)
    return written


def _java_command(
    settings: Settings, module: str, main: str, heap: str, *args: str, props: Iterable[str] = ()
) -> list[str]:
    classpath = f"{jars_dir(settings, module)}/*"
    return [
        "java",
        f"-Xmx{heap}",
        "-XX:+UseSerialGC",
        "-Djava.awt.headless=true",
        *props,
        "-cp",
        classpath,
        main,
        *args,
    ]


def _kafka_command(settings: Settings, paths: StackPaths) -> list[str]:
    props = _write_config(
        paths,
        "kafka-server.properties",
        kafka_port=settings.kafka_port,
        controller_port=settings.kafka_controller_port,
        data_dir=paths.data,
        partitions=settings.topic_partitions,
        retention_hours=settings.topic_retention_hours,
    )
    log4j = [f"-Dlog4j2.configurationFile={CONFIG / 'kafka-log4j2.properties'}"]
    if not (paths.data / "kafka" / "data" / "meta.properties").exists():
        # `--cluster-id=...`: a random id may begin with "-", which a bare argument would turn into an option
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        console.print("[cyan]kafka[/] formatting KRaft storage")
        subprocess.run(
            _java_command(
                settings,
                "kafka",
                "kafka.tools.StorageTool",
                "256m",
                "format",
                f"--cluster-id={cluster_id}",
                "-c",
                str(props),
                props=log4j,
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return _java_command(settings, "kafka", "kafka.Kafka", "768m", str(props), props=log4j)


def _kafka_healthy(settings: Settings) -> None:
    # A closed port fails at once; kafka-python's own bootstrap backs off for many seconds.
    with socket.create_connection(("127.0.0.1", settings.kafka_port), timeout=1):
        pass
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=3000)
    try:
        admin.list_topics()
    finally:
        admin.close()


def _s3_command(settings: Settings, paths: StackPaths) -> list[str]:
    (paths.data / "s3").mkdir(parents=True, exist_ok=True)
    props = _write_config(
        paths,
        "s3proxy.properties",
        s3_port=settings.s3_port,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        data_dir=paths.data,
    )
    logback = f"-Dlogback.configurationFile={CONFIG / 's3proxy-logback.xml'}"
    return _java_command(
        settings, "s3proxy", "org.gaul.s3proxy.Main", "384m", "--properties", str(props), props=[logback]
    )


def _redis_command(settings: Settings, paths: StackPaths) -> list[str]:
    (paths.data / "redis").mkdir(parents=True, exist_ok=True)
    conf = paths.stack / "redis.conf"
    conf.write_text(
        f"bind 127.0.0.1\nport {settings.redis_port}\ndir {paths.data / 'redis'}\n"
        'appendonly yes\nsave ""\nprotected-mode yes\n'
    )
    return [shutil.which("redis-server") or "redis-server", str(conf)]


def _clickhouse_healthy(settings: Settings) -> None:
    answer = httpx.get(f"http://127.0.0.1:{settings.clickhouse_port}/ping", timeout=2)
    if answer.text != "Ok.\n":
        raise StackError(f"clickhouse /ping answered {answer.status_code} {answer.text[:80]!r}")


# A worker sized for a 2-core machine shared with the rest of the stack: both cores, and memory for
# one executor of Spark's default 1g plus its off-heap overhead.
SPARK_WORKER_CORES = 2
SPARK_WORKER_MEMORY = "2g"


def spark_class_command(main: str, *args: str) -> list[str]:
    """``$SPARK_HOME/bin/spark-class main args``, SPARK_HOME being PySpark's package: the cluster runs
    the very jars the driver has, so driver and executors never disagree on a version."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("pyspark is not installed in this environment")
    return [str(Path(spec.submodule_search_locations[0]) / "bin" / "spark-class"), main, *args]


def spark_master_command(settings: Settings, paths: StackPaths) -> list[str]:
    return spark_class_command(
        "org.apache.spark.deploy.master.Master",
        "--host",
        "127.0.0.1",
        "--port",
        str(settings.spark_master_port),
        "--webui-port",
        str(settings.spark_master_webui_port),
    )


def spark_worker_command(settings: Settings, paths: StackPaths) -> list[str]:
    work = paths.data / "spark" / "work"
    work.mkdir(parents=True, exist_ok=True)
    # Port 0: the worker's own RPC and web UI ports are picked free; only the master's are known.
    return spark_class_command(
        "org.apache.spark.deploy.worker.Worker",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--webui-port",
        "0",
        "--cores",
        str(SPARK_WORKER_CORES),
        "--memory",
        SPARK_WORKER_MEMORY,
        "--work-dir",
        str(work),
        spark_master_url(settings),
    )


def spark_master_url(settings: Settings) -> str:
    """What HEATMAP_SPARK_MASTER is set to for a job to run on the stack's cluster."""
    return f"spark://127.0.0.1:{settings.spark_master_port}"


def spark_master_state(settings: Settings) -> dict:
    """The master's own report (its web UI's /json/), raising unless it is the alive master."""
    state = httpx.get(f"http://127.0.0.1:{settings.spark_master_webui_port}/json/", timeout=2).raise_for_status().json()
    if state.get("status") != "ALIVE":
        raise StackError(f"spark master is {state.get('status')!r}")
    return state


def spark_worker_healthy(settings: Settings) -> None:
    """Healthy once the master lists an alive worker with its cores: a worker that never registered
    (a wrong master URL, a port taken) never gets there."""
    workers = [w for w in spark_master_state(settings)["workers"] if w["state"] == "ALIVE"]
    if not any(w["cores"] == SPARK_WORKER_CORES for w in workers):
        raise StackError("no alive spark worker registered with the master")


# --------------------------------------------------------------------------- application


def _http_ok(url: str) -> None:
    httpx.get(url, timeout=2.0).raise_for_status()


def _landing_healthy(settings: Settings) -> None:
    for port in settings.landing.health_ports:
        _http_ok(f"http://127.0.0.1:{port}/health")


def uvicorn_command(module: str, port: int, workers: int = 1) -> list[str]:
    """A Litestar app (``module:attribute``) under uvicorn on 127.0.0.1, as the stack, tests and bench run it."""
    command = [sys.executable, "-m", "uvicorn", module, "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    return [*command, "--workers", str(workers)] if workers > 1 else command


def dagster_dev_command(port: int) -> list[str]:
    """``dagster dev`` (webserver and daemon) on the project's workspace, on 127.0.0.1."""
    return [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-w",
        str(ROOT / "workspace.yaml"),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]


def dagster_materialize_command(selection: str, partition: str) -> list[str]:
    """``dagster asset materialize`` of the code location's ``selection`` for one partition, in a
    process of its own with the HEATMAP_* settings of its environment, as a deployed run."""
    return [
        sys.executable,
        "-m",
        "dagster",
        "asset",
        "materialize",
        "-m",
        "heatmap_assets.definitions",
        "--select",
        selection,
        "--partition",
        partition,
    ]


def _uvicorn_program(
    name: str,
    module: str,
    port_of: Callable[[Settings], int],
    requires: tuple[str, ...],
    workers_of: Callable[[Settings], int] = lambda settings: 1,
) -> Program:
    """A Litestar app under uvicorn on its configured port, healthy once /health answers."""
    return Program(
        name,
        lambda s, p: uvicorn_command(module, port_of(s), workers_of(s)),
        lambda s: _http_ok(f"http://127.0.0.1:{port_of(s)}/health"),
        requires=requires,
        ports=lambda s: (port_of(s),),
    )


def dagster_instance(settings: DagsterSettings) -> str:
    """The instance's dagster.yaml. A run whose worker is killed is failed (by the code server, which sees
    its run process gone, or by run monitoring past the max runtime), its pool slot is freed one monitoring
    tick after its end, and the retry daemon re-executes it: nobody has to notice (ARCHITECTURE, Idempotency).
    """
    return yaml.safe_dump(
        {
            "telemetry": {"enabled": False},
            # One bucket-writing run at a time, for the machine's sake (a Spark job each); buckets are their
            # own partitions, so correctness does not need it (ARCHITECTURE, the bucket tables).
            "concurrency": {"pools": {"default_limit": 1}},
            "run_monitoring": {
                "enabled": True,
                "poll_interval_seconds": settings.run_monitoring_interval_seconds,
                "max_runtime_seconds": settings.run_max_runtime_seconds,
                # A run that ended still holding a slot died before releasing it: nothing else will.
                "free_slots_after_run_end_seconds": settings.run_monitoring_interval_seconds,
            },
            "run_retries": {"enabled": True, "max_retries": settings.run_max_retries},
        },
        sort_keys=False,
    )


def _dagster_command(settings: Settings, paths: StackPaths) -> list[str]:
    home = paths.data / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(dagster_instance(settings.dagster))
    return dagster_dev_command(settings.dagster_port)


# --------------------------------------------------------------------------- the table


# What `start` runs without names, and what the project adds on top of it. The Spark cluster is
# optional: `start spark-worker` brings up the master and a worker (see README, "The local stack").
INFRA_SERVICES = ("kafka", "s3", "redis")
APP_PROGRAMS = ("ingestion", "landing", "query", "dagster")
SPARK_CLUSTER = ("spark-master", "spark-worker")

PROGRAMS: Mapping[str, Program] = MappingProxyType(
    {
        program.name: program
        for program in (
            Program(
                "kafka",
                _kafka_command,
                _kafka_healthy,
                ensure_topic,
                ports=lambda s: (s.kafka_port, s.kafka_controller_port),
            ),
            Program(
                "s3", _s3_command, lambda s: s3_client(s).list_buckets(), ensure_buckets, ports=lambda s: (s.s3_port,)
            ),
            Program(
                "redis",
                _redis_command,
                lambda s: redis.Redis.from_url(s.redis_url, socket_timeout=2).ping(),
                ports=lambda s: (s.redis_port,),
            ),
            _uvicorn_program(
                "ingestion",
                "ingestion_api.app:app",
                lambda s: s.ingestion_port,
                ("kafka", "redis"),
                lambda s: s.ingestion_workers,
            ),
            # HEATMAP_LANDING_INSTANCES consumers of the group, `landing-<n>` under supervisord, instance n
            # by HEATMAP_LANDING_INSTANCE_NUMBER (LandingSettings.of_instance). Their GET /health is optional
            # (HEATMAP_LANDING_HEALTH_PORT, + n for instance n); without it, running is health.
            Program(
                "landing",
                lambda s, p: [sys.executable, "-m", "landing", "run"],
                _landing_healthy,
                requires=("kafka", "s3"),
                ports=lambda s: s.landing.health_ports,
                processes=Processes(lambda s: s.landing.instances, env_name(LandingSettings, "instance_number")),
            ),
            # chdb_server owns <data dir>/clickhouse and serves ClickHouse's HTTP interface.
            Program(
                "clickhouse",
                lambda s, p: [sys.executable, "-m", "chdb_server"],
                _clickhouse_healthy,
                ports=lambda s: (s.clickhouse_port,),
            ),
            Program(
                "spark-master",
                spark_master_command,
                spark_master_state,
                ports=lambda s: (s.spark_master_port, s.spark_master_webui_port),
            ),
            Program("spark-worker", spark_worker_command, spark_worker_healthy, requires=("spark-master",)),
            _uvicorn_program("query", "query_api.app:app", lambda s: s.query_port, ("s3", "clickhouse")),
            Program(
                "dagster",
                _dagster_command,
                lambda s: _http_ok(f"http://127.0.0.1:{s.dagster_port}/server_info"),
                requires=("kafka", "s3", "clickhouse"),
                start_timeout_s=180.0,
                ports=lambda s: (s.dagster_port,),
            ),
        )
    }
)
