"""The reference agency's pull client: all its readers while messages come, one poller while the queue is empty.

The SMEV 3 side is a scripted stand-in here (the protocol is covered against ejx's real endpoint in the
integration tests): what is checked is how many GetRequests the client sends, and how many at once.
"""

from __future__ import annotations

import asyncio
import uuid

from broker.devtools.receivers import InteragencyPullClient, PullClientOptions
from broker.domain.faults import SignatureVerificationFault
from broker.smev3.client import Pulled

READERS, IDLE_S = 8, 0.05


class ScriptedQueue:
    """GetRequest hands out ``messages`` (as refused ones: no receipts store needed), then nothing."""

    def __init__(self, messages: int) -> None:
        self.left = messages
        self.calls = self.in_flight = self.most_in_flight = 0
        self.acked: list[uuid.UUID] = []

    async def get_request(self) -> Pulled | None:
        self.calls += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.005)  # a round trip
            if self.left == 0:
                return None
            self.left -= 1
            return Pulled(message_id=uuid.uuid4(), message=None, refusal=SignatureVerificationFault("scripted"))
        finally:
            self.in_flight -= 1

    async def ack(self, message_id: uuid.UUID, *, accepted: bool) -> None:
        self.acked.append(message_id)

    async def aclose(self) -> None:
        pass


class Receipts:
    receiver = "interagency"

    async def reject(self, fault) -> None:  # noqa: ANN001
        pass


async def _run(queue: ScriptedQueue, seconds: float) -> None:
    client = InteragencyPullClient(queue, receipts=Receipts(),
                                   options=PullClientOptions(in_flight=READERS, idle_poll_s=IDLE_S))
    stop = asyncio.Event()
    task = asyncio.create_task(client.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait_for(task, timeout=5)


async def test_an_empty_queue_is_polled_by_one_reader() -> None:
    queue = ScriptedQueue(messages=0)
    await _run(queue, 1.0)
    # One poller: about one GetRequest per (idle pause + round trip), ~18 in a second; eight readers made ~145.
    assert queue.calls <= 1.0 / IDLE_S + READERS, queue.calls
    assert queue.calls >= 5


async def test_messages_wake_every_reader_and_all_are_taken() -> None:
    queue = ScriptedQueue(messages=200)
    await _run(queue, 1.0)
    assert queue.left == 0 and len(queue.acked) == 200
    assert queue.most_in_flight == READERS
