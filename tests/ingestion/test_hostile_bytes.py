"""Bytes an outside probe sent to POST /events/batch: each is a 400 naming the field,
counted in /metrics, and nothing reaches Kafka (the probe once got 500s here)."""

from __future__ import annotations

import re

import msgspec
import pytest

from .conftest import ACME, make_batch, read_topic


def _body_with(raw: bytes, placeholder: str) -> bytes:
    """A valid batch whose ``placeholder`` text is replaced by raw (possibly invalid) bytes."""
    return msgspec.json.encode(make_batch()).replace(placeholder.encode(), raw, 1)


INVALID_UTF8 = {
    "0xff in screen_id": (_body_with(b"\xff", "home_v1"), "screen_id"),
    "Latin-1 e-acute in screen_id": (_body_with(b"caf\xe9", "home_v1"), "screen_id"),
    "overlong slash in screen_id": (_body_with(b"\xc0\xaf", "home_v1"), "screen_id"),
    "surrogate half in client_id": (_body_with(b"\xed\xa0\x80", "acme"), "client_id"),
    "truncated sequence in event_type": (_body_with(b"\xe2\x82", "mousemove"), "events[0].event_type"),
    "0xff in event_type": (_body_with(b"click\xff", "mousemove"), "events[0].event_type"),
    "bad byte in a top-level key": (_body_with(b"scr\xffeen_id", "screen_id"), "body"),
    "bad byte in an event's key": (_body_with(b"x_n\xfeorm", "x_norm"), "events[0]"),
    "continuation byte alone in batch_id": (
        b'{"client_id":"acme","screen_id":"s","batch_id":"\x80","events":[]}',
        "batch_id",
    ),
}


def _rejected_400(metrics_text: str) -> float:
    match = re.search(r'^heatmap_ingest_batches_total\{outcome="rejected",status="400"\} (\S+)$', metrics_text, re.M)
    return float(match[1]) if match else 0.0


@pytest.mark.parametrize("variant", INVALID_UTF8)
def test_invalid_utf8_is_a_400_naming_the_field(client, ingest_settings, variant):
    body, field = INVALID_UTF8[variant]
    before = _rejected_400(client.get("/metrics").text)
    response = client.post("/events/batch", content=body, headers={**ACME, "Content-Type": "application/json"})

    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["field"] == field and problem["status"] == 400
    assert problem["detail"].startswith(f"{field}: ")
    assert _rejected_400(client.get("/metrics").text) == before + 1
    assert read_topic(ingest_settings) == []


def test_empty_body_names_the_body(client, ingest_settings):
    response = client.post("/events/batch", content=b"", headers={**ACME, "Content-Type": "application/json"})

    assert response.status_code == 400
    assert response.json()["field"] == "body"
    assert read_topic(ingest_settings) == []


@pytest.mark.parametrize("padded", ["\tkey", "key ", " key\t"])
def test_write_key_whitespace_is_treated_alike_at_both_ends(client, ingest_settings, padded):
    """Whitespace around a header value is not part of it (RFC 9110 5.5): any padding is
    accepted alike, while the query parameter must match exactly."""
    key = ACME["X-Write-Key"]
    header = client.post("/events/batch", json=make_batch(), headers={"X-Write-Key": padded.replace("key", key)})
    query = client.post("/events/batch", params={"write_key": padded.replace("key", key)}, json=make_batch())

    assert header.status_code == 202, header.text
    assert query.status_code == 401
    assert len(read_topic(ingest_settings)) == 1


@pytest.mark.parametrize(
    "query", ["write_key=a&write_key={key}", "write_key={key}&write_key={key}", "write_key=&write_key={key}"]
)
def test_repeated_write_key_is_a_400_naming_it(client, ingest_settings, query):
    response = client.post(f"/events/batch?{query.format(key=ACME['X-Write-Key'])}", json=make_batch())

    assert (response.status_code, response.json()["field"]) == (400, "write_key")
    assert read_topic(ingest_settings) == []


def test_openapi_describes_what_is_enforced(client):
    schema = client.get("/schema/openapi.json").json()
    operation = schema["paths"]["/events/batch"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]

    assert schema["components"]["schemas"][body]["properties"]["events"]["minItems"] == 1
    schemes = schema["components"]["securitySchemes"]
    assert {(s["in"], s["name"]) for s in schemes.values()} == {("header", "X-Write-Key"), ("query", "write_key")}
    assert operation["security"] == [{name: []} for name in schemes]
    assert operation["responses"]["400"]["content"]["application/problem+json"]["schema"]["$ref"].endswith("/Problem")
