"""Redis restarted while four senders post: every batch answered 202 keeps its dedup key.

Runs its own Redis (append-only file on, as the stack's) on a free port, and the
ingestion API under uvicorn against it and the shared Kafka (the test's own topic).
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis

from infra import supervisor
from infra.programs import PROGRAMS
from ingestion_api.ledger import BatchLedger
from tests.conftest import serve_app
from tests.ingestion.conftest import read_topic

from .load import under_load

pytestmark = pytest.mark.reliability

BEFORE_S = 8.0
# Longer than the ledger's 6 s wait, so some claims and commits give up and are answered 503.
DOWN_S = 8.0
# A claim applied just before the stop but never answered holds its batch (409) until its pending
# key expires, about 20 s after the stop; the load then has to go on.
AFTER_S = 25.0


def _resend(url: str, batches: list[dict]) -> list[dict]:
    with httpx.Client(base_url=url, timeout=30.0) as http, ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda batch: http.post("/events/batch", json=batch), batches))
    assert {answer.status_code for answer in answers} == {202}
    return [answer.json() for answer in answers]


def test_batches_answered_202_keep_their_key_across_a_redis_restart(private_redis, tmp_path):
    log_path = tmp_path / "ingestion.log"
    with serve_app("ingestion_api.app:app", private_redis, log_path=log_path) as url:
        with under_load(url) as load:
            time.sleep(BEFORE_S)
            accepted_before = len(load.accepted)
            supervisor.stop_program(private_redis, "redis")
            time.sleep(DOWN_S)
            supervisor.start(private_redis, PROGRAMS, ["redis"], do_fetch=False)
            accepted_at_restart = len(load.accepted)
            time.sleep(AFTER_S)
        accepted = list(load.accepted.values())
        published = Counter(record.batch_id for _, record in read_topic(private_redis))

        keys = redis.Redis.from_url(private_redis.redis_url)
        states = Counter(keys.get(BatchLedger.key("acme", batch["batch_id"])) for batch in accepted)
        resent = _resend(url, accepted)
        published_after_resend = Counter(record.batch_id for _, record in read_topic(private_redis))

    log = log_path.read_text()
    print(
        f"\nanswers {dict(load.answers)}; accepted {len(accepted)} (before the stop {accepted_before}, "
        f"after the restart {len(accepted) - accepted_at_restart}); keys {dict(states)}; "
        f"batch_ids published twice {sum(1 for n in published.values() if n > 1)}; "
        f"ledger_commit_failed lines {log.count('ledger_commit_failed')}"
    )
    # The restart was felt under load, and load went on after it.
    assert accepted_before > 0 and load.answers["503"] > 0 and len(accepted) > accepted_at_restart
    # Every 202 has its key, "done".
    assert states == {b"done": len(accepted)}
    # Each acknowledged batch is in the topic; re-sending all of them is answered as duplicates and adds nothing.
    assert not [batch["batch_id"] for batch in accepted if published[batch["batch_id"]] == 0]
    assert [answer["duplicate"] for answer in resent] == [True] * len(accepted)
    assert published_after_resend == published
