"""Fixtures that bring up the real stack and isolate each test inside it.

The session fixture ``stack`` starts Kafka, the S3 server and Redis through
infra.stack (reusing them when they already run) and stops them at the end if
it started them. Set HEATMAP_TEST_KEEP_STACK=1 to leave them running between
runs. Each test that asks for ``settings`` gets its own topic, bucket and
ClickHouse database inside that stack, so tests never see each other's data.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from heatmap_core.settings import Settings
from infra import stack as stack_module

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory) -> Settings:
    """The stack's settings, with an embedded ClickHouse private to this test session."""
    clickhouse_dir = tmp_path_factory.mktemp("chdb") / "clickhouse"
    return Settings(clickhouse_dsn=f"chdb://{clickhouse_dir}")


@pytest.fixture(scope="session")
def stack(stack_settings: Settings):
    started_here = not stack_module.is_running(stack_settings)
    try:
        stack_module.start(stack_settings, stack_module.INFRA_SERVICES)
    except (stack_module.StackError, OSError) as exc:
        pytest.fail(
            f"the local stack did not start: {exc}\n"
            "install what it needs with `python -m infra.stack fetch` (Maven, Java 17, apt's redis-server)",
            pytrace=False,
        )
    yield stack_settings
    if started_here and os.environ.get("HEATMAP_TEST_KEEP_STACK") != "1":
        stack_module.stop(stack_settings)


@pytest.fixture
def settings(stack: Settings) -> Settings:
    """Settings isolated for one test: a fresh topic, raw bucket and ClickHouse database."""
    from heatmap_core.s3 import ensure_bucket, s3_client

    tag = uuid.uuid4().hex[:10]
    isolated = stack.model_copy(
        update={
            "topic": f"test.{tag}",
            "raw_bucket": f"test-raw-{tag}",
            "assets_bucket": f"test-assets-{tag}",
            "clickhouse_database": f"heatmap_test_{tag}",
        }
    )
    stack_module.ensure_topic(isolated)
    client = s3_client(isolated)
    for bucket in (isolated.raw_bucket, isolated.assets_bucket):
        ensure_bucket(client, bucket)
    return isolated


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


@pytest.fixture
def artifacts_dir(request) -> Path:
    """Where a test keeps files a person should look at (screenshots)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

