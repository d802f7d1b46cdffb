"""Command line: ``python -m landing run`` (also ``heatmap-landing run``)."""

from __future__ import annotations

import typer
from pydantic import ValidationError

from heatmap_core.logs import configure_logging
from heatmap_core.settings import LandingSettings, env_name, get_settings
from landing.service import Landing

app = typer.Typer(
    help="Land Kafka records of heatmap.events.raw in the raw lake, effectively once.", no_args_is_help=True
)


def _flag(name: str, *declarations: str):
    """The flag of one landing setting: unset, the setting applies (its HEATMAP_LANDING_* variable or default)."""
    field = LandingSettings.model_fields[name]
    default = "unset" if field.default is None else field.default
    return typer.Option(
        None, *declarations, help=field.description, show_default=f"{env_name(LandingSettings, name)} or {default}"
    )


@app.command()
def run(
    context: typer.Context,
    group: str = _flag("group"),
    instance_id: str = _flag("instance_id"),
    max_events: int = _flag("max_events"),
    max_bytes: int = _flag("max_bytes"),
    flush_interval: float = _flag("flush_interval"),
    log_interval: float = _flag("log_interval"),
    parquet: bool = _flag("parquet", "--parquet/--no-parquet"),
    log_level: str = _flag("log_level"),
    health_port: int = _flag("health_port"),
) -> None:
    """Consume until SIGTERM or SIGINT, then flush, commit and leave the group.

    Instance n of the stack's several (HEATMAP_LANDING_INSTANCE_NUMBER) runs with the member id and
    health port of ``LandingSettings.of_instance(n)``, derived from the ones set here."""
    given = {name: value for name, value in context.params.items() if value is not None}
    settings = get_settings()
    try:
        # model_validate, not the constructor: the flags lie over the settings already read, not the environment again.
        options = LandingSettings.model_validate({**settings.landing.model_dump(), **given})
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from exc
    landing = options.of_instance(options.instance_number)
    # kafka-python's group and fetch lines (joins, assignments, offset resets) are the history of a rebalance.
    configure_logging(landing.log_level, library_info=("kafka.coordinator", "kafka.consumer"))
    Landing(settings.model_copy(update={"landing": landing})).run()


@app.callback()
def main() -> None:
    """Landing: the Kafka -> raw lake sink."""
