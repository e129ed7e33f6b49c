"""SMEV 3 round trips: GetRequest → Ack per second against a running endpoint, beside the bare queue's take → ack.

    .venv/bin/python -m bench.smev3_bench [--messages 400] [--concurrency 8]

Uses the configured PostgreSQL (Settings) and a scratch database it removes
afterwards. ejx's SMEV 3 endpoint is served by uvicorn in this process; the
reference client (:mod:`broker.smev3.client`, GOST keys) runs in this process too,
so the figure is a lower bound: each round trip is two GOST signatures by the
client, two verified by ejx, two verified by the client, one UPDATE each way. The
baseline takes and acknowledges the same number of messages straight from the
queue (the same SQL, no HTTP, XML or signatures) at the same concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from rich.console import Console
from rich.table import Table

from broker.access.participants import CertificateFacts, Participants
from broker.delivery.outbox import OutboxMessage
from broker.devtools.scratch import create_database, drop_database, scratch_name
from broker.infra.postgres import create_pool
from broker.ops import logs
from broker.settings import Settings
from broker.smev3.client import Smev3Client
from broker.smev3.codec import Version
from broker.smev3.exchange import MessageExchange
from broker.smev3.outgoing import RequestMessages
from broker.smev3.queue import SmevQueue
from broker.smev3.service import smev3_router
from broker.xml import hardened
from broker.xml.envelope import build_envelope
from broker.xml.signing import SigningKey, gost

EVENT = (Path(__file__).resolve().parents[1] / "schemas" / "examples" / "events" / "valid"
         / "TermGradeFinalized.xml").read_bytes()


async def fill(queue: SmevQueue, key: SigningKey, recipient: str, count: int) -> None:
    """``count`` messages in ``recipient``'s queue, built and signed as the relay does."""
    messages = RequestMessages(key)
    for n in range(count):
        message_id = uuid.uuid1()
        envelope = build_envelope(EVENT, recipient=recipient, message_id=message_id)
        await queue.put([messages.build(OutboxMessage(
            id=n, message_id=message_id, destination="interagency", partition_key=str(n),
            payload=hardened.to_bytes(envelope), recipient=recipient, message_type="TermGradeFinalized",
            attempts=1, lease_id=uuid.uuid4()))])


async def soap_round_trips(base: str, key: SigningKey, trusted: bytes, count: int, concurrency: int) -> float:
    client = Smev3Client(f"{base}/smev3/1.2", key, trusted=frozenset({trusted}))
    done = 0

    async def reader() -> None:
        nonlocal done
        while done < count:
            pulled = await client.get_request()
            if pulled is None:
                return
            assert pulled.message is not None, pulled.refusal
            await client.ack(pulled.message_id)
            done += 1

    started = time.perf_counter()
    try:
        await asyncio.gather(*(reader() for _ in range(concurrency)))
    finally:
        await client.aclose()
    assert done == count, f"only {done} of {count} round trips"
    return count / (time.perf_counter() - started)


async def raw_round_trips(queue: SmevQueue, recipient: str, count: int, concurrency: int) -> float:
    done = 0

    async def reader() -> None:
        nonlocal done
        while (handed := await queue.take(recipient=recipient, version=Version.V1_2,
                                          received=b"<GetRequest/>")) is not None:
            await queue.ack(recipient=recipient, message_id=handed.message_id, accepted=True, received=b"<Ack/>")
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(reader() for _ in range(concurrency)))
    assert done == count
    return count / (time.perf_counter() - started)


async def main(messages: int, concurrency: int, port: int) -> None:
    settings = Settings()
    logs.configure("warning")
    name = scratch_name()
    dsn = await create_database(settings, name)
    pool = await create_pool(settings.model_copy(update={"database_url": dsn}), max_size=concurrency + 4)
    try:
        ejx_key = SigningKey.from_pem(*gost.generate_key_and_certificate("ejx SMEV (bench)"))
        agency_key_pem, agency_cert = gost.generate_key_and_certificate("RSMEV (bench)")
        agency = SigningKey.from_pem(agency_key_pem, agency_cert)
        await Participants(pool).add("RSMEV", CertificateFacts.from_pem(agency_cert))
        queue = SmevQueue(pool)
        await fill(queue, ejx_key, "RSMEV", messages)
        await fill(queue, ejx_key, "BASELINE", messages)
        app = FastAPI()
        app.include_router(smev3_router(MessageExchange(queue=queue, participants=Participants(pool))))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                               access_log=False, lifespan="off"))
        running = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        try:
            soap = await soap_round_trips(f"http://127.0.0.1:{port}", agency, ejx_key.certificate_der, messages,
                                          concurrency)
        finally:
            server.should_exit = True
            await running
        raw = await raw_round_trips(queue, "BASELINE", messages, concurrency)
    finally:
        await pool.close()
        await drop_database(settings, name)
    table = Table(title=f"SMEV 3 GetRequest → Ack, {messages} messages, {concurrency} in flight")
    for column in ("path", "round trips/s", "vs raw"):
        table.add_column(column, justify="right")
    table.add_row("SOAP + GOST (reference client ↔ ejx)", f"{soap:,.0f}", f"{soap / raw:.2f}")
    table.add_row("raw queue take → ack (SQL only)", f"{raw:,.0f}", "1.00")
    Console().print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--port", type=int, default=18341)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.messages, arguments.concurrency, arguments.port))
