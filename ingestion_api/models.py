"""Request and response bodies of the ingestion API, and the validator.

``BatchIn`` carries every static rule (id charset and length, event_type,
x_norm/y_norm range, RFC 3339 with zone, the page view's id and sizes, no
unknown fields) through the constraints of ``heatmap_core.events``;
``decode_batch`` applies them with msgspec in strict mode and names the
offending field. ``check_batch`` adds
the rules that depend on settings or the clock.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated
from uuid import UUID

import msgspec

from heatmap_core.events import Event, Identifier, PageView
from heatmap_core.settings import Settings
from ingestion_api.errors import InvalidField


class BatchIn(msgspec.Struct, forbid_unknown_fields=True):
    client_id: Identifier
    screen_id: Identifier
    events: Annotated[list[Event], msgspec.Meta(min_length=1)]
    # Optional so a naive client can send without one; a re-sent batch_id is not published twice.
    batch_id: UUID | None = None
    view: Annotated[
        PageView | None,
        msgspec.Meta(
            description="v2: the page load the events were recorded in; absent in a v1 request (device unknown)"
        ),
    ] = None


class BatchAccepted(msgspec.Struct):
    batch_id: str
    events: int
    # True when this batch_id was already published: acknowledged again, not re-sent to Kafka.
    duplicate: bool = False


class Health(msgspec.Struct):
    status: str  # "ok" or "degraded"
    kafka: str  # "ok" or why the broker is unreachable
    redis: str


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


_decoder = msgspec.json.Decoder(BatchIn)
# msgspec names the container in " - at `$.events[3]`" and, for missing or unknown keys, the key in the text.
_NAMED_KEY = re.compile(r"(?:missing required|unknown) field `(?P<name>[^`]+)`")


def decode_batch(body: bytes) -> BatchIn:
    """Strict decoding: "0.5" is not a number and a unix time is not an RFC 3339 event_time."""
    try:
        return _decoder.decode(body)
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `$")
        path = where.rstrip("`").lstrip(".")
        if named := _NAMED_KEY.search(message):
            path = f"{path}.{named['name']}" if path else named["name"]
        raise InvalidField(path or "body", message) from exc
    except msgspec.DecodeError as exc:
        if field := _path_of_non_finite_number(body):
            raise InvalidField(field, "NaN and Infinity are not JSON numbers") from exc
        raise InvalidField("body", f"not a JSON document: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidField(_path_of_invalid_text(body), f"not valid UTF-8 (byte {exc.start} of the body)") from exc


def _path_of_invalid_text(body: bytes) -> str:
    """The field whose text holds the first byte that is not UTF-8 (msgspec only gives the offset).

    Decoded again with U+FFFD in place of bad bytes, the document is searched for the
    first string holding one; a bad byte in a key names the object holding that key.
    """
    try:
        document = msgspec.json.decode(body.decode("utf-8", errors="replace").encode())
    except (msgspec.DecodeError, RecursionError):  # a hostile body may nest deeper than the decoder's stack
        return "body"
    return _first_path(document, lambda node: isinstance(node, str) and "\ufffd" in node) or "body"


def _path_of_non_finite_number(body: bytes) -> str | None:
    """The field holding NaN or Infinity, tokens JSON does not have (msgspec only says "invalid character");
    Python's json module reads them as floats."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return _first_path(document, lambda node: isinstance(node, float) and not math.isfinite(node))


def _first_path(document: object, is_bad: Callable[[object], bool]) -> str | None:
    """The JSON path of the first value (or key: then the object holding it) ``is_bad`` holds for,
    in document order. A loop, not recursion: a hostile document may nest past Python's stack."""
    pending: list[tuple[object, str]] = [(document, "")]
    while pending:
        node, path = pending.pop()
        if isinstance(node, list):
            pending.extend(reversed([(item, f"{path}[{i}]") for i, item in enumerate(node)]))
        elif isinstance(node, dict):
            if any(is_bad(key) for key in node):
                return path or "body"
            pending.extend(reversed([(value, f"{path}.{key}" if path else key) for key, value in node.items()]))
        elif is_bad(node):
            return path or "body"
    return None


def check_batch(batch: BatchIn, limits: Limits, now: datetime) -> None:
    """Raise InvalidField for the first rule the decoded batch breaks."""
    count = len(batch.events)
    if count > limits.max_events:
        raise InvalidField("events", f"at most {limits.max_events} events per batch, got {count}", events=count)
    earliest, latest = now - limits.past, now + limits.future
    for index, event in enumerate(batch.events):
        if not earliest <= event.event_time <= latest:
            raise InvalidField(
                f"events[{index}].event_time",
                f"{event.event_time.isoformat()} is outside the accepted window "
                f"[{earliest.isoformat(timespec='seconds')}, {latest.isoformat(timespec='seconds')}]",
                events=count,
            )
