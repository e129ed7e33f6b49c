"""Batched portal delivery: the reference portal's POST /envelopes/batch and the relay's batches over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from broker.delivery import outbox
from broker.delivery.destinations import PortalDestination
from broker.delivery.relay import Relay, RelayOptions
from broker.devtools.receivers import ReceiverLog, portal_receiver_app
from broker.domain.faults import DestinationOverflow, Failure, SignatureVerificationFault
from broker.infra.backoff import Backoff
from broker.infra.postgres import UnitOfWork
from tests.delivery_support import eventually, serving, signed_message, signing_pair

FAST = RelayOptions(backoff=Backoff(base_s=0.01, cap_s=0.05), idle_poll_s=0.01, max_attempts=50)


@pytest.fixture(scope="module")
def pair():
    return signing_pair()


@pytest.fixture
async def portal(db_pool, pair):
    """The reference portal; yields (receipts, single-envelope URL)."""
    receipts = ReceiverLog(db_pool, "portal")
    async with serving(portal_receiver_app(verifier=pair[1], receipts=receipts)) as base:
        yield receipts, f"{base}/envelopes"


async def _enqueue(pool, *messages):
    async with UnitOfWork(pool) as uow:
        await outbox.enqueue(uow.connection, messages)
        await uow.commit()


async def _received_soon_after_commit(db_pool, pair, receipts) -> None:
    """Commit one outbox row; the portal must have it within 2 s, long before a 60 s poll."""
    message = signed_message(pair[0])
    committed = time.monotonic()
    await _enqueue(db_pool, message)

    async def received() -> bool:
        return message.message_id in await receipts.message_ids()
    await eventually(received, timeout=10.0, every=0.02)
    assert time.monotonic() - committed < 2.0


def _batch(*messages) -> bytes:
    return json.dumps({"envelopes": [{"key": m.partition_key, "envelope": base64.b64encode(m.payload).decode()}
                                     for m in messages]}).encode()


async def test_a_batch_gets_a_receipt_per_envelope_and_is_recorded_in_one_transaction(db_pool, pair, portal):
    receipts, url = portal
    good = [signed_message(pair[0], partition_key=f"k{n}") for n in range(3)]
    forged = signed_message(signing_pair()[0], partition_key="k9")  # signed by a key the portal does not trust
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{url}/batch", content=_batch(good[0], forged, good[1], good[2]))
    assert answer.status_code == 200
    got = answer.json()["receipts"]
    assert [r["status"] for r in got] == ["received", "refused", "received", "received"]
    assert [r["message_id"] for r in got if r["status"] == "received"] == [str(m.message_id) for m in good]
    assert got[1]["code"] == SignatureVerificationFault.code
    rows = await db_pool.fetch("SELECT message_id, first_received_at FROM receiver_messages")
    assert {row["message_id"] for row in rows} == {m.message_id for m in good}
    assert len({row["first_received_at"] for row in rows}) == 1  # now() of one transaction
    assert (await receipts.report()).bad_signatures == 1


async def test_dedup_holds_across_the_single_endpoint_and_batches_and_within_a_batch(db_pool, pair, portal):
    receipts, url = portal
    first, second = signed_message(pair[0]), signed_message(pair[0])
    async with httpx.AsyncClient() as client:
        assert (await client.post(url, content=first.payload)).status_code == 200
        answer = await client.post(f"{url}/batch", content=_batch(first, second, second))
        again = await client.post(url, content=second.payload)
    assert [r["status"] for r in answer.json()["receipts"]] == ["duplicate", "received", "duplicate"]
    assert again.status_code == 409  # MessageIsAlreadySent: the batch's record counts for the single endpoint
    assert await receipts.message_ids() == {first.message_id: 2, second.message_id: 3}


async def test_after_a_retriable_refusal_the_portal_holds_back_the_rest_of_that_key(db_pool, pair):
    """The batch's order per key survives a retriable failure of one envelope (a trust store that is
    briefly unreadable, say): later envelopes of that key are not recorded, other keys are."""
    receipts = ReceiverLog(db_pool, "portal")
    a1, a2 = signed_message(pair[0], partition_key="a"), signed_message(pair[0], partition_key="a")
    b1 = signed_message(pair[0], partition_key="b")

    class Flaky:
        def verify(self, envelope):
            verified = pair[1].verify(envelope)
            if verified.header.message_id == a1.message_id:
                raise Failure("trust store unreadable")
            return verified

    async with serving(portal_receiver_app(verifier=Flaky(), receipts=receipts)) as base, httpx.AsyncClient() as client:
        answer = await client.post(f"{base}/envelopes/batch", content=_batch(a1, a2, b1))
    got = answer.json()["receipts"]
    assert [r["status"] for r in got] == ["refused", "refused", "received"]
    assert [r["code"] for r in got[:2]] == [Failure.code, Failure.code]
    assert await receipts.message_ids() == {b1.message_id: 1}


def _scripted_portal(refuse_once: set) -> tuple[FastAPI, list[list[bytes]]]:
    """A batch endpoint that records what each POST carried and refuses each payload in ``refuse_once``
    retriably the first time it sees it (DestinationOverflow), taking everything else."""
    app = FastAPI()
    posts: list[list[bytes]] = []

    @app.post("/envelopes/batch")
    async def receive(request: Request) -> JSONResponse:
        payloads = [base64.b64decode(item["envelope"]) for item in json.loads(await request.body())["envelopes"]]
        posts.append(payloads)
        out = []
        for payload in payloads:
            if payload in refuse_once:
                refuse_once.discard(payload)
                out.append({"message_id": None, "status": "refused", "code": DestinationOverflow.code,
                            "description": "queue full"})
            else:
                out.append({"message_id": None, "status": "received"})
        return JSONResponse({"receipts": out})

    return app, posts


async def test_a_refused_envelope_of_a_batch_is_retried_alone_and_its_key_keeps_order(db_pool, pair):
    first, later = signed_message(pair[0], partition_key="a"), signed_message(pair[0], partition_key="a")
    others = [signed_message(pair[0], partition_key=f"b{n}") for n in range(3)]
    await _enqueue(db_pool, first, later, *others)
    app, posts = _scripted_portal({first.payload})
    async with serving(app) as base:
        destination = PortalDestination(f"{base}/envelopes", batch_url=f"{base}/envelopes/batch")
        try:
            first_round = await Relay(db_pool, {"portal": destination}, options=FAST).run_once()
            assert (first_round.delivered, first_round.retried) == (3, 1)
            await asyncio.sleep(0.1)  # the retry's backoff
            assert await Relay(db_pool, {"portal": destination}, options=FAST).drain() == 2
        finally:
            await destination.close()
    assert len(posts) == 2
    assert set(posts[0]) == {first.payload, later.payload, *(m.payload for m in others)}
    assert posts[1] == [first.payload, later.payload]  # only the refused one again, with the key's rest after it
    statuses = await db_pool.fetch("SELECT message_id, status, attempts FROM outbox")
    assert {row["status"] for row in statuses} == {"delivered"}
    assert {row["message_id"]: row["attempts"] for row in statuses}[first.message_id] == 2


async def test_a_committed_row_wakes_the_relay_long_before_its_poll(db_pool, pair, portal):
    receipts, url = portal
    destination = PortalDestination(url, batch_url=f"{url}/batch")
    relay = Relay(db_pool, {"portal": destination}, options=dataclasses.replace(FAST, idle_poll_s=60.0))
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await asyncio.sleep(1.0)  # the relay found nothing and waits for its (long) poll
        await _received_soon_after_commit(db_pool, pair, receipts)
    finally:
        stop.set()
        await task
        await destination.close()


async def test_a_lost_listening_connection_is_replaced_and_wakes_the_relay_again(db_pool, pair, portal):
    receipts, url = portal
    destination = PortalDestination(url, batch_url=f"{url}/batch")
    options = dataclasses.replace(FAST, idle_poll_s=60.0, listen_check_s=0.2)
    relay = Relay(db_pool, {"portal": destination}, options=options)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))

    async def listener_pids() -> list[int]:
        return [row["pid"] for row in await db_pool.fetch(
            """SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
                 AND query IN ('SELECT 1', 'LISTEN "ejx_outbox"')""")]
    try:
        lost = (await eventually(listener_pids, timeout=10.0))[0]
        await db_pool.execute("SELECT pg_terminate_backend($1)", lost)

        async def replaced() -> bool:
            return any(pid != lost for pid in await listener_pids())
        await eventually(replaced, timeout=10.0)
        await _received_soon_after_commit(db_pool, pair, receipts)
    finally:
        stop.set()
        await task
        await destination.close()


@pytest.mark.parametrize(("status", "body"), [
    (413, b"<html>413 Request Entity Too Large</html>"),  # a proxy's body limit
    (400, b'{"code": "InvalidContent", "description": "the batch is not JSON"}'),  # the batch, not an envelope
])
async def test_a_refusal_of_the_whole_batch_kills_no_envelope_and_they_are_retried(db_pool, pair, status, body):
    messages = [signed_message(pair[0], partition_key=f"k{n}") for n in range(3)]
    await _enqueue(db_pool, *messages)
    refusals = [status]
    app = FastAPI()

    @app.post("/envelopes/batch")
    async def receive(request: Request):
        if refusals:
            return Response(body, status_code=refusals.pop(), media_type="application/json" if body[:1] == b"{"
                            else "text/html")
        count = len(json.loads(await request.body())["envelopes"])
        return JSONResponse({"receipts": [{"message_id": None, "status": "received"}] * count})
    async with serving(app) as base:
        destination = PortalDestination(f"{base}/envelopes", batch_url=f"{base}/envelopes/batch")
        try:
            refused = await Relay(db_pool, {"portal": destination}, options=FAST).run_once()
            assert (refused.delivered, refused.retried, refused.dead) == (0, 3, 0)
            await asyncio.sleep(0.1)  # the retry's backoff
            assert await Relay(db_pool, {"portal": destination}, options=FAST).drain() == 3
        finally:
            await destination.close()
    assert {row["status"] for row in await db_pool.fetch("SELECT status FROM outbox")} == {"delivered"}


@pytest.mark.parametrize("receipts", [
    [{"message_id": None, "status": "received"}, {"message_id": None, "status": "queued"},
     {"message_id": None, "status": "received"}],  # a status the relay does not know
    [{"message_id": None, "status": "received"}] * 2,  # one receipt short
], ids=["unknown-status", "receipt-missing"])
async def test_a_batch_answer_that_does_not_vouch_for_every_envelope_delivers_none_of_them(db_pool, pair, receipts):
    """Only "received", "duplicate" or a refusal's code is a verdict on an envelope: an answer without one for each
    is no proof that the portal holds any of them, so the whole batch stays pending and goes again."""
    messages = [signed_message(pair[0], partition_key=f"k{n}") for n in range(3)]
    await _enqueue(db_pool, *messages)
    app = FastAPI()

    @app.post("/envelopes/batch")
    async def receive(request: Request) -> JSONResponse:
        return JSONResponse({"receipts": receipts})
    async with serving(app) as base:
        destination = PortalDestination(f"{base}/envelopes", batch_url=f"{base}/envelopes/batch")
        try:
            answered = await Relay(db_pool, {"portal": destination}, options=FAST).run_once()
        finally:
            await destination.close()
    assert (answered.delivered, answered.retried, answered.dead) == (0, 3, 0)
    rows = await db_pool.fetch("SELECT status, last_error FROM outbox")
    assert {row["status"] for row in rows} == {"pending"}
    assert all("without its receipts" in row["last_error"] for row in rows)
