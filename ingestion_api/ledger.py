"""Batch idempotency in Redis: a batch_id is published at most once per client within a TTL.

A claim is a ``SET NX`` of "pending" with a short TTL; after Kafka's ack it
becomes "done" with the long TTL; a failed publish deletes it so the client's
retry can go through. A retry that arrives while the first attempt is still
waiting on Kafka sees "pending" and is told to come back (409), because
acknowledging it then could acknowledge a batch that ends up not published.
"""

from __future__ import annotations

import enum

import redis.asyncio as redis
from redis.exceptions import RedisError

from heatmap_core.settings import Settings

DONE_TTL_S = 24 * 3600
_PENDING = b"pending"
_DONE = b"done"


class Claim(enum.Enum):
    NEW = "new"
    DONE = "done"
    PENDING = "pending"


class LedgerUnavailable(Exception):
    """Redis did not answer; without it a retry could be published twice."""


class BatchLedger:
    def __init__(self, settings: Settings):
        # Pending outlives the longest publish attempt, so a crashed instance cannot block a batch for long.
        self._pending_ttl_s = int(settings.kafka_delivery_timeout_s) + 30
        self._redis = redis.Redis.from_url(
            settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0, health_check_interval=30
        )

    @staticmethod
    def _key(client_id: str, batch_id: str) -> str:
        return f"heatmap:ingest:batch:{client_id}:{batch_id}"

    async def claim(self, client_id: str, batch_id: str) -> Claim:
        key = self._key(client_id, batch_id)
        try:
            if await self._redis.set(key, _PENDING, nx=True, ex=self._pending_ttl_s):
                return Claim.NEW
            # A key that expired between SET and GET reads as None: treat it as in flight, the retry resolves it.
            return Claim.DONE if await self._redis.get(key) == _DONE else Claim.PENDING
        except RedisError as exc:
            raise LedgerUnavailable(repr(exc)) from exc

    async def commit(self, client_id: str, batch_id: str) -> None:
        try:
            await self._redis.set(self._key(client_id, batch_id), _DONE, ex=DONE_TTL_S)
        except RedisError as exc:
            # Kafka already has the batch: the ack stands; only a retry's dedup is lost.
            raise LedgerUnavailable(repr(exc)) from exc

    async def release(self, client_id: str, batch_id: str) -> None:
        try:
            await self._redis.delete(self._key(client_id, batch_id))
        except RedisError:
            # The pending key then expires on its own after its short TTL.
            pass

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except RedisError as exc:
            raise LedgerUnavailable(repr(exc)) from exc

    async def close(self) -> None:
        await self._redis.aclose()
