"""The hourly asset on a Spark standalone cluster gives the same rows as local mode.

In ``local[*]`` driver and executors share one JVM and one classpath; on a
cluster the executors are other JVMs started by a worker, which must fetch the
s3a jars from the driver and read the lake themselves. The cluster is the
stack's own programs (spark-master, spark-worker) under a private supervisord;
the job runs as a deployment runs it: ``dagster asset materialize`` in its own
process, told the master by HEATMAP_SPARK_MASTER.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import timedelta

import pytest
from tenacity import Retrying, stop_after_delay, wait_fixed

from heatmap_assets.partitions import hour_key
from heatmap_core.settings import Settings
from infra import supervisor
from infra.programs import PROGRAMS, SPARK_CLUSTER, dagster_materialize_command, spark_master_state, spark_master_url
from tests.assets import lakedata
from tests.assets.runs import run
from tests.assets.test_assets_inprocess import base_hour
from tests.conftest import ROOT, free_port


@pytest.fixture(scope="module")
def spark_cluster(stack: Settings, tmp_path_factory) -> Iterator[Settings]:
    """A master and a 2-core worker on free ports, started and health-checked as the stack does."""
    cluster = stack.model_copy(
        update={
            "data_dir": tmp_path_factory.mktemp("spark-cluster"),
            "spark_master_port": free_port(),
            "spark_master_webui_port": free_port(),
        }
    )
    supervisor.start(cluster, PROGRAMS, [SPARK_CLUSTER[-1]], do_fetch=False)
    yield cluster
    supervisor.stop(cluster)


def materialize_in_own_process(settings: Settings, partition: str, dagster_home) -> None:
    env = {**os.environ, **settings.as_env(), "DAGSTER_HOME": str(dagster_home)}
    done = subprocess.run(
        dagster_materialize_command("heatmap_hourly", partition),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]


def test_hourly_on_a_standalone_cluster_matches_local_mode(settings, spark, instance, spark_cluster, tmp_path):
    hour = base_hour(6)
    events = lakedata.make_events(hour, "acme", "home_v1", 400, partition=0, offset=10, seed=31, views=6)
    others = lakedata.make_events(hour, "globex", "pricing", 150, partition=1, offset=500, seed=32, views=3)
    lakedata.write_part(settings, hour, events, duplicate_every=9)
    lakedata.write_part(settings, hour, others)
    window = (hour, hour + timedelta(hours=1))
    expected_cells = lakedata.expected_cells(events + others, hour)
    expected_scroll = lakedata.scroll_rows(lakedata.scroll_views(events + others, hour))
    assert expected_scroll, "the hour must hold scroll reach, or the scroll half proves nothing"

    # The cluster first, on empty tables: every row read back was written by this run.
    on_cluster = settings.model_copy(update={"spark_master": spark_master_url(spark_cluster)})
    materialize_in_own_process(on_cluster, hour_key(hour), tmp_path)
    # The driver unregisters in its JVM's shutdown hook, just after the run's process ends.
    for attempt in Retrying(stop=stop_after_delay(30), wait=wait_fixed(0.5), reraise=True):
        with attempt:
            state = spark_master_state(spark_cluster)
            assert [app["name"] for app in state["completedapps"]] == ["heatmap-assets"]
            assert state["activeapps"] == []
    cluster_cells = lakedata.table_cells(settings, "heatmap_hourly", *window)
    cluster_scroll = lakedata.table_scroll(settings, "heatmap_scroll_hourly", *window)
    assert cluster_cells == expected_cells
    assert cluster_scroll == expected_scroll

    # Local mode over the same files replaces the hour with identical rows.
    run(settings, instance, "heatmap_hourly", hour_key(hour))
    assert lakedata.table_cells(settings, "heatmap_hourly", *window) == cluster_cells
    assert lakedata.table_scroll(settings, "heatmap_scroll_hourly", *window) == cluster_scroll
