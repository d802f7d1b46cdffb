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

Once an outage is known, requests stop paying for it: after a command has given up on an
unreachable Redis (its whole ``LEDGER_WAIT_S``), every ledger call fails at once with
LedgerUnavailable (the caller answers as it would after the wait: 503, or 202 without the ledger)
while one probe task pings Redis every ``PROBE_INTERVAL_S``; the first answer, the probe's or any
command's, ends the outage and the ledger is used again. A restart shorter than ``LEDGER_WAIT_S``
is still ridden out, since nothing is skipped until a command has waited that long; /health's
shorter ping never starts the skipping.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from heatmap_core.settings import Settings
from ingestion_api.observability import OutageLog
from ingestion_api.publisher import verdict_wait_s

DONE_TTL_S = 24 * 3600
# Longest wait for one ledger operation, retries included: a Redis restart usually takes a few seconds.
LEDGER_WAIT_S = 6.0
# Backoff 100 ms doubling to 1 s, 10 retries (about 7.5 s of waiting): LEDGER_WAIT_S ends it first.
_RETRY = Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=10)
# While Redis is known to be down, one ping at a time asks whether it is back, at most this often.
PROBE_INTERVAL_S = 1.0
# /health asks sooner than a request waits: a probe wants an answer, not a ridden-out restart.
HEALTH_WAIT_S = 2.0
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
    A caller that stopped waiting (its ``LEDGER_WAIT_S`` ran out) is skipped when the replies come, and
    the commands are not retried past that wait: none is applied after its caller has answered.
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
            # Retried no longer than its callers wait: otherwise a claim whose caller gave up (and answered)
            # would still be applied when Redis came back, and hold its batch (409) for a whole pending TTL.
            async with asyncio.timeout(LEDGER_WAIT_S):
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
        # The owner of a pending key has answered within its claim wait, the publish (queued within the
        # delivery timeout, then the producer's verdict) and its commit wait; a 202 would have left "done".
        # So once the key expires a retry may publish (the owner got a 503 or died), and a claim whose reply
        # was lost in a Redis restart blocks its batch only this long.
        delivery_timeout_s = settings.kafka_delivery_timeout_s
        self._pending_ttl_s = int(delivery_timeout_s + verdict_wait_s(delivery_timeout_s) + 2 * LEDGER_WAIT_S) + 5
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
        # Why Redis is known to be down (a command gave up on it), until it answers again; meanwhile
        # calls fail at once and ``_probe`` pings it.
        self._down: LedgerUnavailable | None = None
        self._probe: asyncio.Task | None = None

    @staticmethod
    def key(client_id: str, batch_id: str) -> str:
        return f"heatmap:ingest:batch:{client_id}:{batch_id}"

    async def _call(self, issue: Callable[[], Awaitable], wait_s: float = LEDGER_WAIT_S, declares_down: bool = True):
        """``issue()``'s answer within ``wait_s``; LedgerUnavailable after it, or at once while Redis is known down.

        declares_down: whether giving up on an unreachable Redis makes it known down (a command, which
        waited its whole LEDGER_WAIT_S); /health's shorter ping does not, or it would cut short the
        waits that ride out a restart.
        """
        started = time.monotonic()
        if self._down is not None:
            skipped = LedgerUnavailable(
                f"Redis unreachable, probed every {PROBE_INTERVAL_S:g} s; the ledger is skipped meanwhile: {self._down}"
            )
            self.outage.failed(started, skipped)
            raise skipped
        try:
            async with asyncio.timeout(wait_s):
                answer = await issue()
        except (RedisError, TimeoutError) as exc:
            unavailable = LedgerUnavailable(repr(exc))
            # A refusal Redis answered (a RedisError of another kind) says it is there: nothing to skip.
            unreachable = isinstance(exc, RedisConnectionError | RedisTimeoutError | TimeoutError)
            if self.outage.failed(started, unavailable) and declares_down and unreachable:
                self._known_down(unavailable)
            raise unavailable from exc
        self._answered()
        return answer

    def _known_down(self, cause: LedgerUnavailable) -> None:
        self._down = cause
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._probe_until_back())

    async def _probe_until_back(self) -> None:
        """Ping Redis until it answers: one ping at a time, each given PROBE_INTERVAL_S (within which the
        client's Retry reconnects with its backoff), the next no sooner than that after the last began."""
        while self._down is not None:
            started = time.monotonic()
            try:
                async with asyncio.timeout(PROBE_INTERVAL_S):
                    await self._redis.ping()
            except (RedisError, TimeoutError):
                await asyncio.sleep(max(0.0, PROBE_INTERVAL_S - (time.monotonic() - started)))
            else:
                self._answered()

    def _answered(self) -> None:
        self._down = None
        self.outage.succeeded()

    async def claim(self, client_id: str, batch_id: str) -> Claim:
        token = _PENDING + uuid.uuid4().hex.encode()
        before = await self._call(
            partial(self._send, "set", self.key(client_id, batch_id), token, nx=True, get=True, ex=self._pending_ttl_s)
        )
        # None: the key was free and is ours now; our own token: a retried SET whose first reply was lost.
        if before is None or before == token:
            return Claim.NEW
        return Claim.DONE if before == _DONE else Claim.PENDING

    async def commit(self, client_id: str, batch_id: str) -> None:
        """Record the batch as published; LedgerUnavailable means its retry would not be seen as a duplicate."""
        await self._call(partial(self._send, "set", self.key(client_id, batch_id), _DONE, ex=DONE_TTL_S))

    async def release(self, client_id: str, batch_id: str) -> None:
        # On failure the pending key expires on its own after its short TTL.
        with contextlib.suppress(LedgerUnavailable):
            await self._call(partial(self._send, "delete", self.key(client_id, batch_id)))

    async def ping(self) -> None:
        """/health's question: Redis's answer within HEALTH_WAIT_S, or at once while it is known down."""
        await self._call(self._redis.ping, wait_s=HEALTH_WAIT_S, declares_down=False)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        await self._redis.aclose()
