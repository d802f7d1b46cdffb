"""Property-based tests of the batch validator (decode_batch + check_batch), and of the same rules over HTTP."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import assume, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from heatmap_core.events import EVENT_TYPES, Event, PageView
from heatmap_core.ids import ID_PATTERN, is_valid_id
from heatmap_core.settings import Settings
from ingestion_api.app import create_app
from ingestion_api.errors import InvalidField
from ingestion_api.models import BatchIn, Limits, check_batch, decode_batch

from .conftest import read_topic

LIMITS = Limits.from_settings(Settings())
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
MARGIN = timedelta(minutes=2)  # keeps generated times clear of the window edges while a test runs
REQUIRED_EVENT_KEYS = ("event_time", "x_norm", "y_norm")
REQUIRED_BATCH_KEYS = ("client_id", "screen_id", "events")
VIEW_SIZES = {"viewport_w": 16_384, "viewport_h": 16_384, "screen_w": 1_000_000, "screen_h": 1_000_000}
VIEW_KEYS = ("view_id", *VIEW_SIZES)

ids = st.from_regex(ID_PATTERN, fullmatch=True)
zones = st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
norms = st.floats(0.0, 1.0)


def rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@st.composite
def event_times(draw, now: datetime) -> str:
    offset = draw(
        st.integers(int((-LIMITS.past + MARGIN).total_seconds()), int((LIMITS.future - MARGIN).total_seconds()))
    )
    micros = draw(st.integers(0, 999_999))
    return rfc3339((now + timedelta(seconds=offset, microseconds=micros)).astimezone(draw(zones)))


view_ids = st.from_regex(r"[A-Za-z0-9_-]{8,64}", fullmatch=True)
page_views = st.fixed_dictionaries(
    {"view_id": view_ids, **{name: st.integers(1, largest) for name, largest in VIEW_SIZES.items()}}
)


@st.composite
def batches(draw, now: datetime = NOW, max_events: int = 50) -> dict:
    batch = {
        "client_id": draw(ids),
        "screen_id": draw(ids),
        "events": draw(
            st.lists(
                st.fixed_dictionaries(
                    {"event_time": event_times(now), "x_norm": norms, "y_norm": norms},
                    optional={"event_type": st.sampled_from(EVENT_TYPES)},
                ),
                min_size=1,
                max_size=max_events,
            )
        ),
    }
    if draw(st.booleans()):
        batch["batch_id"] = str(draw(st.uuids()))
    if draw(st.booleans()):  # v2: with its page view
        batch["view"] = draw(page_views)
    return batch


not_a_string = st.one_of(st.integers(), st.none(), st.booleans(), st.lists(st.integers(), max_size=2))
bad_ids = st.one_of(st.text().filter(lambda s: not is_valid_id(s)), not_a_string)
bad_norms = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: not 0.0 <= v <= 1.0),
    st.text(),
    st.booleans(),
    st.none(),
)
bad_event_types = st.one_of(st.text().filter(lambda s: s not in EVENT_TYPES), not_a_string)
bad_view_ids = st.one_of(
    st.text().filter(lambda s: not (8 <= len(s) <= 64 and is_valid_id(s))),
    not_a_string.filter(lambda v: v is not None),
)


def bad_sizes(largest: int) -> st.SearchStrategy:
    """Not an integer in [1, largest]: zero, negative, too large, fractional, text, a boolean, null."""
    return st.one_of(
        st.integers(max_value=0),
        st.integers(min_value=largest + 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(),
        st.booleans(),
        st.none(),
    )


@st.composite
def bad_event_times(draw, now: datetime) -> object:
    past = now - LIMITS.past - timedelta(seconds=draw(st.integers(1, 10**8)))
    future = now + LIMITS.future + timedelta(seconds=draw(st.integers(1, 10**8)))
    return draw(
        st.sampled_from(
            [
                rfc3339(past),
                rfc3339(future),
                now.replace(tzinfo=None).isoformat(),  # no zone
                now.timestamp(),  # unix time, not RFC 3339
                now.strftime("%d/%m/%Y %H:%M"),
                "",
            ]
        )
    )


@st.composite
def invalid_batches(draw, now: datetime = NOW) -> tuple[dict, str]:
    """A valid batch with exactly one thing wrong, and the field the error must name."""
    batch = draw(batches(now))
    index = draw(st.integers(0, len(batch["events"]) - 1))
    event = batch["events"][index]
    at = f"events[{index}]"
    kind = draw(
        st.sampled_from(
            [
                "id",
                "batch_id",
                "norm",
                "event_type",
                "event_time",
                "missing_event_key",
                "unknown_event_key",
                "missing_batch_key",
                "no_events",
                "too_many_events",
                "view_size",
                "view_id",
                "missing_view_key",
                "unknown_view_key",
            ]
        )
    )
    if kind.startswith("view"):
        view = batch.setdefault("view", draw(page_views))
        if kind == "view_size":
            name = draw(st.sampled_from(list(VIEW_SIZES)))
            view[name] = draw(bad_sizes(VIEW_SIZES[name]))
        else:
            name = "view_id"
            view[name] = draw(bad_view_ids)
        return batch, f"view.{name}"
    if kind == "missing_view_key":
        name = draw(st.sampled_from(VIEW_KEYS))
        del batch.setdefault("view", draw(page_views))[name]
        return batch, f"view.{name}"
    if kind == "unknown_view_key":
        name = draw(st.from_regex(r"[a-z_]{1,12}", fullmatch=True).filter(lambda k: k not in VIEW_KEYS))
        batch.setdefault("view", draw(page_views))[name] = 1
        return batch, f"view.{name}"
    if kind == "id":
        name = draw(st.sampled_from(["client_id", "screen_id"]))
        batch[name] = draw(bad_ids)
        return batch, name
    if kind == "batch_id":
        batch["batch_id"] = draw(st.one_of(st.text(), not_a_string.filter(lambda v: v is not None)))
        assume(not _is_uuid(batch["batch_id"]))
        return batch, "batch_id"
    if kind == "norm":
        name = draw(st.sampled_from(["x_norm", "y_norm"]))
        event[name] = draw(bad_norms)
        return batch, f"{at}.{name}"
    if kind == "event_type":
        event["event_type"] = draw(bad_event_types)
        return batch, f"{at}.event_type"
    if kind == "event_time":
        event["event_time"] = draw(bad_event_times(now))
        return batch, f"{at}.event_time"
    if kind == "missing_event_key":
        name = draw(st.sampled_from(REQUIRED_EVENT_KEYS))
        del event[name]
        return batch, f"{at}.{name}"
    if kind == "unknown_event_key":
        name = draw(
            st.from_regex(r"[a-z_]{1,12}", fullmatch=True).filter(
                lambda k: k not in {f.encode_name for f in msgspec.structs.fields(Event)}
            )
        )
        event[name] = 1
        return batch, f"{at}.{name}"
    if kind == "missing_batch_key":
        name = draw(st.sampled_from(REQUIRED_BATCH_KEYS))
        del batch[name]
        return batch, name
    if kind == "no_events":
        batch["events"] = []
        return batch, "events"
    batch["events"] = (batch["events"] * (LIMITS.max_events // len(batch["events"]) + 1))[: LIMITS.max_events + 1]
    return batch, "events"


def _is_uuid(value: object) -> bool:
    try:
        msgspec.convert(value, uuid.UUID)
    except msgspec.ValidationError:
        return False
    return True


def validate(body: bytes, now: datetime = NOW) -> BatchIn:
    batch = decode_batch(body)
    check_batch(batch, LIMITS, now)
    return batch


@given(batches())
def test_every_valid_batch_is_accepted_unchanged(batch):
    decoded = validate(msgspec.json.encode(batch))

    assert (decoded.client_id, decoded.screen_id) == (batch["client_id"], batch["screen_id"])
    assert (str(decoded.batch_id) if decoded.batch_id else None) == batch.get("batch_id")
    assert [(e.x_norm, e.y_norm, e.event_type) for e in decoded.events] == [
        (e["x_norm"], e["y_norm"], e.get("event_type", "mousemove")) for e in batch["events"]
    ]
    assert [e.event_time for e in decoded.events] == [datetime.fromisoformat(e["event_time"]) for e in batch["events"]]
    assert decoded.view == (PageView(**batch["view"]) if "view" in batch else None)


@given(invalid_batches())
def test_one_wrong_field_is_refused_and_named(case):
    batch, field = case
    with pytest.raises(InvalidField) as refused:
        validate(msgspec.json.encode(batch))

    assert refused.value.field == field
    assert refused.value.status_code == 400
    assert refused.value.detail.startswith(f"{field}: ")


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_validator(body):
    try:
        validate(body)
    except InvalidField as refused:
        assert refused.field


# -------------------------------------------------------------------------- the same rules over HTTP

FAST = hyp_settings(max_examples=30, deadline=None)


@pytest.fixture
def open_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"auth_enabled": False})


@pytest.fixture
def open_client(open_settings: Settings):
    with TestClient(create_app(open_settings)) as client:
        yield client


def test_http_refuses_each_invalid_batch_naming_the_field_and_publishes_nothing(open_client, open_settings):
    @FAST
    @given(case=invalid_batches(now=datetime.now(UTC)))
    def post(case):
        batch, field = case
        response = open_client.post("/events/batch", content=msgspec.json.encode(batch))
        assert response.status_code == 400
        assert response.json()["field"] == field

    post()
    assert read_topic(open_settings) == []


def test_http_publishes_each_valid_batch_exactly_as_sent(open_client, open_settings):
    sent = {}

    @FAST
    @given(batch=batches(now=datetime.now(UTC), max_events=20))
    def post(batch):
        batch["batch_id"] = str(uuid.uuid4())  # hypothesis may replay an example: each post is a new batch
        response = open_client.post("/events/batch", content=msgspec.json.encode(batch))
        assert response.status_code == 202
        sent[batch["batch_id"]] = batch

    post()
    published = {record.batch_id: (key, record) for key, record in read_topic(open_settings)}
    assert published.keys() == sent.keys()
    for batch_id, batch in sent.items():
        key, record = published[batch_id]
        assert key == f"{batch['client_id']}|{batch['screen_id']}".encode()
        assert record.events == decode_batch(msgspec.json.encode(batch)).events
        assert record.view == (PageView(**batch["view"]) if "view" in batch else None)
        assert record.device == _device_of(batch.get("view"))


def _device_of(view: dict | None) -> str:
    """The documented bands, written out again: mobile below 768 CSS px, tablet below 1024."""
    if view is None:
        return "unknown"
    width = view["viewport_w"]
    return "mobile" if width < 768 else "tablet" if width < 1024 else "desktop"
