"""Redis down under load, both ways round (HEATMAP_INGESTION_WITHOUT_REDIS): every 202 served exactly once.

Guarantee, ``refuse`` (the default): while Redis, the batch_id ledger, is down a batch is
answered 503 with Retry-After and not published; /health is 503. Every batch answered 202 is
served exactly once, and a batch answered 503 then 202 on its client's retry counts once.

Guarantee, ``accept``: while Redis is down batches are still answered 202 (no 5xx), published
without the ledger; /health is 200 "degraded" and /metrics counts them. A batch re-sent during
the outage is published again (the topic holds it twice: the test asserts so), and the served
maps still count it once, because the hourly job deduplicates by event key.

Either way the outage is logged once (``redis_unreachable``, ``redis_back``).

How it is measured: a Redis of the test's own (``private_redis``) and the ingestion API under
uvicorn against it and the shared Kafka (the test's own topic). Four senders post batches of
five events, retrying a 503'd batch with the same batch_id. Redis is stopped under that load;
while it is down the test posts PROBES fresh batches and then each of them again with its
batch_id (a client whose answer was lost), and reads /health. Redis is started again and the
load goes on until every batch answered 503 has been retried to a 202 (a claim applied just
before the stop holds its batch, 409, until its pending key expires). Refused probes are
all sent once more when Redis is back (refused ones have to be). Then the topic is landed, the hours
built by the heatmap_hourly asset (Spark) and every acknowledged event tallied against GET
/heatmap/hourly (tests/reliability/served.py).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from heatmap_core.settings import Settings
from infra import supervisor
from infra.programs import PROGRAMS
from tests.conftest import serve_app
from tests.ingestion.conftest import make_batch, read_topic

from .figures import Figures, Tally, record
from .load import EVENTS_PER_BATCH, SENDERS, Load, under_load
from .served import tally_served

pytestmark = pytest.mark.reliability

BEFORE_S = 5.0
PROBES = 3
AFTER_S = 5.0
# A claim applied just before the stop holds its batch until its pending key expires: about 20 s after the stop.
SETTLED_WITHIN_S = 60.0


@dataclass
class Outage:
    """What one Redis outage under load looked like from the outside."""

    load: Load
    down_s: float
    load_s: float
    # While Redis was down: each probe's first answer and the answer to its re-send, and /health.
    probes: list[dict]
    probe_answers: list[tuple[httpx.Response, httpx.Response]]
    health: httpx.Response
    without_dedup: float  # heatmap_ingest_batches_without_dedup_total at the end
    published: Counter[str]  # topic records per batch_id
    log: list[dict]

    def acknowledged(self) -> list[dict]:
        return list(self.load.accepted.values()) + self.probes

    def events(self, name: str) -> list[dict]:
        return [line for line in self.log if line.get("event") == name]


def _post_all(http: httpx.Client, batches: list[dict]) -> list[httpx.Response]:
    # Concurrently: in the outage's first 6 s each waits out the ledger; after that none waits.
    with ThreadPoolExecutor(len(batches)) as pool:
        return list(pool.map(lambda batch: http.post("/events/batch", json=batch), batches))


def _without_dedup(http: httpx.Client) -> float:
    families = text_string_to_metric_families(http.get("/metrics").text)
    return next(f for f in families if f.name == "heatmap_ingest_batches_without_dedup").samples[0].value


def _redis_outage_under_load(private_redis: Settings, mode: str, log_path: Path) -> Outage:
    app_settings = private_redis.model_copy(update={"ingestion_without_redis": mode})
    probes = [make_batch(events=EVENTS_PER_BATCH) for _ in range(PROBES)]
    started = time.monotonic()
    with (
        serve_app("ingestion_api.app:app", app_settings, log_path=log_path) as url,
        httpx.Client(base_url=url, timeout=30.0) as http,
    ):
        with under_load(url) as load:
            time.sleep(BEFORE_S)
            supervisor.stop_program(private_redis, "redis")
            stopped = time.monotonic()
            probe_answers = list(zip(_post_all(http, probes), _post_all(http, probes), strict=True))
            health = http.get("/health")
            supervisor.start(private_redis, PROGRAMS, ["redis"], do_fetch=False)
            down_s = time.monotonic() - stopped
            deadline = time.monotonic() + SETTLED_WITHIN_S
            while load.never_acknowledged:
                assert time.monotonic() < deadline, f"{load.never_acknowledged} not acknowledged after the restart"
                time.sleep(0.5)
            time.sleep(AFTER_S)
        # Redis back: the probes' clients send them once more (a refused one has to; no key was recorded either way).
        assert [answer.status_code for answer in _post_all(http, probes)] == [202] * PROBES
        without_dedup = _without_dedup(http)
        load_s = time.monotonic() - started
    return Outage(
        load=load,
        down_s=down_s,
        load_s=load_s,
        probes=probes,
        probe_answers=probe_answers,
        health=health,
        without_dedup=without_dedup,
        published=Counter(record.batch_id for _, record in read_topic(private_redis)),
        log=[json.loads(line) for line in log_path.read_text().splitlines()],
    )


def _record(outage: Outage, tally: Tally, scenario: str, test: str, notes: str) -> None:
    load = outage.load
    record(
        Figures.from_tally(
            tally,
            scenario=scenario,
            load=f"{SENDERS} senders, {len(load.accepted)} batches of {EVENTS_PER_BATCH} events in "
            f"{outage.load_s:.0f} s, and {PROBES} probe batches each sent twice during the outage",
            faults=f"Redis stopped {outage.down_s:.0f} s under load, then started again",
            http_5xx=sum(n for answer, n in load.answers.items() if answer.startswith("5"))
            + sum(answer.status_code >= 500 for pair in outage.probe_answers for answer in pair),
            test=f"tests/reliability/test_redis_down.py::{test}",
            notes=f"answers {dict(load.answers)}; {notes}",
        )
    )


def _assert_outage_logged_once(outage: Outage, mode: str) -> None:
    unreachable, back = outage.events("redis_unreachable"), outage.events("redis_back")
    assert [line["without_redis"] for line in unreachable] == [mode] and len(back) == 1
    assert back[0]["since"] == unreachable[0]["since"]


def test_redis_down_refuse_answers_503_and_serves_every_202_once(private_redis, spark, tmp_path):
    outage = _redis_outage_under_load(private_redis, "refuse", tmp_path / "ingestion.log")
    load, published = outage.load, outage.published
    acknowledged = outage.acknowledged()
    retried = load.refused.keys() & load.accepted.keys()
    tally = tally_served(private_redis, acknowledged, tmp_path)
    commit_failed = outage.events("ledger_commit_failed")
    _record(
        outage,
        tally,
        "Redis down: refuse (503)",
        "test_redis_down_refuse_answers_503_and_serves_every_202_once",
        f"{len(retried)} load batches and {PROBES} probes answered 503 then 202 on a retry with the same "
        f"batch_id, each served once; {len(commit_failed)} answered 503 after Kafka's ack (ledger commit "
        f"failed), their retries published again and counted once",
    )

    # While down: 503 with Retry-After for a new batch and for its re-send, and /health 503.
    while_down = [(a.status_code, a.headers.get("Retry-After")) for pair in outage.probe_answers for a in pair]
    assert while_down == [(503, "5")] * (2 * PROBES)
    assert outage.health.status_code == 503 and outage.health.json()["status"] == "degraded"
    # Every 5xx a 503 (a sender fails the test on any other answer); none accepted without its key.
    assert load.answers["503"] > 0 and outage.without_dedup == 0
    _assert_outage_logged_once(outage, "refuse")
    # Every acknowledged batch in the topic; the probes once (their 503s published nothing).
    assert not [batch["batch_id"] for batch in acknowledged if not published[batch["batch_id"]]]
    assert [published[probe["batch_id"]] for probe in outage.probes] == [1] * PROBES
    # Every acknowledged event served exactly once.
    assert (tally.lost, tally.duplicated) == (0, 0)
    assert tally.served == tally.acknowledged == len(acknowledged) * EVENTS_PER_BATCH


def test_redis_down_accept_publishes_without_dedup_and_serves_every_202_once(private_redis, spark, tmp_path):
    outage = _redis_outage_under_load(private_redis, "accept", tmp_path / "ingestion.log")
    load, published = outage.load, outage.published
    acknowledged = outage.acknowledged()
    tally = tally_served(private_redis, acknowledged, tmp_path)
    repeated = {batch_id: n for batch_id, n in published.items() if n > 1}
    _record(
        outage,
        tally,
        "Redis down: accept without dedup",
        "test_redis_down_accept_publishes_without_dedup_and_serves_every_202_once",
        f"{outage.without_dedup:.0f} batches answered 202 without the ledger; {len(repeated)} batch_ids "
        f"published more than once ({sum(repeated.values())} records), served once by the hourly job's "
        f"event-key dedup",
    )

    # While down: a new batch and its re-send both 202 and neither a duplicate; /health 200 "degraded".
    while_down = [(a.status_code, a.json()["duplicate"]) for pair in outage.probe_answers for a in pair]
    assert while_down == [(202, False)] * (2 * PROBES)
    assert outage.health.status_code == 200 and outage.health.json()["status"] == "degraded"
    # No 5xx at all, and the batches taken without the ledger are counted.
    assert not load.refused and not [a for a in load.answers if a.startswith("5")]
    assert outage.without_dedup >= 2 * PROBES
    _assert_outage_logged_once(outage, "accept")
    # The topic really holds the duplicates: each probe twice during the outage, and its re-send after it
    # once more (no key was recorded for it).
    assert not [batch["batch_id"] for batch in acknowledged if not published[batch["batch_id"]]]
    assert [published[probe["batch_id"]] for probe in outage.probes] == [3] * PROBES
    # ... and the served maps count every acknowledged event exactly once.
    assert (tally.lost, tally.duplicated) == (0, 0)
    assert tally.served == tally.acknowledged == len(acknowledged) * EVENTS_PER_BATCH
