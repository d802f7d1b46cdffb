"""Redis stopped: once the outage is known each request is answered at once; Redis back: the ledger is used again.

Runs its own Redis (``private_redis``; the shared one is never stopped) and the app against the
shared Kafka (the test's own topic). Requests are sent one after another while Redis is down:
the first waits out the ledger's LEDGER_WAIT_S (a restart shorter than that is ridden out), every
later one is answered as the mode says (``accept``: 202 without the ledger; ``refuse``: 503 with
Retry-After) without that wait. The bound below is a third of the wait it replaces: a behaviour,
not a benchmark. Once Redis is back the ledger is used again, and the outage's batches, sent once
more, are taken as new (no claim given up on during the outage was applied after it).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
from litestar.testing import TestClient

from infra import supervisor
from infra.programs import PROGRAMS
from ingestion_api.app import create_app
from ingestion_api.ledger import LEDGER_WAIT_S, BatchLedger

from .conftest import make_batch, read_topic

REQUESTS_WHILE_DOWN = 5
# A request while the outage is known waits no ledger: far less than the LEDGER_WAIT_S it used to.
KNOWN_OUTAGE_ANSWER_S = LEDGER_WAIT_S / 3
# The probe pings every PROBE_INTERVAL_S; Redis's own start is waited for by supervisor.start.
BACK_WITHIN_S = 10.0


@pytest.mark.parametrize(("mode", "answered_while_down"), [("accept", 202), ("refuse", 503)])
def test_a_known_redis_outage_is_answered_at_once_and_the_ledger_is_used_again_after_it(
    private_redis, mode, answered_while_down, caplog
):
    caplog.set_level(logging.INFO, logger="ingestion_api")
    settings = private_redis.model_copy(update={"ingestion_without_redis": mode})
    while_down = [make_batch() for _ in range(REQUESTS_WHILE_DOWN)]
    after = make_batch()
    with TestClient(create_app(settings)) as client, ThreadPoolExecutor(1) as pool:

        def post(batch: dict) -> tuple[httpx.Response, float]:
            started = time.monotonic()
            # A hang would be the bug under test: a failure, not pytest-timeout's wait.
            answer = pool.submit(client.post, "/events/batch", json=batch).result(timeout=60)
            return answer, time.monotonic() - started

        supervisor.stop_program(private_redis, "redis")
        answers = [post(batch) for batch in while_down]
        health_started = time.monotonic()
        health = client.get("/health")
        health_s = time.monotonic() - health_started

        supervisor.start(private_redis, PROGRAMS, ["redis"], do_fetch=False)
        deadline = time.monotonic() + BACK_WITHIN_S
        while (back := client.get("/health")).json()["redis"] != "ok":
            assert time.monotonic() < deadline, (
                f"the ledger not used again {BACK_WITHIN_S:g} s after Redis: {back.json()}"
            )
            time.sleep(0.2)
        first, again = post(after)[0], post(after)[0]
        # The clients of the batches sent during the outage send them again (a refused one has to).
        resent = [post(batch)[0] for batch in while_down]

    print(
        f"\n{mode}: answers while down {[(a.status_code, round(s, 2)) for a, s in answers]}, /health {health_s:.2f} s"
    )
    statuses = [answer.status_code for answer, _ in answers]
    assert statuses == [answered_while_down] * REQUESTS_WHILE_DOWN
    if mode == "refuse":
        assert [answer.headers["Retry-After"] for answer, _ in answers] == ["5"] * REQUESTS_WHILE_DOWN
    else:
        assert [answer.json()["duplicate"] for answer, _ in answers] == [False] * REQUESTS_WHILE_DOWN
    # The first waited for the ledger (and so made the outage known); none after it did, nor /health.
    assert answers[0][1] >= LEDGER_WAIT_S
    assert [round(s, 2) for _, s in answers[1:] if s >= KNOWN_OUTAGE_ANSWER_S] == []
    assert health.json()["redis"] != "ok" and health_s < KNOWN_OUTAGE_ANSWER_S
    # Redis back: the batch recorded, its re-send answered as a duplicate and not published again.
    assert (first.status_code, first.json()["duplicate"]) == (202, False)
    assert (again.status_code, again.json()["duplicate"]) == (202, True)
    assert redis.Redis.from_url(private_redis.redis_url).get(BatchLedger.key("acme", after["batch_id"])) == b"done"
    # Nothing recorded them during the outage, and no claim given up on then was applied once Redis was back
    # (it would hold its batch, 409, for a whole pending TTL): each re-send is taken as new.
    assert [(answer.status_code, answer.json().get("duplicate")) for answer in resent] == [(202, False)] * len(
        while_down
    )
    published = [record.batch_id for _, record in read_topic(private_redis)]
    times_published = 2 if mode == "accept" else 1
    assert sorted(published) == sorted(
        [batch["batch_id"] for batch in while_down] * times_published + [after["batch_id"]]
    )
    # One outage, logged once.
    outage_lines = [r.msg for r in caplog.records if r.msg in ("redis_unreachable", "redis_back")]
    assert outage_lines == ["redis_unreachable", "redis_back"]
