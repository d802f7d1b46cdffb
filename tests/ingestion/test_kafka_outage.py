"""Kafka stopped: 503 with Retry-After and nothing acknowledged; Kafka back: accepted again.

Runs its own single-node Kafka (the shared one is never stopped).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from litestar.testing import TestClient

from infra import supervisor
from infra.programs import PROGRAMS
from ingestion_api.app import create_app

from .conftest import make_batch, read_topic


def test_kafka_down_gives_503_then_accepts_again(private_kafka):
    first, during, retried = make_batch(), make_batch(), make_batch()
    with TestClient(create_app(private_kafka)) as client, ThreadPoolExecutor(1) as pool:

        def post(batch: dict):
            # A hang would be the bug under test: turn it into a failure instead of waiting for pytest-timeout.
            return pool.submit(client.post, "/events/batch", json=batch).result(timeout=60)

        assert post(first).status_code == 202

        supervisor.stop_program(private_kafka, "kafka")
        down = [post(during), post(retried)]
        health = client.get("/health")

        supervisor.start(private_kafka, PROGRAMS, ["kafka"])
        # The producer reconnects on its own; the client keeps retrying the same batch_id as the demo does.
        answers = [post(retried).status_code for _ in range(10)]

    assert [r.status_code for r in down] == [503, 503]
    assert [r.headers["Retry-After"] for r in down] == ["5", "5"]  # as docs/ARCHITECTURE.md documents
    assert health.status_code == 503 and health.json()["kafka"] != "ok" and health.json()["redis"] == "ok"
    assert 202 in answers and set(answers[: answers.index(202)]) <= {503}
    # Exactly the acknowledged batches, once each: the refused attempt did not land later.
    assert sorted(r.batch_id for _, r in read_topic(private_kafka)) == sorted([first["batch_id"], retried["batch_id"]])
