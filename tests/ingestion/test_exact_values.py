"""Metrics compared with exact values: the Prometheus text parsed sample by sample."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.ingestion.conftest import ACME, WRITE_KEYS, make_batch


def samples(text: str, *names: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} of the named samples in a Prometheus exposition."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in names
    }


def test_metrics_count_each_outcome_exactly(client):
    client.post("/events/batch", json=make_batch(events=4), headers=ACME)
    out_of_range = make_batch(events=1)
    out_of_range["events"][0]["x_norm"] = 7
    for _ in range(11):  # eleven refusals: a substring match on "} 1" would also take 11 for 1
        client.post("/events/batch", json=out_of_range, headers=ACME)
    client.post("/events/batch", json=make_batch(events=2), headers={"X-Write-Key": WRITE_KEYS["globex"]})
    client.post("/events/batch", json=make_batch())

    found = samples(client.get("/metrics").text, "heatmap_ingest_batches_total", "heatmap_ingest_events_total")
    assert found == {
        ("heatmap_ingest_batches_total", frozenset({("outcome", "accepted"), ("status", "202")})): 1,
        ("heatmap_ingest_batches_total", frozenset({("outcome", "rejected"), ("status", "400")})): 11,
        ("heatmap_ingest_batches_total", frozenset({("outcome", "rejected"), ("status", "401")})): 1,
        ("heatmap_ingest_batches_total", frozenset({("outcome", "rejected"), ("status", "403")})): 1,
        ("heatmap_ingest_events_total", frozenset({("outcome", "accepted")})): 4,
        # The 403 batch was decoded (2 events); the 400 ones failed decoding and count as batches only.
        ("heatmap_ingest_events_total", frozenset({("outcome", "rejected")})): 2,
        ("heatmap_ingest_events_total", frozenset({("outcome", "duplicate")})): 0,
    }
