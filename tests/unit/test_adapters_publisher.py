"""The publisher's transaction discipline, over producers that fail where we tell them to."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    LeaderNotAvailableError,
    NotEnoughReplicasAfterAppendError,
    NotEnoughReplicasError,
    NotLeaderForPartitionError,
    RequestTimedOutError,
)
from aiokafka.partitioner import DefaultPartitioner

from adapters.publisher import EventRecord, KafkaPublisher, PublisherOptions
from broker.domain.faults import Failure
from broker.settings import Settings

RECORDS = [EventRecord(b"sch-1", b"<e/>", (("event_type", b"GradePosted"),)) for _ in range(3)]


class Batch:
    """A record batch that holds two records, as a real one holds what fits in its size."""

    def __init__(self) -> None:
        self.values: list[bytes] = []

    def append(self, *, key: bytes, value: bytes, timestamp: float | None, headers: list) -> object | None:
        if len(self.values) == 2:
            return None
        self.values.append(value)
        return object()


class Producer:
    """Records what the publisher asks of it; ``fail_at`` names the step that raises."""

    def __init__(self, journal: list[str], fail_at: str | None) -> None:
        self.journal = journal
        self.fail_at = fail_at
        self.sent: list[tuple[int, list[bytes]]] = []
        """(partition, values) of every batch sent, in order."""

    async def _step(self, name: str) -> None:
        self.journal.append(name)
        if self.fail_at == name:
            raise KafkaConnectionError(f"{name} failed")

    async def start(self) -> None:
        await self._step("start")

    async def begin_transaction(self) -> None:
        await self._step("begin")

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def create_batch(self) -> Batch:
        return Batch()

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> asyncio.Future:
        await self._step("send")
        self.sent.append((partition, batch.values))
        delivered = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        return delivered

    async def commit_transaction(self) -> None:
        await self._step("commit")

    async def abort_transaction(self) -> None:
        await self._step("abort")

    async def stop(self) -> None:
        self.journal.append("stop")


def publisher(journal: list[str], failures: list[str | None]) -> KafkaPublisher:
    plan = iter(failures)
    return KafkaPublisher(Settings(), options=PublisherOptions(producers=1, timeout_s=5),
                          producer_factory=lambda _id: Producer(journal, next(plan)))


async def test_a_batch_is_one_transaction_committed_after_every_send():
    journal: list[str] = []
    await publisher(journal, [None]).publish(RECORDS)
    assert journal == ["start", "begin", "send", "send", "commit"]  # 3 records of one key: batches of 2 + 1


@pytest.mark.parametrize("step", ["send", "commit"])
async def test_a_failure_midway_aborts_and_replaces_the_producer(step):
    journal: list[str] = []
    sink = publisher(journal, [step, None])
    with pytest.raises(Failure) as caught:
        await sink.publish(RECORDS)
    assert caught.value.retriable and caught.value.http_status == 503
    await sink.stop()  # the failed producer is retired in the background
    assert journal[-2:] == ["abort", "stop"]
    journal.clear()
    await sink.publish(RECORDS)  # a fresh producer: its InitProducerId fences the old one
    assert journal == ["start", "begin", "send", "send", "commit"]  # 3 records of one key: batches of 2 + 1


async def test_an_unreachable_kafka_is_a_retriable_failure_and_is_retried_next_time():
    journal: list[str] = []
    sink = publisher(journal, ["start", None])
    with pytest.raises(Failure):
        await sink.publish(RECORDS)
    assert "begin" not in journal
    await sink.publish(RECORDS)
    assert journal.count("start") == 2 and journal[-1] == "commit"


async def test_a_hanging_kafka_times_out_into_a_failure():
    class Hangs(Producer):
        async def commit_transaction(self) -> None:
            await asyncio.Event().wait()

    journal: list[str] = []
    sink = KafkaPublisher(Settings(), options=PublisherOptions(producers=1, timeout_s=0.2),
                          producer_factory=lambda _id: Hangs(journal, None))
    with pytest.raises(Failure):
        await sink.publish(RECORDS)
    await sink.stop()
    assert journal[-2:] == ["abort", "stop"]


async def test_the_failure_comes_at_the_timeout_even_when_aborting_hangs_too():
    """Kafka gone: the vendor's 503 must not wait for the abort and stop of the broken producer."""
    class HangsThrough(Producer):
        async def commit_transaction(self) -> None:
            await asyncio.Event().wait()

        async def abort_transaction(self) -> None:
            self.journal.append("abort")
            await asyncio.Event().wait()

    journal: list[str] = []
    sink = KafkaPublisher(Settings(), options=PublisherOptions(producers=1, timeout_s=0.2),
                          producer_factory=lambda _id: HangsThrough(journal, None))
    started = asyncio.get_running_loop().time()
    with pytest.raises(Failure):
        await sink.publish(RECORDS)
    assert asyncio.get_running_loop().time() - started < 1.0
    await sink.stop()  # the abort gives up after its own bound, then the producer is stopped
    assert journal[-2:] == ["abort", "stop"]


@pytest.mark.parametrize("error", [NotEnoughReplicasError, NotEnoughReplicasAfterAppendError, LeaderNotAvailableError,
                                   NotLeaderForPartitionError, RequestTimedOutError, KafkaTimeoutError])
async def test_too_few_replicas_in_sync_or_no_leader_is_an_outage_answered_503(error):
    """What a replicated cluster answers while brokers are down: the send's acknowledgement fails."""
    class Unacknowledged(Producer):
        async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> asyncio.Future:
            self.journal.append("send")
            delivered = asyncio.get_running_loop().create_future()
            delivered.set_exception(error("acks=all not met"))
            return delivered

    journal: list[str] = []
    sink = KafkaPublisher(Settings(), options=PublisherOptions(producers=1, timeout_s=5),
                          producer_factory=lambda _id: Unacknowledged(journal, None))
    with pytest.raises(Failure) as caught:
        await sink.publish(RECORDS)
    assert caught.value.retriable and caught.value.http_status == 503
    await sink.stop()
    assert "commit" not in journal and journal[-2:] == ["abort", "stop"]


async def test_nothing_to_publish_touches_no_producer():
    journal: list[str] = []
    await publisher(journal, []).publish([])
    assert journal == []


async def test_records_go_in_batches_per_partition_each_in_order():
    """Each key to the partition aiokafka's partitioner gives it (the one ``send()`` uses), a partition's
    records in the order published, a full batch sent before the next one of its partition."""
    records = [EventRecord(f"sch-{n % 4}".encode(), str(n).encode(), ()) for n in range(12)]
    journal: list[str] = []
    made: list[Producer] = []

    def factory(_id: str) -> Producer:
        made.append(Producer(journal, None))
        return made[-1]

    await KafkaPublisher(Settings(), options=PublisherOptions(producers=1), producer_factory=factory).publish(records)
    expected: dict[int, list[bytes]] = {}
    for record in records:
        expected.setdefault(DefaultPartitioner()(record.key, [0, 1, 2], [0, 1, 2]), []).append(record.value)
    sent: dict[int, list[bytes]] = {}
    for partition, values in made[0].sent:
        assert 1 <= len(values) <= 2
        sent.setdefault(partition, []).extend(values)
    assert sent == expected
    assert journal[-1] == "commit" and journal.count("send") == len(made[0].sent)
