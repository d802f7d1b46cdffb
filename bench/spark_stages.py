"""python -m bench.spark_stages: where the hourly job's Spark time goes, from Spark's own event log.

Writes one hour of lake lines per format (as ``bench.scale`` does), runs ``write_hours`` on it in a
session whose event log is on (bench-only conf), once to warm up and then ``--runs`` times, and
prints, for the last run, every Spark job of ``write_hours`` (its call site in our code, wall time)
with its stages (tasks, wall time, summed task run time, CPU, GC, bytes read and shuffled). The
text goes to ``bench/profiles/spark-stages-<size>-<fmt>.txt`` with ``--save``.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from bench.common import console, machine, private_clickhouse, scratch_bucket
from bench.profile import PROFILES
from bench.scale import write_lake_hour
from heatmap_assets.spark_job import write_hours
from heatmap_core.lake import hour_prefix, staging_prefix
from heatmap_core.s3 import s3_client
from heatmap_core.settings import Settings, get_settings
from heatmap_core.spark import spark_session
from heatmap_core.timeutil import hour_start

app = typer.Typer(add_completion=False)

# Task metrics summed per stage, as the event log names them, and the column each becomes.
_METRICS = {
    "internal.metrics.executorRunTime": "run ms",
    "internal.metrics.executorCpuTime": "cpu ms",  # nanoseconds in the log
    "internal.metrics.jvmGCTime": "gc ms",
    "internal.metrics.input.bytesRead": "in MiB",
    "internal.metrics.shuffle.write.bytesWritten": "shuf w MiB",
    "internal.metrics.shuffle.read.localBytesRead": "shuf r MiB",
    "internal.metrics.output.bytesWritten": "out MiB",
    "internal.metrics.memoryBytesSpilled": "spill MiB",
}


def _stage_row(info: dict) -> dict[str, float]:
    row = {"tasks": info["Number of Tasks"], "wall ms": info["Completion Time"] - info["Submission Time"]}
    for accumulable in info.get("Accumulables", []):
        column = _METRICS.get(accumulable.get("Name", ""))
        if column:
            value = float(accumulable["Value"])
            row[column] = value / 1e6 if column == "cpu ms" else value / 2**20 if "MiB" in column else value
    return row


_SQL = "org.apache.spark.sql.execution.ui.SparkListenerSQLExecution"
_COLUMNS = (
    "tasks",
    "wall ms",
    "run ms",
    "cpu ms",
    "gc ms",
    "in MiB",
    "shuf w MiB",
    "shuf r MiB",
    "out MiB",
    "spill MiB",
)


def summarize(event_log: Path, since_ms: float) -> str:
    """The SQL executions started after ``since_ms`` (epoch ms), each with its call site in our code,
    wall time and completed stages, as a text table."""
    queries: dict[int, dict] = {}
    stage_query: dict[int, int] = {}
    stages: dict[int, dict] = {}
    for line in event_log.read_text().splitlines():
        event = json.loads(line)
        kind = event["Event"]
        if kind == _SQL + "Start" and event["time"] >= since_ms:
            queries[event["executionId"]] = {"site": event["description"], "start": event["time"], "stages": []}
        elif kind == _SQL + "End" and event["executionId"] in queries:
            queries[event["executionId"]]["end"] = event["time"]
        elif kind == "SparkListenerJobStart":
            execution = int(event["Properties"].get("spark.sql.execution.id", -1))
            if execution in queries:
                queries[execution]["stages"] += event["Stage IDs"]
                stage_query.update(dict.fromkeys(event["Stage IDs"], execution))
        elif kind == "SparkListenerStageCompleted":
            info = event["Stage Info"]
            stages[info["Stage ID"]] = {"name": info["Stage Name"], **_stage_row(info)}
    if not queries:
        return "no SQL executions"
    first = min(q["start"] for q in queries.values())
    last = max(q.get("end", q["start"]) for q in queries.values())
    lines = [f"{len(queries)} SQL executions, {last - first:,.0f} ms from the first one's start to the last one's end"]
    total = dict.fromkeys(_COLUMNS, 0.0)
    for query_id, query in sorted(queries.items()):
        lines.append(
            f"SQL {query_id} at +{query['start'] - first:,.0f} ms, {query.get('end', 0) - query['start']:,.0f} ms: "
            f"{query['site']}"
        )
        lines.append("    stage" + "".join(f"{c:>11}" for c in _COLUMNS))
        for stage_id in sorted(set(query["stages"])):
            stage = stages.get(stage_id)
            if stage is None:
                continue  # skipped: its shuffle output or cache was already there
            for column in _COLUMNS:
                total[column] += stage.get(column, 0)
            lines.append(f"    {stage_id:>5}" + "".join(f"{stage.get(c, 0):>11,.0f}" for c in _COLUMNS))
    lines.append("  total" + "".join(f"{total[c]:>11,.0f}" for c in _COLUMNS) + "  (wall ms: summed stage walls)")
    return "\n".join(lines)


def profile(settings: Settings, events: int, fmt: str, runs: int, log_dir: Path, conf: dict[str, str]) -> str:
    hour = hour_start(datetime.now(UTC)) - timedelta(hours=2)
    write_lake_hour(settings, hour, events, fmt)
    client = s3_client(settings)
    prefix = hour_prefix(hour, fmt, settings.parquet_prefix)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=settings.raw_bucket, Prefix=prefix)["Contents"]]
    paths = [f"s3a://{settings.raw_bucket}/{key}" for key in keys]
    # One plain JSON file (Spark 4 rolls and compresses the log by default).
    extra = {
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": log_dir.as_uri(),
        "spark.eventLog.rolling.enabled": "false",
        "spark.eventLog.compress": "false",
        **conf,
    }
    spark = spark_session("bench-spark-stages", settings, extra)
    try:
        walls = []
        for _ in range(runs + 1):  # the first run warms the JVM up
            run_id = f"stages-{uuid.uuid4().hex[:12]}"
            staging = f"s3a://{settings.raw_bucket}/{staging_prefix(run_id)}"
            since = time.time() * 1000
            started = time.perf_counter()
            write_hours(spark, {hour: paths}, fmt, staging)
            walls.append(time.perf_counter() - started)
    finally:
        spark.stop()
    (event_log,) = [p for p in log_dir.iterdir() if p.is_file()]
    header = (
        f"write_hours on {events:,} {fmt} lines in {len(paths)} files, Spark {settings.spark_master}"
        f"{''.join(f', {key}={value}' for key, value in conf.items())}; "
        f"wall per run (first: warm-up): {', '.join(f'{w:.1f} s' for w in walls)}\n"
        f"machine: {machine()}\nlast run:"
    )
    return header + "\n" + summarize(event_log, since)


@app.command()
def main(
    events: Annotated[int, typer.Option(help="Lake lines in the hour.")] = 1_000_000,
    fmt: Annotated[list[str] | None, typer.Option(help="json and/or parquet (default both).")] = None,
    runs: Annotated[int, typer.Option(help="Runs after the warm-up.")] = 1,
    save: Annotated[str | None, typer.Option(help="Also write bench/profiles/spark-stages-<SAVE>-<fmt>.txt")] = None,
    conf: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE laid over the project's Spark conf, to try a setting.")
    ] = None,
) -> None:
    malformed = [item for item in conf or () if "=" not in item]
    if malformed:
        raise typer.BadParameter(f"expected KEY=VALUE, got {', '.join(map(repr, malformed))}", param_hint="--conf")
    extra = dict(item.split("=", 1) for item in conf or ())
    settings = get_settings()
    with (
        tempfile.TemporaryDirectory(prefix="bench-stages-") as scratch,
        private_clickhouse(settings, Path(scratch)) as (private, _server),
    ):
        for name in fmt or ["json", "parquet"]:
            log_dir = Path(scratch) / f"events-{name}"
            log_dir.mkdir()
            bucket = private.model_copy(update={"raw_bucket": f"bench-stages-{uuid.uuid4().hex[:8]}"})
            with scratch_bucket(bucket):
                text = profile(bucket, events, name, runs, log_dir, extra)
            console.print(text, highlight=False, markup=False)
            if save:
                (PROFILES / f"spark-stages-{save}-{name}.txt").write_text(text + "\n")


if __name__ == "__main__":
    app()
