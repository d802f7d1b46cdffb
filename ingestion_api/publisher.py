"""The Kafka side of ingestion: one aiokafka producer, every wait bounded.

The producer is started in the app lifespan but the app also starts (and
answers 503) when Kafka is down: a failed start is retried on the next
request, so a Kafka that comes back is used again without a restart.

An outage is logged as two lines, whatever the request rate: ``kafka_unreachable``
(since when, the first error) at the first failed publish, and ``kafka_back`` (after
how long, how many publishes failed meanwhile) at the first acknowledged one.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata

from heatmap_core.settings import Settings
from ingestion_api.observability import OutageLog


class KafkaUnavailable(Exception):
    """Kafka did not acknowledge within the delivery timeout (or refused the record)."""


class KafkaPublisher:
    def __init__(self, settings: Settings):
        self._settings = settings
        self.timeout_s = settings.kafka_delivery_timeout_s
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
            # Shorter than the handler's wait: the producer gives a batch up (and drops it) before the
            # handler answers 503, so a 503 means "not stored".
            request_timeout_ms=int(self.timeout_s * 1000 * 0.8),
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

    async def publish(self, topic: str, key: bytes, value: bytes) -> RecordMetadata:
        """Send one record and wait for acks=all; KafkaUnavailable after the delivery timeout."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):
                producer = await self._ready()
                delivery = await producer.send(topic, value, key=key)
                delivered = await delivery
        except (KafkaError, OSError, TimeoutError) as exc:
            unavailable = KafkaUnavailable(f"Kafka did not acknowledge within {self.timeout_s:g} s: {exc!r}")
            self.outage.failed(started, unavailable)
            raise unavailable from exc
        self.outage.succeeded()
        return delivered

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
