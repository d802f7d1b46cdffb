"""Command line: ``python -m landing run`` (also ``heatmap-landing run``)."""

from __future__ import annotations

import typer

from heatmap_core.logs import configure_logging
from heatmap_core.settings import get_settings
from landing.service import Landing, LandingOptions

app = typer.Typer(help="Land Kafka records of heatmap.events.raw in the raw lake, effectively once.", no_args_is_help=True)


@app.command()
def run(
    group: str = typer.Option("heatmap-landing", envvar="HEATMAP_LANDING_GROUP", help="Kafka consumer group."),
    instance_id: str = typer.Option(
        None, envvar="HEATMAP_LANDING_INSTANCE_ID",
        help="Static group membership id: a restart under the same id takes its partitions back without a rebalance.",
    ),
    max_events: int = typer.Option(50_000, envvar="HEATMAP_LANDING_MAX_EVENTS", min=1, help="Flush a partition at this many events."),
    max_bytes: int = typer.Option(16 * 1024 * 1024, envvar="HEATMAP_LANDING_MAX_BYTES", min=1, help="Flush a partition at this many JSON bytes."),
    flush_interval: float = typer.Option(10.0, envvar="HEATMAP_LANDING_FLUSH_INTERVAL", min=0.0, help="Flush a partition whose oldest buffered record is this many seconds old."),
    log_interval: float = typer.Option(10.0, envvar="HEATMAP_LANDING_LOG_INTERVAL", min=0.0, help="Seconds between progress and lag lines."),
    parquet: bool = typer.Option(True, envvar="HEATMAP_LANDING_PARQUET", help="Also write the Phase 2 Parquet copy under the parquet prefix."),
    log_level: str = typer.Option("INFO", envvar="HEATMAP_LANDING_LOG_LEVEL"),
) -> None:
    """Consume until SIGTERM or SIGINT, then flush, commit and leave the group."""
    configure_logging(log_level)
    options = LandingOptions(
        group=group,
        instance_id=instance_id,
        max_events=max_events,
        max_bytes=max_bytes,
        flush_interval_s=flush_interval,
        log_interval_s=log_interval,
        formats=("json", "parquet") if parquet else ("json",),
    )
    Landing(get_settings(), options).run()


@app.callback()
def main() -> None:
    """Landing: the Kafka -> raw lake sink."""
