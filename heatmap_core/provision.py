"""What must exist before the pipeline runs: the raw-events topic and the buckets.

Both are created idempotently (creating what already exists changes nothing),
so the local stack, the tests and the benchmarks call the same functions with
their own settings. The topic's shape (partitions, retention) is fixed here
from settings: Kafka's auto-creation is off, so nothing else creates it.
``python -m heatmap_core.provision`` does both (the compose file runs it).
A test or a benchmark that provisioned its own topic and buckets removes them
with ``remove_topic`` and ``remove_buckets`` when it is done, so runs do not
pile their data up on the machine's disk.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

from heatmap_core.s3 import ensure_bucket, remove_bucket, s3_client
from heatmap_core.settings import Settings, get_settings


@contextlib.contextmanager
def _kafka_admin(settings: Settings) -> Iterator[KafkaAdminClient]:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10000)
    try:
        yield admin
    finally:
        admin.close()


def ensure_topic(settings: Settings) -> None:
    """``settings.topic`` with ``topic_partitions`` partitions and ``topic_retention_hours`` retention.

    An existing topic is left as it is (its partition count is not changed).
    """
    topic = NewTopic(
        name=settings.topic,
        num_partitions=settings.topic_partitions,
        replication_factor=1,
        topic_configs={"retention.ms": str(settings.topic_retention_hours * 3600 * 1000)},
    )
    with _kafka_admin(settings) as admin, contextlib.suppress(TopicAlreadyExistsError):
        admin.create_topics([topic])


def ensure_buckets(settings: Settings) -> None:
    """The raw lake bucket and the assets (screenshots) bucket."""
    client = s3_client(settings)
    for bucket in (settings.raw_bucket, settings.assets_bucket):
        ensure_bucket(client, bucket)


def remove_topic(settings: Settings) -> None:
    """``settings.topic`` deleted (Kafka removes its files shortly after); a missing topic is left so."""
    with _kafka_admin(settings) as admin, contextlib.suppress(UnknownTopicOrPartitionError):
        admin.delete_topics([settings.topic])


def remove_buckets(settings: Settings) -> None:
    """The raw lake bucket and the assets bucket, with everything in them."""
    client = s3_client(settings)
    for bucket in (settings.raw_bucket, settings.assets_bucket):
        remove_bucket(client, bucket)


if __name__ == "__main__":  # the compose file's one-shot `provision` service
    ensure_topic(get_settings())
    ensure_buckets(get_settings())
