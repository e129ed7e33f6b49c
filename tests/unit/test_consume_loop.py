"""The consume loop through Kafka errors on poll and commit, with a fake consumer (aiokafka's own error classes)."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import (
    KafkaConnectionError,
    NodeNotReadyError,
    RequestTimedOutError,
    TopicAuthorizationFailedError,
)
from structlog.testing import capture_logs

from broker.domain.faults import Failure
from broker.infra.backoff import Backoff
from consumers.loop import LoopOptions, consume, report_lag

TP = TopicPartition("events", 0)
OPTIONS = LoopOptions(group_id="test", backoff=Backoff(base_s=0.01, cap_s=0.02), commit_timeout_s=0.2)


def record(offset: int) -> ConsumerRecord:
    return ConsumerRecord("events", 0, offset, 0, 0, b"k", b"v", None, 1, 1, [])


class FakeConsumer:
    """Hands out one record per poll; ``poll_errors`` and ``commit_errors`` are raised first, in order
    (``"hang"`` for a commit that never answers)."""

    def __init__(self, *, poll_errors: list = (), commit_errors: list = (), records: int = 2) -> None:
        self.poll_errors, self.commit_errors = list(poll_errors), list(commit_errors)
        self.pending = [record(offset) for offset in range(records)]
        self.committed: list[dict] = []

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict:
        if self.poll_errors:
            raise self.poll_errors.pop(0)
        await asyncio.sleep(0)
        return {TP: [self.pending.pop(0)]} if self.pending else {}

    async def commit(self, offsets: dict) -> None:
        if self.commit_errors:
            error = self.commit_errors.pop(0)
            if error == "hang":
                await asyncio.Event().wait()
            raise error
        self.committed.append(dict(offsets))

    def assignment(self) -> set:
        return {TP}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        raise AssertionError("nothing failed in processing: no rewind")


async def run_until_committed(consumer: FakeConsumer, offsets: int, *, timeout_s: float = 5.0) -> list:
    processed: list[int] = []
    stop = asyncio.Event()

    async def process(records):
        processed.extend(r.offset for r in records)

    async def stop_when_done(_consumer):
        if len(consumer.committed) >= offsets:
            stop.set()

    await asyncio.wait_for(consume(consumer, process, stop=stop, name="test", options=OPTIONS,
                                   after_poll=stop_when_done), timeout_s)
    return processed


async def test_a_poll_during_a_kafka_outage_is_retried_with_backoff_and_logged():
    consumer = FakeConsumer(poll_errors=[KafkaConnectionError("down"), NodeNotReadyError("not ready")])
    with capture_logs() as logs:
        processed = await run_until_committed(consumer, 2)
    assert processed == [0, 1]
    assert consumer.committed == [{TP: 1}, {TP: 2}]
    outages = [entry for entry in logs if entry["event"] == "test.kafka_outage"]
    assert [(entry["action"], entry["attempt"]) for entry in outages] == [("poll", 1), ("poll", 2)]
    assert [entry["attempts"] for entry in logs if entry["event"] == "test.kafka_back"] == [3]


async def test_a_commit_during_a_kafka_outage_is_retried_until_it_lands():
    consumer = FakeConsumer(commit_errors=[RequestTimedOutError(), KafkaConnectionError("down")])
    with capture_logs() as logs:
        processed = await run_until_committed(consumer, 2)
    assert processed == [0, 1]  # the batch is not processed again
    assert consumer.committed == [{TP: 1}, {TP: 2}]
    assert [entry["action"] for entry in logs if entry["event"] == "test.kafka_outage"] == ["commit", "commit"]


async def test_a_commit_that_never_answers_is_given_up_after_its_deadline_and_retried():
    consumer = FakeConsumer(commit_errors=["hang"])
    with capture_logs() as logs:
        await run_until_committed(consumer, 2, timeout_s=2.0)
    assert consumer.committed == [{TP: 1}, {TP: 2}]
    [outage] = [entry for entry in logs if entry["event"] == "test.kafka_outage"]
    assert outage["action"] == "commit" and "TimeoutError" in outage["error"]


@pytest.mark.parametrize("where", ["poll_errors", "commit_errors"])
async def test_a_permanent_kafka_error_stops_the_consumer_with_a_clear_error(where):
    consumer = FakeConsumer(**{where: [TopicAuthorizationFailedError()]})
    with pytest.raises(RuntimeError, match="refused the test consumer's (poll|commit) permanently"):
        await run_until_committed(consumer, 2)
    assert consumer.committed == []


async def test_stop_during_an_outage_ends_the_loop_at_once():
    consumer = FakeConsumer(poll_errors=[KafkaConnectionError("down")] * 1000)
    stop = asyncio.Event()
    task = asyncio.create_task(consume(consumer, lambda records: asyncio.sleep(0), stop=stop, name="test",
                                       options=LoopOptions(group_id="test", backoff=Backoff(base_s=60, cap_s=60))))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 1.0)
    assert len(consumer.poll_errors) == 998  # the first try, and one more after the pause that stop cut short


async def test_the_batch_in_flight_at_stop_is_still_committed():
    consumer = FakeConsumer(records=1)
    stop = asyncio.Event()

    async def process(records):
        stop.set()

    await asyncio.wait_for(consume(consumer, process, stop=stop, name="test", options=OPTIONS), 1.0)
    assert consumer.committed == [{TP: 1}]


class SeekableConsumer(FakeConsumer):
    """Hands out the record at its position; ``seek`` moves it back, as a rewind does."""

    def __init__(self, *, records: int) -> None:
        super().__init__(records=0)
        self.log = [record(offset) for offset in range(records)]
        self.position = 0
        self.seeks: list[int] = []

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict:
        await asyncio.sleep(0)
        if self.position >= len(self.log):
            return {}
        self.position += 1
        return {TP: [self.log[self.position - 1]]}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append(offset)
        self.position = offset


async def test_the_next_batch_is_prepared_while_the_current_one_is_processed():
    consumer = SeekableConsumer(records=3)
    stop = asyncio.Event()
    prepared: list[int] = []
    processed: list[int] = []
    next_prepared = asyncio.Event()

    def prepare(records):
        prepared.extend(r.offset for r in records)
        if records[0].offset == 1:
            next_prepared.set()
        return [r.offset for r in records]

    async def process(offsets):
        if offsets == [0]:
            await asyncio.wait_for(next_prepared.wait(), 1.0)  # without the overlap this never happens
        processed.extend(offsets)
        if offsets == [2]:
            stop.set()

    await asyncio.wait_for(consume(consumer, process, stop=stop, name="test", options=OPTIONS, prepare=prepare), 2.0)
    assert processed == [0, 1, 2] and prepared == [0, 1, 2]
    assert consumer.committed == [{TP: 1}, {TP: 2}, {TP: 3}]


async def test_a_failed_batch_rewinds_the_batch_polled_ahead_too_and_both_are_processed_again_in_order():
    consumer = SeekableConsumer(records=3)
    stop = asyncio.Event()
    attempts: list[int] = []
    failed = False

    async def process(offsets):
        nonlocal failed
        attempts.extend(offsets)
        if offsets == [0] and not failed:
            failed = True
            await asyncio.sleep(0.01)  # long enough for the batch after it to be polled ahead
            raise Failure("PostgreSQL is down")
        if offsets == [2]:
            stop.set()

    await asyncio.wait_for(consume(consumer, process, stop=stop, name="test", options=OPTIONS,
                                   prepare=lambda records: [r.offset for r in records]), 2.0)
    assert attempts == [0, 0, 1, 2]  # batch 1 was polled ahead, dropped, and read again after batch 0
    assert consumer.seeks == [1, 0]  # the batch ahead rewound first, the failed one last
    assert consumer.committed == [{TP: 1}, {TP: 2}, {TP: 3}]


async def test_a_retriable_fault_in_prepare_retries_its_batch():
    consumer = SeekableConsumer(records=2)
    stop = asyncio.Event()
    tries = {"prepare": 0}
    processed: list[int] = []

    def prepare(records):
        tries["prepare"] += 1
        if tries["prepare"] == 1:
            raise Failure("schema store unreachable")
        return [r.offset for r in records]

    async def process(offsets):
        processed.extend(offsets)
        if offsets == [1]:
            stop.set()

    await asyncio.wait_for(consume(consumer, process, stop=stop, name="test", options=OPTIONS, prepare=prepare), 2.0)
    assert processed == [0, 1]
    assert consumer.committed == [{TP: 1}, {TP: 2}]


async def test_prepare_in_thread_keeps_the_batch_in_flight_moving_while_the_next_is_prepared():
    consumer = FakeConsumer(records=2)
    moments: list[str] = []
    stop = asyncio.Event()

    def prepare(records):
        if records[0].offset == 1:  # the batch polled ahead: slow CPU work, off the loop
            assert threading.current_thread() is not threading.main_thread()
            time.sleep(0.3)
            moments.append("prepared 1")
        return records

    async def process(records):
        for _ in range(3):  # round trips to PostgreSQL, as it were
            await asyncio.sleep(0.02)
        moments.append(f"processed {records[0].offset}")
        if records[0].offset == 1:
            stop.set()

    await asyncio.wait_for(consume(consumer, process, stop=stop, name="test", prepare=prepare,
                                   options=replace(OPTIONS, prepare_in_thread=True)), 5)
    assert moments == ["processed 0", "prepared 1", "processed 1"]


async def test_the_lag_metric_never_stops_its_consumer():
    """aiokafka raises IllegalStateError when a partition is revoked while its position is looked up."""
    from aiokafka.errors import IllegalStateError

    revoked = TopicPartition("events", 1)

    class Rebalancing(FakeConsumer):
        def assignment(self):
            return [TP, revoked]  # as it was before the rebalance

        def highwater(self, tp):
            assert tp == TP, "Partition is not assigned"  # aiokafka's own check, after the revocation
            return 10

        async def position(self, tp):
            raise IllegalStateError(f"Partition {tp} is not assigned")
    consumer = Rebalancing(records=3)
    stop = asyncio.Event()

    async def report_then_stop(kafka_consumer):
        await report_lag(kafka_consumer, name="analytics")
        if len(consumer.committed) >= 3:
            stop.set()

    async def process(records):
        pass
    await asyncio.wait_for(consume(consumer, process, stop=stop, name="analytics", options=OPTIONS,
                                   after_poll=report_then_stop), 5)
    assert [offsets[TP] for offsets in consumer.committed] == [1, 2, 3]


class _Lagging(FakeConsumer):
    """An assignment that can change, a high watermark of 10, positions per partition (None: never answers)."""

    def __init__(self, positions: dict[TopicPartition, int | None]) -> None:
        super().__init__()
        self.positions = positions

    def assignment(self) -> list:
        return list(self.positions)  # in the order given

    def highwater(self, tp: TopicPartition) -> int:
        return 10

    async def position(self, tp: TopicPartition) -> int:
        if self.positions[tp] is None:  # a reset asked of the broker, up to its request timeout
            await asyncio.Event().wait()
        return self.positions[tp]


async def test_the_lag_of_a_partition_no_longer_assigned_is_dropped():
    """After a rebalance its new owner reports it; a series left behind would be summed into the view forever."""
    from broker.ops import metrics

    other = TopicPartition("events", 1)
    consumer = _Lagging({TP: 4, other: 7})
    await report_lag(consumer, name="lag-test-revoked")
    assert metrics.consumer_lag("lag-test-revoked") == {"events": 6 + 3}
    del consumer.positions[other]
    await report_lag(consumer, name="lag-test-revoked")
    assert metrics.consumer_lag("lag-test-revoked") == {"events": 6}


async def test_a_position_that_does_not_answer_holds_up_the_loop_a_moment_only():
    from broker.ops import metrics

    consumer = _Lagging({TopicPartition("events", 1): 9, **{TopicPartition("events", p): None for p in range(2, 12)}})
    started = time.monotonic()
    await asyncio.wait_for(report_lag(consumer, name="lag-test-hung"), 5)
    assert time.monotonic() - started < 0.3  # one bound for all ten, not 50 ms each
    assert metrics.consumer_lag("lag-test-hung") == {"events": 1}  # the partition that answered
