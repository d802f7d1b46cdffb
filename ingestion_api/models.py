"""Request and response bodies of the ingestion API, and the rules msgspec cannot express.

``BatchIn`` carries every static rule (id charset and length, event_type,
x_norm/y_norm range, RFC 3339 with zone, no unknown fields) through the
constraints of ``heatmap_core.events``; Litestar decodes it with msgspec.
``check_batch`` adds the rules that depend on settings or the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated
from uuid import UUID

import msgspec

from heatmap_core.events import Event, Identifier
from heatmap_core.settings import Settings


class BatchIn(msgspec.Struct, forbid_unknown_fields=True):
    client_id: Identifier
    screen_id: Identifier
    events: Annotated[list[Event], msgspec.Meta(min_length=1)]
    # Optional so a naive client can send without one; a re-sent batch_id is not published twice.
    batch_id: UUID | None = None


class BatchAccepted(msgspec.Struct):
    batch_id: str
    events: int
    # True when this batch_id was already published: acknowledged again, not re-sent to Kafka.
    duplicate: bool = False


class ErrorBody(msgspec.Struct, omit_defaults=True):
    status_code: int
    detail: str
    # The offending field as a path into the body, e.g. "events[3].x_norm".
    field: str | None = None


class InvalidField(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Limits:
    max_events: int
    past: timedelta
    future: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_events=settings.max_events_per_batch,
            past=timedelta(hours=settings.event_time_past_hours),
            future=timedelta(minutes=settings.event_time_future_minutes),
        )


def check_batch(batch: BatchIn, limits: Limits, now: datetime) -> None:
    """Raise InvalidField for the first rule the decoded batch breaks."""
    if len(batch.events) > limits.max_events:
        raise InvalidField("events", f"at most {limits.max_events} events per batch, got {len(batch.events)}")
    earliest, latest = now - limits.past, now + limits.future
    for index, event in enumerate(batch.events):
        if not earliest <= event.event_time <= latest:
            raise InvalidField(
                f"events[{index}].event_time",
                f"{event.event_time.isoformat()} is outside the accepted window "
                f"[{earliest.isoformat(timespec='seconds')}, {latest.isoformat(timespec='seconds')}]",
            )


class Health(msgspec.Struct):
    status: str  # "ok" or "degraded"
    kafka: str  # "ok" or the error that made the broker unreachable
    redis: str
