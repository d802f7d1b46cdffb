"""The event model shared by ingestion, landing and the batch side.

``Event`` carries the field constraints the ingestion API validates with;
``RawBatchRecord`` is the versioned Kafka value; ``lake_events`` turns it into
lines of the raw lake (``LakeEvent``, defined with its columns in
``heatmap_core.lake_schema``). ``lake_events`` is the reference: landing writes
most records' lines with a native codec tested against it (``landing.lines``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal, get_args

import msgspec

from heatmap_core.ids import ID_PATTERN
from heatmap_core.lake_schema import LakeEvent

# Version 2 added the page view (``view``) and the server-derived ``device``;
# version 1 records (no view, device unknown) still decode with the defaults.
RECORD_VERSION = 2
READABLE_RECORD_VERSIONS = (1, 2)

# mousemove, click and rageclick are pointer maps; a scroll event's y_norm is the
# depth of the viewport's bottom edge on the screen (its x_norm is not a place);
# touch is v1's tap, kept so v1 clients keep working.
EventType = Literal["mousemove", "click", "rageclick", "scroll", "touch"]
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)
SCROLL = "scroll"

# Device class from the viewport's CSS width: [0, 768) mobile, [768, 1024) tablet,
# 1024 and up desktop; a v1 batch sends no viewport and is ``unknown``.
Device = Literal["desktop", "tablet", "mobile", "unknown"]
DEVICES: tuple[Device, ...] = get_args(Device)
DEVICE_BANDS: tuple[tuple[int, Device], ...] = ((768, "mobile"), (1024, "tablet"))
UNKNOWN_DEVICE: Device = "unknown"

Identifier = Annotated[str, msgspec.Meta(pattern=ID_PATTERN, min_length=1, max_length=64)]
Norm = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
# RFC 3339 with an explicit zone: msgspec refuses naive datetimes for tz=True.
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
# CSS pixels. A viewport past 16384 px or a screen element past 1,000,000 px is not a browser's.
ViewportPixels = Annotated[int, msgspec.Meta(ge=1, le=16_384)]
ScreenPixels = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
# Random per page load (a UUID or similar): identifies a view, never a person.
ViewId = Annotated[str, msgspec.Meta(pattern=ID_PATTERN, min_length=8, max_length=64)]


def device_class(viewport_w: int | None) -> Device:
    """The device class of a viewport width in CSS pixels (None: a v1 batch)."""
    if viewport_w is None:
        return UNKNOWN_DEVICE
    for upper, device in DEVICE_BANDS:
        if viewport_w < upper:
            return device
    return "desktop"


class Event(msgspec.Struct, forbid_unknown_fields=True):
    event_time: Annotated[AwareDatetime, msgspec.Meta(description="RFC 3339 with a zone")]
    x_norm: Annotated[Norm, msgspec.Meta(description="0 (left) to 1 (right) of the screen element")]
    y_norm: Annotated[
        Norm,
        msgspec.Meta(description="0 (top) to 1 (bottom); for a scroll event, the depth of the viewport's bottom edge"),
    ]
    event_type: EventType = "mousemove"


class PageView(msgspec.Struct, forbid_unknown_fields=True):
    """The page load a v2 batch was recorded in: its viewport and the screen element's rendered size."""

    view_id: Annotated[ViewId, msgspec.Meta(description="random per page load; identifies a view, never a person")]
    viewport_w: Annotated[
        ViewportPixels,
        msgspec.Meta(description="viewport width, CSS pixels; gives the device: mobile < 768, tablet < 1024, desktop"),
    ]
    viewport_h: Annotated[ViewportPixels, msgspec.Meta(description="viewport height, CSS pixels")]
    screen_w: Annotated[ScreenPixels, msgspec.Meta(description="the screen element's rendered width, CSS pixels")]
    screen_h: Annotated[ScreenPixels, msgspec.Meta(description="the screen element's rendered height, CSS pixels")]


class RawBatchRecord(msgspec.Struct, kw_only=True):
    """Kafka value of topic heatmap.events.raw: one accepted batch."""

    version: int = RECORD_VERSION
    client_id: Identifier
    screen_id: Identifier
    batch_id: str
    received_at: AwareDatetime
    events: list[Event]
    view: PageView | None = None  # None: a v1 batch
    device: Device = UNKNOWN_DEVICE  # derived by the ingestion API from view.viewport_w

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
    view = record.view
    # The record's fields once, then per event only what varies: a copy of a template is about three
    # times cheaper than building each line from every field, and landing does it for every event.
    template = LakeEvent(
        client_id=record.client_id,
        screen_id=record.screen_id,
        event_time=received_at,
        x_norm=0.0,
        y_norm=0.0,
        event_type="",
        received_at=received_at,
        batch_id=record.batch_id,
        kafka_partition=partition,
        kafka_offset=offset,
        batch_index=0,
        device=record.device,
        view_id=view.view_id if view else None,
        viewport_w=view.viewport_w if view else None,
        viewport_h=view.viewport_h if view else None,
        screen_w=view.screen_w if view else None,
        screen_h=view.screen_h if view else None,
    )
    line = msgspec.structs.replace
    return [
        line(
            template,
            event_time=event.event_time.astimezone(UTC),
            x_norm=event.x_norm,
            y_norm=event.y_norm,
            event_type=event.event_type,
            batch_index=index,
        )
        for index, event in enumerate(record.events)
    ]
