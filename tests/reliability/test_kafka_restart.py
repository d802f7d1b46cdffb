"""Kafka stopped and restarted under load: every 202 is served exactly once, a 503 only if unwritten.

Guarantee: a batch answered 202 is in the served hourly maps exactly once; a batch answered
only 503 (never 202) is neither in the topic nor in the maps, unless it reached the broker
before Kafka stopped and its ack was lost with the broker (what no producer can rule out:
the broker wrote it, then went away before answering), and then it is served once; a batch
answered 503 and then 202 on its client's retry with the same batch_id counts once. No
answer is a 500: while Kafka is down every refusal is a 503 with Retry-After.

How it is measured: a single-node Kafka of the test's own (``private_kafka``; the shared one
is never stopped) and the ingestion API under uvicorn against it. Four senders post batches
of five events; two retry a 503'd batch with the same batch_id until it is answered 202, two
give a batch up at its first 503 and send a new one (so "503 never acknowledged" is measured
on batches no client ever re-sent). Kafka is stopped (supervisord's SIGTERM) for DOWN_S under
that load, started again, and the load goes on until batches are acknowledged again. Then
the topic is read (a never-acknowledged batch_id in it must have been received before Kafka
stopped: its ``received_at``), landed by a landing
process into the test's bucket, the hours built by the heatmap_hourly asset (Spark) into the
test's ClickHouse database, and every acknowledged event tallied against GET /heatmap/hourly
(tests/reliability/served.py). Every batch of the load covers the same cells, so a served
unacknowledged batch would also show as a surplus there.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime

import pytest

from infra import supervisor
from infra.programs import PROGRAMS
from tests.conftest import serve_app
from tests.ingestion.conftest import read_topic

from .figures import Figures, record
from .load import EVENTS_PER_BATCH, SENDERS, under_load
from .served import tally_served

pytestmark = pytest.mark.reliability

GIVING_UP = 2
BEFORE_S = 5.0
# The outage also lasts while the broker starts again (about 15 s here).
DOWN_S = 8.0
AFTER_S = 5.0
BACK_WITHIN_S = 60.0


def test_kafka_stopped_and_restarted_under_load(private_kafka, settings, spark, tmp_path):
    # The test's bucket and ClickHouse database (``settings``) fed from the private broker's topic.
    pipeline = settings.model_copy(
        update={
            "kafka_bootstrap": private_kafka.kafka_bootstrap,
            "topic": private_kafka.topic,
            "topic_partitions": private_kafka.topic_partitions,
            "kafka_delivery_timeout_s": private_kafka.kafka_delivery_timeout_s,
            "auth_enabled": False,
        }
    )
    started = time.monotonic()
    with (
        serve_app("ingestion_api.app:app", pipeline, log_path=tmp_path / "ingestion.log") as url,
        under_load(url, giving_up=GIVING_UP) as load,
    ):
        time.sleep(BEFORE_S)
        accepted_before = len(load.accepted)
        supervisor.stop_program(private_kafka, "kafka")
        stopped, stopped_at = time.monotonic(), datetime.now(UTC)
        time.sleep(DOWN_S)
        supervisor.start(private_kafka, PROGRAMS, ["kafka"], do_fetch=False)
        down_s = time.monotonic() - stopped
        accepted_at_restart = len(load.accepted)
        deadline = time.monotonic() + BACK_WITHIN_S
        while len(load.accepted) == accepted_at_restart:
            assert time.monotonic() < deadline, f"nothing acknowledged within {BACK_WITHIN_S:.0f} s of the restart"
            time.sleep(0.5)
        time.sleep(AFTER_S)
    load_s = time.monotonic() - started

    accepted = list(load.accepted.values())
    retried = load.refused.keys() & load.accepted.keys()
    never_acknowledged = load.never_acknowledged
    topic = read_topic(pipeline)
    published = Counter(record.batch_id for _, record in topic)
    # Written, then its ack lost as the broker went away: in the topic, so landed and served once.
    acks_lost = {record.batch_id: record.received_at for _, record in topic if record.batch_id in never_acknowledged}
    tally = tally_served(pipeline, accepted + [load.refused[batch_id] for batch_id in acks_lost], tmp_path)
    http_5xx = sum(n for answer, n in load.answers.items() if answer.startswith("5"))
    sent = len(load.accepted) + len(never_acknowledged)
    record(
        Figures.from_tally(
            tally,
            scenario="Kafka stopped and restarted under load",
            load=f"{SENDERS} senders ({GIVING_UP} give a batch up at its first 503), {sent} batches of "
            f"{EVENTS_PER_BATCH} events in {load_s:.0f} s",
            faults=f"Kafka stopped {down_s:.0f} s under load, then started again",
            http_5xx=http_5xx,
            test="tests/reliability/test_kafka_restart.py::test_kafka_stopped_and_restarted_under_load",
            notes=f"answers {dict(load.answers)}; {len(retried)} batches answered 503 then 202 on a retry "
            f"with the same batch_id, each served once; {len(never_acknowledged)} batches answered only 503, "
            f"{len(acks_lost)} of them in the topic (received before Kafka stopped, ack lost), served once; "
            f"{sum(published.values())} topic records for {len(accepted)} acknowledged batches",
        )
    )

    # The outage was felt under load, and load was acknowledged again after it.
    assert accepted_before > 0 and len(load.accepted) > accepted_at_restart
    assert retried and never_acknowledged, "the outage produced no retried or given-up batch: nothing measured"
    # Every 5xx was a 503 (a sender fails the test on any other answer, or a 503 without Retry-After).
    assert http_5xx == load.answers["503"] > 0
    # Answered only 503: in the topic only if the broker had it before it stopped, never one that
    # reached ingestion during the outage (the producer gave it up before the 503 was answered).
    assert not {batch_id: at for batch_id, at in acks_lost.items() if at >= stopped_at}
    assert not [batch["batch_id"] for batch in accepted if not published[batch["batch_id"]]]
    # Every acknowledged event (and every written one) served exactly once, retried batches included.
    assert (tally.lost, tally.duplicated) == (0, 0)
    assert tally.served == tally.acknowledged == (len(accepted) + len(acks_lost)) * EVENTS_PER_BATCH
