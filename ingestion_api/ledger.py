"""Batch idempotency in Redis: a batch_id is published at most once per client within a TTL.

A claim is one atomic ``SET NX GET`` (Redis 7.0 or later) of "pending:<token>" with a short TTL; after
Kafka's ack it becomes "done" with the long TTL; a failed publish deletes it so
the client's retry can go through. A retry that arrives while the first attempt
is still waiting on Kafka sees "pending" and is told to come back (409), because
acknowledging it then could acknowledge a batch that ends up not published.

Across a Redis restart the invariant the API keeps is: a batch answered 202 has
its "done" key. Every command is retried on a connection error (a connection from
before the restart fails once, is dropped and re-opened; a restart of a few
seconds is ridden out), within ``LEDGER_WAIT_S`` per operation. The claim carries
a token of its own so that a retried ``SET NX`` whose first reply was lost
recognises its own claim instead of reporting it as someone else's. A commit that
still fails raises, and the caller answers 503 (never a 202 without its key), unless
the operator chose to accept batches without the ledger
(``Settings.ingestion_without_redis``). An outage is logged once, whatever the
request rate: ``redis_unreachable`` and ``redis_back`` (``OutageLog``).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
import uuid

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from heatmap_core.settings import Settings
from ingestion_api.observability import OutageLog

DONE_TTL_S = 24 * 3600
# Longest wait for one ledger operation, retries included: a Redis restart usually takes a few seconds.
LEDGER_WAIT_S = 6.0
# Backoff 100 ms doubling to 1 s, 10 retries (about 7.5 s of waiting): LEDGER_WAIT_S ends it first.
_RETRY = Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=10)
_PENDING = b"pending:"
_DONE = b"done"


class Claim(enum.Enum):
    NEW = "new"
    DONE = "done"
    PENDING = "pending"


class LedgerUnavailable(Exception):
    """Redis did not answer within LEDGER_WAIT_S; without it a retry could be published twice."""


class _Coalesced:
    """Ledger commands issued in one event-loop tick go to Redis together, as one pipeline.

    Concurrent requests reach the ledger at the same moments (one read of the sockets brings
    several requests; one Kafka produce response acknowledges several batches), and written
    alone, the socket write was two thirds of each command's CPU in the server (py-spy,
    BENCHMARKS.md, issue 14). Each command keeps its own reply or error. A
    pipeline is retried whole on a connection error, which every ledger command tolerates: a
    re-sent claim recognises its own token, a commit or a release repeated changes nothing.
    A caller that stopped waiting (its ``LEDGER_WAIT_S`` ran out) is skipped when the replies come.
    """

    def __init__(self, client: redis.Redis):
        self._client = client
        self._queued: list[tuple[str, tuple, dict, asyncio.Future]] = []
        self._in_flight: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks

    def __call__(self, command: str, *args: object, **options: object) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        if not self._queued:
            loop.call_soon(self._send)
        reply = loop.create_future()
        self._queued.append((command, args, options, reply))
        return reply

    def _send(self) -> None:
        queued, self._queued = self._queued, []
        task = asyncio.get_running_loop().create_task(self._execute(queued))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _execute(self, queued: list[tuple[str, tuple, dict, asyncio.Future]]) -> None:
        replies: list[object]
        try:
            if len(queued) == 1:
                command, args, options, _ = queued[0]
                replies = [await getattr(self._client, command)(*args, **options)]
            else:
                pipeline = self._client.pipeline(transaction=False)
                for command, args, options, _ in queued:
                    getattr(pipeline, command)(*args, **options)
                replies = await pipeline.execute(raise_on_error=False)
        except asyncio.CancelledError:
            for *_, reply in queued:
                reply.cancel()
            raise
        except Exception as exc:  # noqa: BLE001  (handed to each waiting caller, which decides)
            replies = [exc] * len(queued)
        for (*_, reply), answer in zip(queued, replies, strict=True):
            if reply.done():
                continue
            if isinstance(answer, Exception):
                reply.set_exception(answer)
            else:
                reply.set_result(answer)


class BatchLedger:
    def __init__(self, settings: Settings):
        # The owner of a pending key has answered within its claim wait, the publish timeout and its commit
        # wait; a 202 would have left "done". So once the key expires a retry may publish (the owner got
        # a 503 or died), and a claim whose reply was lost in a Redis restart blocks its batch only this long.
        self._pending_ttl_s = int(settings.kafka_delivery_timeout_s + 2 * LEDGER_WAIT_S) + 5
        self._redis = redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=2.0,
            socket_connect_timeout=1.0,
            retry=_RETRY,
            # A pooled connection idle this long is pinged (and re-opened if dead) before it is used.
            health_check_interval=5,
        )
        self._send = _Coalesced(self._redis)
        self.outage = OutageLog("redis", "calls", without_redis=settings.ingestion_without_redis)

    @staticmethod
    def key(client_id: str, batch_id: str) -> str:
        return f"heatmap:ingest:batch:{client_id}:{batch_id}"

    async def _call(self, command, wait_s: float = LEDGER_WAIT_S):
        started = time.monotonic()
        try:
            async with asyncio.timeout(wait_s):
                answer = await command
        except (RedisError, TimeoutError) as exc:
            unavailable = LedgerUnavailable(repr(exc))
            self.outage.failed(started, unavailable)
            raise unavailable from exc
        self.outage.succeeded()
        return answer

    async def claim(self, client_id: str, batch_id: str) -> Claim:
        token = _PENDING + uuid.uuid4().hex.encode()
        before = await self._call(
            self._send("set", self.key(client_id, batch_id), token, nx=True, get=True, ex=self._pending_ttl_s)
        )
        # None: the key was free and is ours now; our own token: a retried SET whose first reply was lost.
        if before is None or before == token:
            return Claim.NEW
        return Claim.DONE if before == _DONE else Claim.PENDING

    async def commit(self, client_id: str, batch_id: str) -> None:
        """Record the batch as published; LedgerUnavailable means its retry would not be seen as a duplicate."""
        await self._call(self._send("set", self.key(client_id, batch_id), _DONE, ex=DONE_TTL_S))

    async def release(self, client_id: str, batch_id: str) -> None:
        # On failure the pending key expires on its own after its short TTL.
        with contextlib.suppress(LedgerUnavailable):
            await self._call(self._send("delete", self.key(client_id, batch_id)))

    async def ping(self) -> None:
        # A health probe wants an answer soon, not a ridden-out restart.
        await self._call(self._redis.ping(), wait_s=2.0)

    async def close(self) -> None:
        await self._redis.aclose()
