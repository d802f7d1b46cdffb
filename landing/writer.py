"""Everything landing writes to the object store, each write retried until durable."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from botocore.exceptions import BotoCoreError, ClientError
from tenacity import RetryCallState, retry, retry_if_exception_type, stop_after_delay, wait_exponential

from heatmap_core.lake import (
    LedgerEntry,
    LedgerFile,
    PartitionWatermark,
    decode_watermark,
    encode_ledger,
    encode_watermark,
    ledger_key,
    part_key,
    rejected_key,
    watermark_key,
)
from heatmap_core.s3 import s3_client
from heatmap_core.settings import Settings
from landing.buffer import ChunksBody, Flush, PartFile
from landing.health import StoreHealth
from landing.parquet import parquet_from_runs

CONTENT_TYPES = {"json": "application/x-ndjson", "parquet": "application/vnd.apache.parquet"}


def _refused(retry_state: RetryCallState) -> None:
    """Before a retry: the writer's health hears of the failure (and logs only the first of a refusal)."""
    writer: LakeWriter = retry_state.args[0]
    if retry_state.outcome is not None and (failure := retry_state.outcome.exception()) is not None:
        writer.health.refused(failure)


# The object store may be briefly away (restart, network) or refuse writes (access
# denied, bucket gone); a flush waits for it rather than failing, since nothing is
# committed until the writes succeed. After two minutes the process exits and is restarted.
_durable = retry(
    retry=retry_if_exception_type((BotoCoreError, ClientError)),
    wait=wait_exponential(multiplier=0.5, max=15),
    stop=stop_after_delay(120),
    before_sleep=_refused,
    reraise=True,
)


@dataclass(frozen=True)
class WrittenFile:
    key: str
    part: PartFile
    fmt: str
    size: int


class LakeWriter:
    def __init__(
        self, settings: Settings, formats: tuple[str, ...], concurrency: int = 8, health: StoreHealth | None = None
    ):
        self.settings = settings
        self.bucket = settings.raw_bucket
        self.health = health or StoreHealth(settings.raw_bucket)
        self.formats = formats
        # Bodies sent unsigned (heatmap_core.s3.s3_client): about 2 ms of CPU per MB less, here and in the store.
        self.s3 = s3_client(settings, sign_payloads=False)
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="s3-put")

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    @_durable
    def put(self, key: str, body: bytes | ChunksBody, content_type: str = "application/json") -> None:
        sent_at = time.monotonic()
        if isinstance(body, ChunksBody):
            body.seek(0)  # a retry sends it whole again
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)
        self.health.accepted(sent_at)

    def put_all(self, objects: Sequence[tuple[str, bytes | ChunksBody, str]]) -> None:
        """Write objects in parallel; returns once every one of them is stored (or raises)."""
        for future in [self.pool.submit(self.put, *obj) for obj in objects]:
            future.result()

    @_durable
    def load_watermark(self, topic: str, kafka_partition: int) -> PartitionWatermark:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=watermark_key(topic, kafka_partition))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return PartitionWatermark(topic=topic, kafka_partition=kafka_partition, updated_at=datetime.now(UTC))
            raise
        return decode_watermark(body)

    def put_watermarks(self, watermarks: list[PartitionWatermark]) -> None:
        self.put_all(
            [(watermark_key(w.topic, w.kafka_partition), encode_watermark(w), "application/json") for w in watermarks]
        )

    def put_rejected(self, kafka_partition: int, offset: int, value: bytes) -> str:
        """Keep an undecodable record beside the lake."""
        key = rejected_key(self.settings.topic, kafka_partition, offset)
        self.put(key, value, "application/octet-stream")
        return key

    def _write_part(self, kafka_partition: int, part: PartFile, fmt: str) -> WrittenFile:
        """Encode and store one part file in one format (a pool thread: Arrow's Parquet encoding
        releases the GIL, so it overlaps the other files' uploads and the consumer's work)."""
        body = part.json_body() if fmt == "json" else parquet_from_runs(part.runs, kafka_partition)
        key = part_key(
            part.hour,
            part.client_id,
            kafka_partition,
            part.first_offset,
            part.last_offset,
            fmt,
            self.settings.parquet_prefix,
        )
        self.put(key, body, CONTENT_TYPES[fmt])
        return WrittenFile(key, part, fmt, len(body))

    def write_parts(self, flushes: list[Flush]) -> dict[int, list[WrittenFile]]:
        """Write every part file of the flushes in every format; by Kafka partition, what was written."""
        futures = [
            (flush.kafka_partition, self.pool.submit(self._write_part, flush.kafka_partition, part, fmt))
            for flush in flushes
            for part in flush.files
            for fmt in self.formats
        ]
        written: dict[int, list[WrittenFile]] = {flush.kafka_partition: [] for flush in flushes}
        for partition, future in futures:
            written[partition].append(future.result())
        return written

    def write_ledger(self, flushes: list[Flush], written: dict[int, list[WrittenFile]]) -> None:
        entries = []
        for flush in flushes:
            now = datetime.now(UTC)
            entry = LedgerEntry(
                written_at=now,
                kafka_partition=flush.kafka_partition,
                first_offset=flush.first_offset,
                last_offset=flush.last_offset,
                files=[
                    LedgerFile.of_hour(
                        file.part.hour,
                        key=file.key,
                        client_id=file.part.client_id,
                        events=file.part.events,
                        bytes=file.size,
                        format=file.fmt,
                    )
                    for file in written[flush.kafka_partition]
                ],
            )
            entries.append(
                (ledger_key(now, flush.kafka_partition, flush.first_offset), encode_ledger(entry), "application/json")
            )
        self.put_all(entries)
