"""Fixtures that bring up the real stack and isolate each test inside it.

The session fixture ``stack`` starts Kafka, the S3 server and Redis through
infra.supervisor (reusing them when they already run) and stops them at the end if
it started them. Set HEATMAP_TEST_KEEP_STACK=1 to leave them running between
runs. Each test that asks for ``settings`` gets its own topic, bucket and
ClickHouse database inside that stack, so tests never see each other's data.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from heatmap_core.provision import ensure_buckets, ensure_topic, remove_buckets, remove_topic
from heatmap_core.settings import Settings
from heatmap_core.timeutil import day_start, week_start
from infra import supervisor
from infra.console import StackError
from infra.programs import INFRA_SERVICES, PROGRAMS, uvicorn_command

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"


class ClickHouseServer:
    """A chdb_server process over ``data_dir`` on ``port``, as the stack runs it."""

    def __init__(self, data_dir: Path, port: int):
        self.dsn = f"http://127.0.0.1:{port}"
        self.settings = Settings(data_dir=data_dir, clickhouse_port=port, clickhouse_dsn=self.dsn)
        self.log = data_dir / "chdb_server.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "chdb_server"],
                cwd=ROOT,
                env={**os.environ, **self.settings.as_env()},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.dsn}/ping", timeout=2).text == "Ok.\n":
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"chdb_server did not answer (exit {self.process.poll()}):\n{self.log.read_text()}"
                )
            time.sleep(0.2)

    def client(self, **options):
        import clickhouse_connect

        return clickhouse_connect.get_client(dsn=self.dsn, **options)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(timeout=60)


@contextmanager
def running_clickhouse(data_dir: Path) -> Iterator[ClickHouseServer]:
    server = ClickHouseServer(data_dir, free_port())
    server.start()
    try:
        yield server
    finally:
        if server.process and server.process.poll() is None:
            server.stop()


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory) -> Iterator[Settings]:
    """The stack's settings, with a ClickHouse server (chdb_server) private to this test session."""
    with running_clickhouse(tmp_path_factory.mktemp("clickhouse")) as server:
        yield Settings(clickhouse_dsn=server.dsn, clickhouse_port=server.settings.clickhouse_port)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the running stack (the fixture below) ``service``: `make check` leaves them out.

    A test that starts services of its own without this fixture carries the mark itself.
    """
    for item in items:
        if "stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.service)


@pytest.fixture(scope="session")
def stack(stack_settings: Settings):
    started_here = not supervisor.is_running(stack_settings)
    try:
        supervisor.start(stack_settings, PROGRAMS, INFRA_SERVICES)
    except (StackError, OSError) as exc:
        pytest.fail(
            f"the local stack did not start: {exc}\n"
            "install what it needs with `python -m infra.stack fetch` (Maven, Java 17, apt's redis-server)",
            pytrace=False,
        )
    yield stack_settings
    if started_here and os.environ.get("HEATMAP_TEST_KEEP_STACK") != "1":
        supervisor.stop(stack_settings)


@pytest.fixture
def settings(stack: Settings) -> Iterator[Settings]:
    """Settings isolated for one test: a fresh topic, raw bucket and ClickHouse database.

    The topic and the buckets are removed after the test: the held-load test alone lands
    gigabytes, and a suite that kept every test's data filled a small disk under Kafka."""
    tag = uuid.uuid4().hex[:10]
    isolated = stack.model_copy(
        update={
            "topic": f"test.{tag}",
            "raw_bucket": f"test-raw-{tag}",
            "assets_bucket": f"test-assets-{tag}",
            "clickhouse_database": f"heatmap_test_{tag}",
        }
    )
    ensure_topic(isolated)
    ensure_buckets(isolated)
    yield isolated
    try:
        remove_topic(isolated)
        remove_buckets(isolated)
    except Exception as exc:  # noqa: BLE001  (a leak to report, not the test's own failure)
        warnings.warn(f"the test's topic or buckets were not removed: {exc!r}", stacklevel=1)


@pytest.fixture
def private_kafka(stack: Settings, tmp_path) -> Iterator[Settings]:
    """A single-node Kafka of the test's own on free ports, which the test may stop (the shared one never is)."""
    private = Settings(
        data_dir=tmp_path,
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        redis_url=stack.redis_url,
        topic="outage.events",
        topic_partitions=2,
        kafka_delivery_timeout_s=3.0,
        auth_enabled=False,
    )
    supervisor.start(private, PROGRAMS, ["kafka"])
    yield private
    supervisor.stop(private)


@pytest.fixture
def private_redis(settings: Settings, tmp_path) -> Iterator[Settings]:
    """The test's settings with a Redis of its own on a free port, which the test may restart."""
    private = settings.model_copy(
        update={"data_dir": tmp_path, "redis_url": f"redis://127.0.0.1:{free_port()}/0", "auth_enabled": False}
    )
    supervisor.start(private, PROGRAMS, ["redis"])
    yield private
    supervisor.stop(private)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"browser tests need Debian's Chromium at {CHROMIUM}: `python -m infra.stack fetch` "
            "or `apt-get install -y chromium`",
            pytrace=False,
        )
    return CHROMIUM


# Module scope: Playwright's sync API runs an event loop in the main thread while
# the browser lives, which would break asyncio.run() in the modules that follow.
@pytest.fixture(scope="module")
def browser(chromium_path: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=chromium_path,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield instance
        instance.close()


@pytest.fixture(scope="session")
def spark(stack: Settings):
    """One Spark session for the whole run, built by heatmap_core.spark: the first session of a
    process fixes the JVM's classpath, so every test must get one with the s3a jars on it."""
    from heatmap_core.spark import spark_session

    session = spark_session("heatmap-tests", stack)
    yield session
    session.stop()


@pytest.fixture
def artifacts_dir(request) -> Path:
    """Where a test keeps files a person should look at (screenshots)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# The tests' names for the pipeline's own bucket starts (naive or aware, the zone is kept).
day_of = day_start
week_of = week_start


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def private_stack_settings(directory: Path) -> Settings:
    """A whole stack of its own: data (the ClickHouse server's too) under ``directory``, every port free."""
    return Settings(
        data_dir=directory / "stack",
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        s3_endpoint=f"http://127.0.0.1:{free_port()}",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        ingestion_port=free_port(),
        query_port=free_port(),
        dagster_port=free_port(),
        clickhouse_port=free_port(),
    )


@contextmanager
def serve_app(app: str, settings: Settings, *, port: int | None = None, log_path: Path | None = None) -> Iterator[str]:
    """``app`` (module:attribute) under uvicorn with exactly these settings, as the stack runs it; yields its URL."""
    port = port or free_port()
    log = log_path.open("w") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(
        uvicorn_command(app, port),
        cwd=ROOT,
        env={**os.environ, **settings.as_env()},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                output = log_path.read_text() if log_path else "(no log kept)"
                raise AssertionError(f"{app} not healthy within 60 s (exit {process.poll()}):\n{output}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if not isinstance(log, int):  # subprocess.DEVNULL is an int
            log.close()


# Every answer must match what the OpenAPI document says (status codes, content types,
# bodies, headers) and none may be a 5xx.
SCHEMATHESIS_CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance,response_headers_conformance"
)


def run_schemathesis(base_url: str, workdir: Path, headers: dict[str, str] | None = None) -> None:
    """Property-based requests generated from the live API's own OpenAPI document; fails with
    schemathesis' report when any check fails."""
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{base_url}/schema/openapi.json",
        "--checks",
        SCHEMATHESIS_CHECKS,
        "--max-examples",
        "10",
        "--seed",
        "6",
        "--workers",
        "1",
        "--request-timeout",
        "60",
    ]
    for name, value in (headers or {}).items():
        command += ["--header", f"{name}: {value}"]
    result = subprocess.run(command, check=False, cwd=workdir, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
