"""The consumer side's only door to Kafka; kafka-python's exceptions are mapped to ours (BrokerUnavailable,
ConfigError) here, so nothing else in `consumer` imports `kafka`.

    admin.py                 topic administration: creating, describing, deleting topics
    group.py                 GroupConsumer (the runner's consumer-group member) and Record
    stall_watchdog.py        ConsumerStalled: a group consumer that stopped fetching is made anew
    offsets.py               offsets looked up without joining the group (replay)
    dead_letter_producer.py  DeadLetterProducer: refused records to `<topic>.dlq`
"""

from consumer.kafka_io.admin import (
    TopicLayout,
    delete_topics,
    ensure_topics,
    event_topic_config,
    replication_plan,
    topic_config,
    topic_layout,
)
from consumer.kafka_io.dead_letter_producer import DeadLetterProducer
from consumer.kafka_io.group import COMMIT_EVERY_S, GroupConsumer, Record
from consumer.kafka_io.offsets import first_offsets, offsets_for_time
from consumer.kafka_io.stall_watchdog import STALL_LIMIT_S, ConsumerStalled

__all__ = [
    "COMMIT_EVERY_S",
    "STALL_LIMIT_S",
    "ConsumerStalled",
    "DeadLetterProducer",
    "GroupConsumer",
    "Record",
    "TopicLayout",
    "delete_topics",
    "ensure_topics",
    "event_topic_config",
    "first_offsets",
    "offsets_for_time",
    "replication_plan",
    "topic_config",
    "topic_layout",
]
