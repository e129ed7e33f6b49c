"""The SMEV-style pull queue over real HTTP: oldest first, visibility timeout, acks, unknown MessageIDs."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from broker.delivery.pull_queue import (
    ACK_PATH,
    GET_MESSAGE_PATH,
    PullQueue,
    PullQueueOptions,
    pull_queue_router,
)
from broker.xml.envelope import new_message_id
from tests.delivery_support import eventually, serving


@pytest.fixture
async def queue_client(db_pool):
    queue = PullQueue(db_pool, options=PullQueueOptions(visibility_timeout_s=0.3))
    app = FastAPI()
    app.include_router(pull_queue_router(queue))
    async with serving(app) as base, httpx.AsyncClient(base_url=base) as client:
        yield queue, client


async def _put(queue, recipient="RSMEV", message_type="TermGradeFinalized"):
    message_id = new_message_id()
    await queue.put(message_id=message_id, recipient=recipient, message_type=message_type,
                    payload=f"<Envelope id='{message_id}'/>".encode())
    return message_id


def _id(response: httpx.Response) -> str | None:
    return response.headers.get("X-Ejx-Message-Id") if response.status_code == 200 else None


async def test_oldest_first_per_recipient_and_type_then_204(queue_client):
    queue, client = queue_client
    first, other, second = await _put(queue), await _put(queue, recipient="EDU77"), await _put(queue)
    special = await _put(queue, message_type="GradePosted")

    got = await client.post(GET_MESSAGE_PATH, json={"recipient": "RSMEV", "message_type": "GradePosted"})
    assert _id(got) == str(special)
    assert got.headers["content-type"].startswith("application/xml") and str(special).encode() in got.content
    assert _id(await client.post(GET_MESSAGE_PATH, json={"recipient": "RSMEV"})) == str(first)
    assert _id(await client.post(GET_MESSAGE_PATH, json={"recipient": "RSMEV"})) == str(second)
    assert (await client.post(GET_MESSAGE_PATH, json={"recipient": "RSMEV"})).status_code == 204
    assert _id(await client.post(GET_MESSAGE_PATH, json={"recipient": "EDU77"})) == str(other)


async def test_unacknowledged_envelope_comes_back_after_the_visibility_timeout(queue_client):
    queue, client = queue_client
    message_id = await _put(queue)
    assert _id(await client.post(GET_MESSAGE_PATH, json={"recipient": "RSMEV"})) == str(message_id)
    assert (await client.post(GET_MESSAGE_PATH, json={"recipient": "RSMEV"})).status_code == 204

    async def handed_out_again():
        return _id(await client.post(GET_MESSAGE_PATH, json={"recipient": "RSMEV"}))
    assert await eventually(handed_out_again, timeout=30) == str(message_id)


async def test_acknowledged_envelope_never_comes_back(queue_client, db_pool):
    queue, client = queue_client
    accepted, refused = await _put(queue), await _put(queue)
    for message_id, verdict in ((accepted, True), (refused, False)):
        assert _id(await client.post(GET_MESSAGE_PATH, json={"recipient": "RSMEV"})) == str(message_id)
        ack = await client.post(ACK_PATH, json={"message_id": str(message_id), "accepted": verdict})
        assert ack.status_code == 200
    # Repeating an Ack (its answer was lost) is harmless.
    assert (await client.post(ACK_PATH, json={"message_id": str(accepted), "accepted": True})).status_code == 200

    # Wait until both visibility timeouts are certainly over, judged by the database's clock.
    async def timeouts_over():
        return await db_pool.fetchval("SELECT bool_and(visible_at < now()) FROM smev_queue")
    await eventually(timeouts_over, timeout=30)
    assert (await client.post(GET_MESSAGE_PATH, json={"recipient": "RSMEV"})).status_code == 204
    rows = await db_pool.fetch("SELECT message_id, accepted, deliveries FROM smev_queue ORDER BY seq")
    assert [(r["message_id"], r["accepted"], r["deliveries"]) for r in rows] == [(accepted, True, 1),
                                                                                 (refused, False, 1)]


async def test_ack_of_an_unknown_message_is_target_message_is_not_found(queue_client):
    _, client = queue_client
    answer = await client.post(ACK_PATH, json={"message_id": str(new_message_id()), "accepted": True})
    assert answer.status_code == 404
    assert answer.json()["code"] == "TargetMessageIsNotFound"


async def test_malformed_requests_are_refused_in_the_fault_shape(queue_client):
    _, client = queue_client
    for answer in (await client.post(GET_MESSAGE_PATH, json={}),
                   await client.post(ACK_PATH, json={"message_id": "not-a-uuid"})):
        assert answer.status_code == 400
        body = answer.json()
        assert body["code"] == "InvalidContent" and body["retriable"] is False
        assert body["details"]["errors"], body
