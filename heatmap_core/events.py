"""The event model shared by ingestion, landing and the batch side.

``Event`` carries the field constraints the ingestion API validates with;
``RawBatchRecord`` is the versioned Kafka value; ``lake_events`` turns it into
lines of the raw lake (``LakeEvent``, defined with its columns in
``heatmap_core.lake_schema``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal, get_args

import msgspec

from heatmap_core.ids import ID_PATTERN
from heatmap_core.lake_schema import LakeEvent

RECORD_VERSION = 1

EventType = Literal["mousemove", "click", "scroll", "touch"]
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)
Identifier = Annotated[str, msgspec.Meta(pattern=ID_PATTERN, min_length=1, max_length=64)]
Norm = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
# RFC 3339 with an explicit zone: msgspec refuses naive datetimes for tz=True.
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class Event(msgspec.Struct, forbid_unknown_fields=True):
    event_time: AwareDatetime
    x_norm: Norm
    y_norm: Norm
    event_type: EventType = "mousemove"


class RawBatchRecord(msgspec.Struct, kw_only=True):
    """Kafka value of topic heatmap.events.raw: one accepted batch."""

    version: int = RECORD_VERSION
    client_id: Identifier
    screen_id: Identifier
    batch_id: str
    received_at: AwareDatetime
    events: list[Event]

    @property
    def key(self) -> bytes:
        return kafka_key(self.client_id, self.screen_id)


def kafka_key(client_id: str, screen_id: str) -> bytes:
    return f"{client_id}|{screen_id}".encode()


_record_decoder = msgspec.json.Decoder(RawBatchRecord)
_encoder = msgspec.json.Encoder()


def encode_record(record: RawBatchRecord) -> bytes:
    return _encoder.encode(record)


def decode_record(value: bytes) -> RawBatchRecord:
    return _record_decoder.decode(value)


def lake_events(record: RawBatchRecord, partition: int, offset: int) -> list[LakeEvent]:
    """Flatten a Kafka record into lake lines, each stamped with its Kafka origin.

    Lines carry UTC times, so the JSON and the Parquet copies hold the same instants in the same form.
    """
    received_at = record.received_at.astimezone(UTC)
    return [
        LakeEvent(
            client_id=record.client_id,
            screen_id=record.screen_id,
            event_time=event.event_time.astimezone(UTC),
            x_norm=event.x_norm,
            y_norm=event.y_norm,
            event_type=event.event_type,
            received_at=received_at,
            batch_id=record.batch_id,
            kafka_partition=partition,
            kafka_offset=offset,
            batch_index=index,
        )
        for index, event in enumerate(record.events)
    ]
