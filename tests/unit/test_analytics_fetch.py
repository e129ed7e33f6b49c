"""The analytics consumer's own Kafka reader: how much one fetch brings."""

from __future__ import annotations

from broker.settings import Settings
from consumers.analytics import AnalyticsOptions, events_consumer


async def test_one_fetch_brings_more_than_a_batch_per_partition() -> None:
    # aiokafka's default (1 MiB, ~700 events of ~1.4 kB) made almost every batch of 500 wait on a fetch.
    options = AnalyticsOptions(group_id="analytics-test")
    consumer = events_consumer(Settings(kafka_bootstrap="127.0.0.1:1"), options)
    assert consumer._max_partition_fetch_bytes == options.fetch_bytes_per_partition == 8 * 1024 * 1024
    assert consumer._max_partition_fetch_bytes >= 4 * options.max_records * 1500
