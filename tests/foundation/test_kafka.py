"""Kafka of the local stack: the topic exists as configured and round-trips records."""

import uuid

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

# As README.md documents the topic (written out, not read from the settings under test).
TOPIC_PARTITIONS = 6
TOPIC_RETENTION_MS = 7 * 24 * 3600 * 1000


def test_topic_has_the_documented_partitions_and_retention(stack):
    admin = KafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    try:
        (description,) = admin.describe_topics([stack.topic])
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, stack.topic)])
    finally:
        admin.close()
    assert description["error_code"] == 0
    assert len(description["partitions"]) == TOPIC_PARTITIONS
    retention = configs["topic"][stack.topic]["retention.ms"]["value"]
    assert retention == str(TOPIC_RETENTION_MS)


def test_produce_consume_round_trip(stack):
    key = f"acme|roundtrip-{uuid.uuid4().hex[:8]}".encode()
    values = [f"value-{i}".encode() for i in range(20)]
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
    metadata = [producer.send(stack.topic, key=key, value=value).get(timeout=30) for value in values]
    producer.close()
    # one key -> one partition, offsets consecutive
    assert len({m.partition for m in metadata}) == 1
    partition = metadata[0].partition
    first = metadata[0].offset
    assert [m.offset for m in metadata] == list(range(first, first + len(values)))

    consumer = KafkaConsumer(
        bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False, consumer_timeout_ms=10000
    )
    tp = TopicPartition(stack.topic, partition)
    consumer.assign([tp])
    consumer.seek(tp, first)
    got = []
    for message in consumer:
        got.append((message.key, message.value))
        if len(got) == len(values):
            break
    consumer.close()
    assert got == [(key, value) for value in values]
