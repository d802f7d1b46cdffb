"""The landing loop: consume, buffer per partition, flush durably, then commit.

Flush protocol for a set of partitions (see docs/ARCHITECTURE.md, "Landing"):

1. write each partition's watermark object with the flush's offset range
   (the intent: whoever reads the partition next from the same offset
   re-flushes exactly that range, onto exactly the same keys);
2. write the part files, JSON and Parquet, named by their Kafka origin;
3. write one ledger entry per partition naming the files;
4. advance each watermark object (landed offset, receive- and event-time marks);
5. commit the offsets after the range.

A crash anywhere before 5 leaves the offsets uncommitted: the next owner reads
the same records again, finds the intent in step 1's object and writes the
same files over themselves. Nothing is ever half-landed and nothing twice.

Steps 1-4 run in a flush thread while the loop decodes and buffers the records
of the poll after the range (waiting on the object store was most of landing's
time). A flush is committed before the loop polls again and before the next
flush starts: no flush is in flight across a poll, where rebalances happen, and
the steps of successive flushes never interleave.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError, RebalanceInProgressError
from kafka.structs import OffsetAndMetadata
from tenacity import retry, retry_if_result, stop_after_delay, wait_fixed

from heatmap_core.lake import PartitionWatermark
from heatmap_core.settings import Settings
from landing.buffer import Flush, PartitionBuffer, latest
from landing.health import HealthServer, StoreHealth
from landing.lines import RecordLines, record_lines
from landing.writer import LakeWriter, WrittenFile

log = logging.getLogger("landing")


class ConsumerStalled(RuntimeError):
    pass


def _landed(
    watermark: PartitionWatermark, flush: Flush, now: datetime, caught_up_at: datetime | None
) -> PartitionWatermark:
    """Step 4's watermark: the flush is in the lake; caught_up_at when it held all the partition had."""
    return msgspec.structs.replace(
        watermark,
        landed_through_offset=flush.last_offset,
        max_event_time=latest(watermark.max_event_time, flush.max_event_time),
        max_received_at=latest(watermark.max_received_at, flush.max_received_at),
        caught_up_at=caught_up_at or watermark.caught_up_at,
        updated_at=now,
    )


@dataclass
class PartitionState:
    buffer: PartitionBuffer
    watermark: PartitionWatermark
    # Set while re-reading a range an earlier owner flushed but did not commit: flush exactly at this offset.
    replay_until: int | None = None
    reading: bool = False  # whether a record arrived since the partition was (re)assigned

    @property
    def first_unlanded_offset(self) -> int:
        """The partition's first offset not yet in the lake (the watermark object knows what landed before)."""
        first_buffered = self.buffer.first_offset
        return self.watermark.landed_through_offset + 1 if first_buffered is None else first_buffered

    @property
    def next_offset(self) -> int:
        """The partition's first offset this member has neither buffered nor landed: the next one to arrive."""
        last_buffered = self.buffer.last_offset
        return self.watermark.landed_through_offset + 1 if last_buffered is None else last_buffered + 1


class _RebalanceNotes(ConsumerRebalanceListener):
    """Notes revoked partitions; the loop acts on them after poll returns, so listeners stay instant.

    (Instant matters: kafka-python 3 runs listeners on its IO thread, and one that blocked there,
    even for a fraction of a second, left the member fetching nothing after the rebalance.)
    """

    def __init__(self) -> None:
        self.revoked: set[TopicPartition] = set()
        self.assignment_changed = False

    def on_partitions_revoked(self, revoked):
        self.revoked.update(revoked)
        self.assignment_changed = True

    def on_partitions_assigned(self, assigned):
        self.assignment_changed = True


@dataclass
class FlushInFlight:
    """A flush whose steps 1-4 run in the flush thread; the loop commits it once they are done."""

    states: list[PartitionState]
    flushes: list[Flush]
    # Steps 1-4: the landed watermarks (step 4) and the part files written.
    writes: Future[tuple[list[PartitionWatermark], dict[int, list[WrittenFile]]]]


@dataclass
class Progress:
    events: int = 0
    files: int = 0
    flushes: int = 0
    rejected: int = 0
    last_logged: float = field(default_factory=time.monotonic)
    events_at_last_log: int = 0


class Landing:
    def __init__(self, settings: Settings):
        self.settings = settings
        options = settings.landing
        self.options = options
        self.topic = settings.topic
        self.health = StoreHealth(settings.raw_bucket)
        self.writer = LakeWriter(settings, options.formats, health=self.health)
        self.flush_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flush")
        self.in_flight: FlushInFlight | None = None
        self.rebalance = _RebalanceNotes()
        self.states: dict[int, PartitionState] = {}
        # Partitions sought back during this loop iteration: the rest of their polled records is stale.
        self.rewound: set[int] = set()
        # The stall watchdog's clock: seconds spent waiting in poll, which a slow object store does not advance.
        self.poll_clock = 0.0
        self.assigned_at = 0.0  # on the poll clock, as is delivered_at
        self.delivered_at: dict[int, float] = {}  # partition -> when a poll last delivered records of it
        # Partitions the Kafka client was restarted for that have delivered nothing since.
        self.restarted_for: set[int] = set()
        self.progress = Progress()
        self.stopping = False
        self.consumer = self._new_consumer()

    def _new_consumer(self) -> KafkaConsumer:
        options = self.options
        return KafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=options.group,
            group_instance_id=options.instance_id,
            client_id=f"landing-{options.instance_id or 'dynamic'}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=options.session_timeout_ms,
            heartbeat_interval_ms=max(options.session_timeout_ms // 3, 1000),
        )

    # ------------------------------------------------------------------ lifecycle

    def request_stop(self, signum: int, _frame) -> None:
        log.info("received %s: flushing, committing and leaving the group", signal.Signals(signum).name)
        self.stopping = True

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        port = self.options.health_port
        with HealthServer(self.health, port) if port is not None else contextlib.nullcontext():
            self._consume()
        log.info("landing stopped")

    def _consume(self) -> None:
        log.info(
            "landing topic %s as group %s (instance %s) into s3://%s in %s",
            self.topic,
            self.options.group,
            self.options.instance_id or "dynamic",
            self.settings.raw_bucket,
            "+".join(self.options.formats),
        )
        self._join()
        try:
            while not self.stopping:
                self.rewound = set()
                batches = self._poll()
                self._apply_rebalance()
                # What became due in the last round is written while this round's records are read.
                self._flush(self._due())
                for tp, records in batches.items():
                    self.delivered_at[tp.partition] = self.poll_clock
                    self.restarted_for.discard(tp.partition)
                    for message in records:
                        if tp.partition in self.rewound:
                            break
                        self._add(tp.partition, message.offset, message.value)
                self._finish_flush()
                self._refresh_idle_watermarks()
                self._log_progress()
                self._check_fetching()
            # Ranges being replayed are left for the next owner: flushing them early would change their keys.
            self._flush([p for p, s in self.states.items() if not s.buffer.empty and s.replay_until is None])
            self._finish_flush()
            self._log_progress(force=True)
        finally:
            # After a failure a flush may still be in flight: its writes end, uncommitted (a replay redoes them).
            self.flush_thread.shutdown(wait=True)
            self.consumer.close(autocommit=False, timeout_ms=10_000)
            self.writer.close()

    # ------------------------------------------------------------------ consuming

    def _poll(self) -> dict[TopicPartition, list]:
        started = time.monotonic()
        batches = self.consumer.poll(timeout_ms=200)
        self.poll_clock += time.monotonic() - started
        return batches

    def _join(self) -> None:
        """Subscribe to the topic once its partitions are known."""
        log.info("topic %s has partitions %s", self.topic, sorted(self._topic_partitions()))
        self.consumer.subscribe([self.topic], listener=self.rebalance)

    @retry(
        retry=retry_if_result(lambda partitions: not partitions),
        wait=wait_fixed(2),
        stop=stop_after_delay(300),
        before_sleep=lambda _: log.warning("waiting for the topic to exist"),
    )
    def _topic_partitions(self) -> set[int]:
        # Knowing the topic before joining matters: a group leader without its metadata assigns nothing.
        return self.consumer.partitions_for_topic(self.topic)

    def _apply_rebalance(self) -> None:
        """Drop the unflushed buffers of revoked partitions; they are read again from the committed offset.

        A partition assigned straight back to this member keeps its fetch position in kafka-python,
        so it is sought back to its first unflushed offset (which is the committed one).
        """
        if not self.rebalance.assignment_changed:
            return
        self.rebalance.assignment_changed = False
        revoked, self.rebalance.revoked = self.rebalance.revoked, set()
        assigned = self.consumer.assignment()
        for tp in revoked:
            state = self.states.pop(tp.partition, None)
            if state is not None and not state.buffer.empty and tp in assigned:
                self._rewind(tp, state.first_unlanded_offset)
        self.assigned_at = self.poll_clock
        log.info("assigned partitions %s", sorted(tp.partition for tp in assigned))

    def _check_fetching(self) -> None:
        """Restart the Kafka client when it stops delivering; fail loudly when that did not help.

        Stalled: an assigned partition that fetched nothing ``stall_timeout_s`` after its
        assignment, or whose last fetch showed records past the ones received and that
        delivered none of them for as long. (kafka-python 3 has been seen to leave a
        partition so after a rebalance.) A new client joins the group and reads again from
        the committed offsets, so nothing is lost; if a partition the client was restarted
        for stalls again before delivering anything, ``ConsumerStalled`` ends ``run()`` and
        the process's supervisor restarts it.
        """
        timeout = self.options.stall_timeout_s
        now = self.poll_clock
        if now - self.assigned_at < timeout:
            return
        unfetched, waiting = [], []
        for tp in self.consumer.assignment():
            if now - self.delivered_at.get(tp.partition, self.assigned_at) < timeout:
                continue
            highwater = self.consumer.highwater(tp)
            if highwater is None:
                unfetched.append(tp.partition)
            elif highwater > self._state(tp.partition).next_offset and highwater > self._committed(tp):
                waiting.append(tp.partition)
        if not unfetched and not waiting:
            return
        reasons = (
            [f"partitions {sorted(unfetched)} fetched nothing {timeout:.0f} s after assignment"] if unfetched else []
        )
        if waiting:
            reasons.append(f"partitions {sorted(waiting)} delivered none of their waiting records for {timeout:.0f} s")
        reason = "; ".join(reasons)
        if self.restarted_for & {*unfetched, *waiting}:
            raise ConsumerStalled(f"{reason}, after a restart of the Kafka client for them")
        self._restart_client(reason, {*unfetched, *waiting})

    def _committed(self, tp: TopicPartition) -> int | float:
        """The group's committed offset of the partition (0 if none); infinite when Kafka cannot say.

        A partition whose watermark object lags its committed offset (say, a group pointed at a new
        bucket) has nothing waiting once it has read up to the committed offset.
        """
        try:
            return self.consumer.committed(tp, timeout_ms=5_000) or 0
        except KafkaError:
            return math.inf

    def _restart_client(self, reason: str, stalled: set[int]) -> None:
        """Replace the Kafka client by a new member of the group; unflushed buffers are read again."""
        log.warning("%s: restarting the Kafka client, reading resumes at the committed offsets", reason)
        self.consumer.close(autocommit=False, timeout_ms=10_000)
        self.states.clear()  # nothing is in flight here: the loop committed the last flush before this check
        self.rebalance.revoked.clear()
        self.delivered_at.clear()
        self.restarted_for = stalled
        self.consumer = self._new_consumer()
        self._join()
        self.assigned_at = self.poll_clock

    def _rewind(self, tp: TopicPartition, offset: int) -> None:
        self.states.pop(tp.partition, None)
        self.consumer.seek(tp, offset)
        self.rewound.add(tp.partition)

    def _state(self, partition: int) -> PartitionState:
        state = self.states.get(partition)
        if state is None:
            watermark = self.writer.load_watermark(self.topic, partition)
            state = self.states[partition] = PartitionState(
                PartitionBuffer(partition, keep_columns="parquet" in self.options.formats), watermark
            )
        return state

    def _lines(self, partition: int, offset: int, value: bytes) -> RecordLines | None:
        try:
            return record_lines(value, partition, offset)
        except (msgspec.DecodeError, ValueError) as exc:
            key = self.writer.put_rejected(partition, offset, value)
            self.progress.rejected += 1
            log.warning("partition %d offset %d: rejected record kept at %s (%s)", partition, offset, key, exc)
            return None

    def _add(self, partition: int, offset: int, value: bytes) -> None:
        state = self._state(partition)
        if state.buffer.last_offset is not None and offset <= state.buffer.last_offset:
            return  # already buffered: a stale fetch after a seek must not put an event in twice
        watermark = state.watermark
        if not state.reading:
            state.reading = True
            if watermark.landed_through_offset >= 0 and offset > watermark.landed_through_offset + 1:
                # Reading must resume at or before the first unlanded offset; anything else skips events.
                log.warning(
                    "partition %d: reading resumes at offset %d but the lake holds offsets only through %d"
                    " (retention, or a reset of the group's offsets?)",
                    partition,
                    offset,
                    watermark.landed_through_offset,
                )
        if state.buffer.empty and state.replay_until is None and watermark.flush_first_offset == offset:
            state.replay_until = watermark.flush_last_offset
            log.info(
                "partition %d: re-flushing offsets %d-%d, written before the last commit",
                partition,
                watermark.flush_first_offset,
                watermark.flush_last_offset,
            )
        state.buffer.add(offset, self._lines(partition, offset, value))
        if state.replay_until is not None and offset >= state.replay_until:
            self._flush([partition])

    def _due(self) -> list[int]:
        now = time.monotonic()
        return [
            partition
            for partition, state in self.states.items()
            if not state.buffer.empty
            and state.replay_until is None
            and (
                state.buffer.events >= self.options.max_events
                or state.buffer.bytes >= self.options.max_bytes
                or state.buffer.age(now) >= self.options.flush_interval
            )
        ]

    # ------------------------------------------------------------------ flushing

    def _flush(self, partitions: list[int]) -> None:
        """Take the partitions' buffers and start their flush (steps 1-4) once the previous one is committed."""
        if not partitions:
            return
        self._finish_flush()
        # A failed commit of the previous flush may have rewound some of them.
        states = [self.states[p] for p in partitions if p in self.states and not self.states[p].buffer.empty]
        if not states:
            return
        flushes = [state.buffer.take() for state in states]
        now = datetime.now(UTC)
        caught_up = []
        for state, flush in zip(states, flushes, strict=True):
            state.replay_until = None  # the replayed range is taken whole
            state.watermark = msgspec.structs.replace(
                state.watermark,
                flush_first_offset=flush.first_offset,
                flush_last_offset=flush.last_offset,
                updated_at=now,
            )
            # Nothing of the partition is left unread or buffered as of now (the last fetch's high watermark).
            highwater = self.consumer.highwater(TopicPartition(self.topic, flush.kafka_partition))
            caught_up.append(now if highwater is not None and flush.last_offset + 1 >= highwater else None)
        intents = [state.watermark for state in states]
        writes = self.flush_thread.submit(self._write, intents, flushes, caught_up)
        self.in_flight = FlushInFlight(states, flushes, writes)

    def _write(
        self, intents: list[PartitionWatermark], flushes: list[Flush], caught_up: list[datetime | None]
    ) -> tuple[list[PartitionWatermark], dict[int, list[WrittenFile]]]:
        """Steps 1-4 of the protocol, in the flush thread; touches the object store only, never the consumer."""
        ranges = ", ".join(f"p{f.kafka_partition} {f.first_offset}-{f.last_offset}" for f in flushes)
        self.writer.put_watermarks(intents)
        # The debug lines bracket the part of a flush a crash leaves to be replayed (the reliability tests kill here).
        log.debug("flush %s: intent written, writing part files", ranges)
        written = self.writer.write_parts(flushes)
        self.writer.write_ledger([f for f in flushes if f.files], written)
        landed_at = datetime.now(UTC)
        landed = [
            _landed(intent, flush, landed_at, caught_up_at)
            for intent, flush, caught_up_at in zip(intents, flushes, caught_up, strict=True)
        ]
        self.writer.put_watermarks(landed)
        log.debug("flush %s: landed, to be committed", ranges)
        return landed, written

    def _finish_flush(self) -> None:
        """Wait for the flush in flight (if any) and commit it: step 5."""
        if self.in_flight is None:
            return
        in_flight, self.in_flight = self.in_flight, None
        landed, written = in_flight.writes.result()
        for state, watermark in zip(in_flight.states, landed, strict=True):
            state.watermark = watermark
        self._commit(in_flight.flushes)
        self.progress.flushes += len(in_flight.flushes)
        self.progress.events += sum(flush.events for flush in in_flight.flushes)
        self.progress.files += sum(len(files) for files in written.values())

    def _commit(self, flushes: list[Flush]) -> None:
        if not flushes:
            return
        offsets = {
            TopicPartition(self.topic, f.kafka_partition): OffsetAndMetadata(f.last_offset + 1, "", -1) for f in flushes
        }
        try:
            self.consumer.commit(offsets)
            self.health.committed()
        except (CommitFailedError, RebalanceInProgressError) as exc:
            # The group moved on: rewind, so whoever reads these partitions next (maybe us) replays the same ranges.
            log.warning("offset commit failed (%s); the ranges will be re-flushed onto the same keys", exc)
            assigned = self.consumer.assignment()
            for flush in flushes:
                tp = TopicPartition(self.topic, flush.kafka_partition)
                if tp in assigned:
                    self._rewind(tp, flush.first_offset)
                else:
                    self.states.pop(flush.kafka_partition, None)

    def _lag(self, tp: TopicPartition, state: PartitionState) -> int | None:
        """Records of the partition not yet in the lake, as far as the last fetch tells (None before one)."""
        highwater = self.consumer.highwater(tp)
        return None if highwater is None else highwater - state.first_unlanded_offset

    def _refresh_idle_watermarks(self) -> None:
        """Caught-up partitions keep their watermark moving, so one quiet partition holds no hour open."""
        now = datetime.now(UTC)
        caught_up = []
        for tp in self.consumer.assignment():
            state = self._state(tp.partition)
            if (now - state.watermark.updated_at).total_seconds() < self.options.flush_interval:
                continue
            if self._lag(tp, state) == 0:
                state.watermark = msgspec.structs.replace(state.watermark, caught_up_at=now, updated_at=now)
                caught_up.append(state.watermark)
        if caught_up:
            self.writer.put_watermarks(caught_up)

    # ------------------------------------------------------------------ reporting

    def _log_progress(self, force: bool = False) -> None:
        now = time.monotonic()
        elapsed = now - self.progress.last_logged
        if not force and elapsed < self.options.log_interval:
            return
        lags = [self._lag(tp, self._state(tp.partition)) for tp in self.consumer.assignment()]
        lag = sum(filter(None, lags))
        buffered = sum(state.buffer.events for state in self.states.values())
        rate = (self.progress.events - self.progress.events_at_last_log) / elapsed if elapsed > 0 else 0.0
        log.info(
            "progress: landed=%d events (%.0f/s) files=%d flushes=%d rejected=%d buffered=%d lag=%d records%s",
            self.progress.events,
            rate,
            self.progress.files,
            self.progress.flushes,
            self.progress.rejected,
            buffered,
            lag,
            "" if None not in lags else " (some partitions not fetched yet)",
        )
        self.progress.last_logged = now
        self.progress.events_at_last_log = self.progress.events
