"""Request v2 (a batch with its page view) against the real Kafka and Redis: the record carries the
view and the device the server derived from it; every invalid view, type or depth is a 400 naming
the field, and nothing is published."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import msgspec

from heatmap_core.events import RECORD_VERSION, Event, PageView

from .conftest import ACME, make_batch, read_topic


def make_view(**changes) -> dict:
    return {"view_id": uuid.uuid4().hex, "viewport_w": 1280, "viewport_h": 800, "screen_w": 1280, "screen_h": 2000} | (
        changes
    )


def test_device_is_derived_from_the_viewport_width_at_each_band_edge(client, ingest_settings):
    sent = {
        width: make_batch(view=make_view(viewport_w=width, viewport_h=700, screen_w=width, screen_h=3000))
        for width in (1, 767, 768, 1023, 1024, 16384)
    }
    v1 = make_batch()
    for batch in [*sent.values(), v1]:
        response = client.post("/events/batch", json=batch, headers=ACME)
        assert response.status_code == 202, response.text

    records = {record.batch_id: record for _, record in read_topic(ingest_settings)}
    assert {width: records[batch["batch_id"]].device for width, batch in sent.items()} == {
        1: "mobile",
        767: "mobile",
        768: "tablet",
        1023: "tablet",
        1024: "desktop",
        16384: "desktop",
    }
    for batch in sent.values():
        record = records[batch["batch_id"]]
        assert record.version == RECORD_VERSION == 2
        assert record.view == msgspec.convert(batch["view"], PageView)
        assert record.events == msgspec.convert(batch["events"], list[Event])
    v1_record = records[v1["batch_id"]]
    assert (v1_record.version, v1_record.view, v1_record.device) == (RECORD_VERSION, None, "unknown")
    assert len(records) == len(sent) + 1


def test_every_event_type_and_a_depth_at_each_end_are_accepted(client, ingest_settings):
    batch = make_batch(events=6, view=make_view())
    for event, (event_type, depth) in zip(
        batch["events"],
        [("mousemove", 0.3), ("click", 0.3), ("rageclick", 0.3), ("scroll", 0.0), ("scroll", 1.0), ("touch", 0.5)],
        strict=True,
    ):
        event.update(event_type=event_type, y_norm=depth)
    response = client.post("/events/batch", json=batch, headers=ACME)

    assert response.status_code == 202, response.text
    [(_, record)] = read_topic(ingest_settings)
    assert [(e.event_type, e.y_norm) for e in record.events] == [
        ("mousemove", 0.3),
        ("click", 0.3),
        ("rageclick", 0.3),
        ("scroll", 0.0),
        ("scroll", 1.0),
        ("touch", 0.5),
    ]


def _view_without(name: str) -> dict:
    view = make_view()
    del view[name]
    return view


def _scroll_at(depth: object) -> dict:
    batch = make_batch(events=4, view=make_view())
    batch["events"][3] |= {"event_type": "scroll", "y_norm": depth}
    return batch


def _typed(event_type: object) -> dict:
    batch = make_batch(events=4, view=make_view())
    batch["events"][3]["event_type"] = event_type
    return batch


# case -> (body, the field the 400 must name)
INVALID = {
    "zero viewport width": (make_batch(view=make_view(viewport_w=0)), "view.viewport_w"),
    "negative viewport width": (make_batch(view=make_view(viewport_w=-390)), "view.viewport_w"),
    "viewport wider than any browser": (make_batch(view=make_view(viewport_w=16385)), "view.viewport_w"),
    "fractional viewport width": (make_batch(view=make_view(viewport_w=390.5)), "view.viewport_w"),
    "viewport width as text": (make_batch(view=make_view(viewport_w="390")), "view.viewport_w"),
    "viewport width as a boolean": (make_batch(view=make_view(viewport_w=True)), "view.viewport_w"),
    "zero viewport height": (make_batch(view=make_view(viewport_h=0)), "view.viewport_h"),
    "viewport height as a float": (make_batch(view=make_view(viewport_h=800.0)), "view.viewport_h"),
    "zero screen width": (make_batch(view=make_view(screen_w=0)), "view.screen_w"),
    "negative screen height": (make_batch(view=make_view(screen_h=-1)), "view.screen_h"),
    "screen taller than a million pixels": (make_batch(view=make_view(screen_h=1_000_001)), "view.screen_h"),
    "missing screen height": (make_batch(view=_view_without("screen_h")), "view.screen_h"),
    "missing view id": (make_batch(view=_view_without("view_id")), "view.view_id"),
    "view id of 7 characters": (make_batch(view=make_view(view_id="abcdefg")), "view.view_id"),
    "view id of 65 characters": (make_batch(view=make_view(view_id="v" * 65)), "view.view_id"),
    "view id with a space": (make_batch(view=make_view(view_id="view id 1234")), "view.view_id"),
    "view id with a slash": (make_batch(view=make_view(view_id="../../etc/passwd")), "view.view_id"),
    "view id as a number": (make_batch(view=make_view(view_id=12345678)), "view.view_id"),
    "unknown field in view": (make_batch(view=make_view(device="desktop")), "view.device"),
    "view as a list": (make_batch(view=[1280, 800]), "view"),
    "unknown event type": (_typed("hover"), "events[3].event_type"),
    "event type in capitals": (_typed("CLICK"), "events[3].event_type"),
    "rage click spelled apart": (_typed("rage_click"), "events[3].event_type"),
    "scroll depth below the top": (_scroll_at(-0.01), "events[3].y_norm"),
    "scroll depth past the bottom": (_scroll_at(1.2), "events[3].y_norm"),
    "scroll depth as text": (_scroll_at("0.5"), "events[3].y_norm"),
}


def test_each_invalid_view_type_or_depth_is_named_and_nothing_is_published(client, ingest_settings):
    answers = {}
    for case, (body, _) in INVALID.items():
        response = client.post("/events/batch", json=body, headers=ACME)
        problem = response.json()
        assert problem["detail"].startswith(f"{problem.get('field')}: "), (case, problem)
        answers[case] = (response.status_code, problem.get("field"))

    assert answers == {case: (400, field) for case, (_, field) in INVALID.items()}
    assert read_topic(ingest_settings) == []


def test_openapi_documents_the_v1_and_v2_requests_and_both_are_accepted(client, ingest_settings):
    body = client.get("/schema/openapi.json").json()["paths"]["/events/batch"]["post"]["requestBody"]
    examples = body["content"]["application/json"]["examples"]
    assert set(examples) == {"v1", "v2"}
    assert "view" not in examples["v1"]["value"] and "view" in examples["v2"]["value"]

    now = datetime.now(UTC).isoformat()
    for name, example in examples.items():
        # The documented bodies, moved into the accepted time window and given fresh batch ids.
        request = example["value"] | {"batch_id": str(uuid.uuid4())}
        request["events"] = [event | {"event_time": now} for event in request["events"]]
        response = client.post("/events/batch", json=request, headers=ACME)
        assert response.status_code == 202, (name, response.text)

    devices = sorted((record.view is not None, record.device) for _, record in read_topic(ingest_settings))
    assert devices == [(False, "unknown"), (True, "mobile")]
