"""The Kafka side of ingestion: one aiokafka producer, every wait bounded.

The producer is started in the app lifespan but the app also starts (and
answers 503) when Kafka is down: a failed start is retried on the next
request, so a Kafka that comes back is used again without a restart.

Once a record is queued the answer is the producer's verdict, never a timer of the
handler's: a 503 after the record had been handed over could be followed by the producer
writing it, and a client that gives up after a 503 must be able to trust that its batch
is not stored. The producer gives a batch up once it is older than ``request_timeout_ms``,
so its verdict comes within ``verdict_wait_s``.

An outage is logged as two lines, whatever the request rate: ``kafka_unreachable``
(since when, the first error) at the first failed publish, and ``kafka_back`` (after
how long, how many publishes failed meanwhile) at the first acknowledged one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata

from heatmap_core.settings import Settings
from ingestion_api.observability import OutageLog, log_event

# Of the delivery timeout, the share a batch may live in the producer (aiokafka's request_timeout_ms).
BATCH_LIFETIME_SHARE = 0.8


def batch_lifetime_s(delivery_timeout_s: float) -> float:
    """How long a batch may live in the producer before it drops it (its ``request_timeout_ms``)."""
    return delivery_timeout_s * BATCH_LIFETIME_SHARE


def verdict_wait_s(delivery_timeout_s: float) -> float:
    """The longest the producer takes to decide a queued record: its batch expires after one request
    timeout, and the attempt in flight then ends within two more (connecting, then the request), plus a
    retry backoff."""
    return 3 * batch_lifetime_s(delivery_timeout_s) + 1.0


class KafkaUnavailable(Exception):
    """The producer gave the record up (it is not stored), or could not queue it within the delivery timeout."""


class KafkaPublisher:
    def __init__(self, settings: Settings):
        self._settings = settings
        self.timeout_s = settings.kafka_delivery_timeout_s
        self.verdict_wait_s = verdict_wait_s(self.timeout_s)
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self.outage = OutageLog("kafka", "publishes")

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self._settings.kafka_bootstrap,
            client_id="heatmap-ingestion",
            acks="all",
            # No idempotent producer: aiokafka never expires its batches, so a batch answered 503
            # would still land when Kafka returns and its retry would land again. A plain producer
            # drops a batch once it is older than request_timeout_ms.
            enable_idempotence=False,
            compression_type="lz4",
            # No linger: each request waits for its own ack, and a linger is paid by every batch (5 ms of
            # linger made an idle request 9 ms instead of 3). Under load the records that arrive while a
            # produce request is in flight still share the next one.
            linger_ms=0,
            max_batch_size=512 * 1024,
            # The lifetime of a batch: the producer drops it (a failed delivery, so a 503) once it is older.
            request_timeout_ms=int(batch_lifetime_s(self.timeout_s) * 1000),
            retry_backoff_ms=100,
            metadata_max_age_ms=60_000,
        )

    async def _ready(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = self._new_producer()
                try:
                    await producer.start()
                except BaseException:
                    await asyncio.shield(producer.stop())
                    raise
                self._producer = producer
            return self._producer

    async def start(self) -> None:
        """Connect now if Kafka is there; otherwise the first request tries again."""
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._ready()
        except (KafkaError, OSError, TimeoutError):
            pass

    async def _enqueue(self, topic: str, key: bytes, value: bytes) -> asyncio.Future:
        producer = await self._ready()
        return await producer.send(topic, value, key=key)

    async def publish(self, topic: str, key: bytes, value: bytes) -> RecordMetadata:
        """Send one record and wait for acks=all; KafkaUnavailable when the producer gave it up (not stored).

        The record is queued within the delivery timeout (a producer started, the topic's metadata
        known), then the producer's verdict is awaited, as long as it takes (``verdict_wait_s`` at most).
        """
        started = time.monotonic()
        try:
            delivery = await self._queued(self._enqueue(topic, key, value))
            done, _ = await asyncio.wait({delivery}, timeout=self.verdict_wait_s)
            if not done:
                # aiokafka broke its own bound: the record may still be written after this 503.
                log_event("kafka_verdict_late", logging.ERROR, always=True, waited_s=self.verdict_wait_s)
                raise TimeoutError(f"no verdict from the producer within {self.verdict_wait_s:g} s")
            delivered = delivery.result()
        except (KafkaError, OSError, TimeoutError) as exc:
            unavailable = KafkaUnavailable(f"Kafka did not acknowledge: {exc!r}")
            self.outage.failed(started, unavailable)
            raise unavailable from exc
        self.outage.succeeded()
        return delivered

    async def _queued(self, enqueue: Coroutine[None, None, asyncio.Future]) -> asyncio.Future:
        """The delivery future of a record queued within the delivery timeout; TimeoutError if it was not.

        Not ``asyncio.timeout``: its cancellation could land after ``send`` had queued the record, and
        that record would be written with nobody waiting for it.
        """
        queueing = asyncio.ensure_future(enqueue)
        await asyncio.wait({queueing}, timeout=self.timeout_s)
        if not queueing.done():
            queueing.cancel()
            # Ends at its next await, or has queued the record meanwhile: then its verdict is awaited.
            await asyncio.wait({queueing})
        if queueing.cancelled():
            raise TimeoutError(f"no producer could queue the record within {self.timeout_s:g} s")
        return queueing.result()

    async def ping(self) -> None:
        """Fetch cluster metadata from a broker; raises KafkaUnavailable when none answers."""
        try:
            async with asyncio.timeout(min(self.timeout_s, 2.0)):
                producer = await self._ready()
                await producer.client.fetch_all_metadata()
        except (KafkaError, OSError, TimeoutError) as exc:
            raise KafkaUnavailable(repr(exc)) from exc

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            # Flushes what is in flight; bounded because unsent batches expire with the request timeout.
            async with asyncio.timeout(self.timeout_s + 1):
                await producer.stop()
