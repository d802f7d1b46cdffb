"""POST /events/batch against the real Kafka and Redis: acceptance, refusals, auth, idempotency."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from litestar.testing import TestClient

from heatmap_core.events import RECORD_VERSION, Event
from ingestion_api.app import create_app
from ingestion_api.ledger import BatchLedger, Claim
from tests.conftest import free_port

from .conftest import ACME, WRITE_KEYS, make_batch, read_topic


def test_valid_batch_lands_once_with_key_received_at_and_events(client, ingest_settings):
    batch = make_batch(events=5)
    before = datetime.now(UTC)
    response = client.post("/events/batch", json=batch, headers=ACME)
    after = datetime.now(UTC)

    assert response.status_code == 202
    assert response.json() == {"batch_id": batch["batch_id"], "events": 5, "duplicate": False}
    [(key, record)] = read_topic(ingest_settings)
    assert key == b"acme|home_v1"
    assert record.version == RECORD_VERSION
    assert (record.client_id, record.screen_id, record.batch_id) == ("acme", "home_v1", batch["batch_id"])
    assert before <= record.received_at <= after
    assert record.received_at.utcoffset() == timedelta(0)
    assert record.events == msgspec.convert(batch["events"], list[Event])


def test_resent_batch_id_is_acknowledged_but_published_once(client, ingest_settings):
    batch = make_batch()
    first = client.post("/events/batch", json=batch, headers=ACME)
    second = client.post("/events/batch", json=batch, headers=ACME)

    assert first.status_code == second.status_code == 202
    assert second.json() == {"batch_id": batch["batch_id"], "events": 3, "duplicate": True}
    assert [record.batch_id for _, record in read_topic(ingest_settings)] == [batch["batch_id"]]


def test_same_batch_id_for_another_client_is_its_own_batch(client, ingest_settings):
    batch = make_batch()
    other = {**batch, "client_id": "globex"}
    assert client.post("/events/batch", json=batch, headers=ACME).status_code == 202
    response = client.post("/events/batch", json=other, headers={"X-Write-Key": WRITE_KEYS["globex"]})

    assert response.json()["duplicate"] is False
    assert sorted(key for key, _ in read_topic(ingest_settings)) == [b"acme|home_v1", b"globex|home_v1"]


def test_batch_without_batch_id_gets_a_uuid(client, ingest_settings):
    batch = make_batch()
    del batch["batch_id"]
    response = client.post("/events/batch", json=batch, headers=ACME)

    assert response.status_code == 202
    generated = response.json()["batch_id"]
    assert uuid.UUID(generated).version == 4
    assert [record.batch_id for _, record in read_topic(ingest_settings)] == [generated]


def _with_event(**changes) -> dict:
    batch = make_batch(events=4)
    batch["events"][3] = {**batch["events"][3], **changes}
    return batch


INVALID = {
    "client_id": {**make_batch(), "client_id": "acme corp"},
    "screen_id": {**make_batch(), "screen_id": "s" * 65},
    "batch_id": {**make_batch(), "batch_id": "not-a-uuid"},
    "events": {**make_batch(), "events": []},
    "events[3].x_norm": _with_event(x_norm=1.0001),
    "events[3].y_norm": _with_event(y_norm=-0.1),
    "events[3].event_type": _with_event(event_type="hover"),
    "events[3].event_time": _with_event(event_time="2026-02-02T10:15:00"),  # no zone
}


@pytest.mark.parametrize("field", INVALID)
def test_each_invalid_field_is_named_and_nothing_is_published(client, ingest_settings, field):
    response = client.post("/events/batch", json=INVALID[field], headers=ACME)

    assert response.status_code == 400
    assert response.json()["field"] == field
    assert response.json()["detail"].startswith(f"{field}: ")
    assert read_topic(ingest_settings) == []


@pytest.mark.parametrize(
    ("event_time", "why"),
    [
        (timedelta(hours=-73), "older than event_time_past_hours"),
        (timedelta(minutes=11), "further ahead than event_time_future_minutes"),
        (1764000000, "a unix time is not RFC 3339"),
    ],
)
def test_event_time_outside_the_window_is_refused(client, ingest_settings, event_time, why):
    # Offsets from the clock at run time: a time computed at collection goes stale in a long suite.
    if isinstance(event_time, timedelta):
        event_time = (datetime.now(UTC) + event_time).isoformat()
    response = client.post("/events/batch", json=_with_event(event_time=event_time), headers=ACME)

    assert response.status_code == 400, why
    assert response.json()["field"] == "events[3].event_time"
    assert read_topic(ingest_settings) == []


def test_too_many_events_and_strings_for_numbers_are_refused(ingest_settings):
    small = ingest_settings.model_copy(update={"max_events_per_batch": 3})
    with TestClient(create_app(small)) as client:
        too_many = client.post("/events/batch", json=make_batch(events=4), headers=ACME)
        stringly = client.post("/events/batch", json=_with_event(x_norm="0.5"), headers=ACME)

    assert (too_many.status_code, too_many.json()["field"]) == (400, "events")
    assert (stringly.status_code, stringly.json()["field"]) == (400, "events[3].x_norm")
    assert read_topic(small) == []


def test_oversize_body_gets_413_and_nothing_is_published(client, ingest_settings):
    body = msgspec.json.encode(make_batch(events=1)) + b" " * ingest_settings.max_body_bytes
    response = client.post("/events/batch", content=body, headers={**ACME, "Content-Type": "application/json"})

    assert response.status_code == 413
    assert response.json()["field"] == "body"
    assert read_topic(ingest_settings) == []


def test_malformed_json_and_unknown_fields_are_named(client, ingest_settings):
    malformed = client.post("/events/batch", content=b'{"client_id": "acme",', headers=ACME)
    unknown = client.post("/events/batch", json=_with_event(pressure=0.3), headers=ACME)
    missing = make_batch()
    del missing["events"][0]["y_norm"]
    missing_field = client.post("/events/batch", json=missing, headers=ACME)

    assert (malformed.status_code, malformed.json()["field"]) == (400, "body")
    assert (unknown.status_code, unknown.json()["field"]) == (400, "events[3].pressure")
    assert (missing_field.status_code, missing_field.json()["field"]) == (400, "events[0].y_norm")
    assert read_topic(ingest_settings) == []


def test_write_keys(client, ingest_settings):
    batch = make_batch()
    missing = client.post("/events/batch", json=batch)
    unknown = client.post("/events/batch", json=batch, headers={"X-Write-Key": "guess"})
    non_ascii = client.post("/events/batch", json=batch, headers={"X-Write-Key": b"cl\xe9"})
    foreign = client.post("/events/batch", json=batch, headers={"X-Write-Key": WRITE_KEYS["globex"]})
    by_query = client.post(f"/events/batch?write_key={WRITE_KEYS['acme']}", json=batch)

    assert missing.status_code == 401 and "X-Write-Key" in missing.json()["detail"]
    assert unknown.status_code == 401 and unknown.json()["detail"] == "unknown write key"
    assert non_ascii.status_code == 401 and non_ascii.json()["detail"] == "unknown write key"
    assert foreign.status_code == 403 and foreign.json()["field"] == "client_id"
    assert by_query.status_code == 202
    assert [record.batch_id for _, record in read_topic(ingest_settings)] == [batch["batch_id"]]


def test_auth_off_accepts_without_key(ingest_settings):
    demo = ingest_settings.model_copy(update={"auth_enabled": False, "write_keys": ""})
    with TestClient(create_app(demo)) as client:
        response = client.post("/events/batch", json=make_batch(client_id="anyone"))
    assert response.status_code == 202
    assert [key for key, _ in read_topic(demo)] == [b"anyone|home_v1"]


def test_plain_text_body_as_sent_by_sendbeacon_is_accepted(client, ingest_settings):
    body = msgspec.json.encode(make_batch())
    response = client.post(
        f"/events/batch?write_key={WRITE_KEYS['acme']}",
        content=body,
        headers={"Content-Type": "text/plain;charset=UTF-8"},
    )
    assert response.status_code == 202
    assert len(read_topic(ingest_settings)) == 1


def test_health_schema_demo_and_cors(client, ingest_settings):
    health = client.get("/health")
    schema = client.get("/schema/openapi.json").json()
    demo = client.get("/demo/")
    origin = ingest_settings.cors_origin_list[0]
    preflight = client.options(
        "/events/batch",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-write-key",
        },
    )
    stranger = client.options(
        "/events/batch", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    )

    assert health.status_code == 200 and health.json() == {"status": "ok", "kafka": "ok", "redis": "ok"}
    assert {"/events/batch", "/health", "/metrics"} <= set(schema["paths"])
    assert set(schema["paths"]["/events/batch"]["post"]["responses"]) >= {"202", "400", "401", "403", "413", "503"}
    assert demo.status_code == 200 and '<div id="screen"' in demo.text
    assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == origin
    assert "access-control-allow-origin" not in stranger.headers


def test_redis_down_gives_503_and_publishes_nothing(ingest_settings):
    no_redis = ingest_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    with TestClient(create_app(no_redis)) as client:
        response = client.post("/events/batch", json=make_batch(), headers=ACME)
        health = client.get("/health")

    # docs/ARCHITECTURE.md, ingestion refusals: a 503 for Kafka or Redis says Retry-After: 5.
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert health.status_code == 503 and health.json()["kafka"] == "ok" and health.json()["redis"] != "ok"
    assert read_topic(no_redis) == []


def test_redis_down_with_accept_publishes_without_dedup(ingest_settings):
    no_redis = ingest_settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{free_port()}/0", "ingestion_without_redis": "accept"}
    )
    batch = make_batch()
    with TestClient(create_app(no_redis)) as client:
        answers = [client.post("/events/batch", json=batch, headers=ACME) for _ in range(2)]
        health = client.get("/health")
        metrics = client.get("/metrics").text

    # Accepted twice, neither seen as a duplicate: without the ledger the re-send is published again.
    assert [(a.status_code, a.json()["duplicate"]) for a in answers] == [(202, False), (202, False)]
    assert [record.batch_id for _, record in read_topic(no_redis)] == [batch["batch_id"]] * 2
    assert "heatmap_ingest_batches_without_dedup_total 2.0" in metrics.splitlines()
    # Degraded, but still taking batches: a load balancer keeps the instance.
    assert health.status_code == 200 and health.json()["status"] == "degraded" and health.json()["redis"] != "ok"


def test_ledger_claim_states(ingest_settings):
    batch_id = str(uuid.uuid4())

    async def walk() -> list[Claim]:
        ledger = BatchLedger(ingest_settings)
        try:
            states = [await ledger.claim("acme", batch_id), await ledger.claim("acme", batch_id)]
            await ledger.release("acme", batch_id)
            states.append(await ledger.claim("acme", batch_id))
            await ledger.commit("acme", batch_id)
            states += [await ledger.claim("acme", batch_id), await ledger.claim("globex", batch_id)]
            return states
        finally:
            await ledger.close()

    # new, in flight, released after a failed publish, done after Kafka's ack, and scoped per client
    assert asyncio.run(walk()) == [Claim.NEW, Claim.PENDING, Claim.NEW, Claim.DONE, Claim.NEW]


def test_ledger_commands_of_one_tick_keep_their_own_replies_in_order(ingest_settings):
    """Concurrent requests' commands go to Redis as one pipeline; each still gets its own answer."""
    a, b, c = (str(uuid.uuid4()) for _ in range(3))

    async def concurrently() -> tuple[list, list]:
        ledger = BatchLedger(ingest_settings)
        try:
            first = await asyncio.gather(
                ledger.claim("acme", a), ledger.claim("acme", b), ledger.claim("acme", a), ledger.claim("globex", a)
            )
            # In issue order: a is done before it is claimed again; c is released before its claim.
            second = await asyncio.gather(
                ledger.commit("acme", a),
                ledger.claim("acme", a),
                ledger.claim("acme", b),
                ledger.release("acme", c),
                ledger.claim("acme", c),
            )
            return list(first), list(second)
        finally:
            await ledger.close()

    first, second = asyncio.run(concurrently())
    assert first == [Claim.NEW, Claim.NEW, Claim.PENDING, Claim.NEW]
    assert second == [None, Claim.DONE, Claim.PENDING, None, Claim.NEW]
