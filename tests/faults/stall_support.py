"""What the stall tests share: a served relay's limits scaled down, a backlog for both destinations, the
order check."""

from __future__ import annotations

import asyncpg

from broker.delivery import outbox
from broker.infra.postgres import UnitOfWork
from broker.xml import hardened
from broker.xml.envelope import build_envelope, new_message_id, read_envelope
from tests.delivery_support import term_grade_xml

LEASE_S = 4.0
GRACE_S = 3.0
LIMITS = {"EJX_RELAY_LEASE_S": str(LEASE_S), "EJX_DB_STATEMENT_TIMEOUT_S": "2", "EJX_DB_COMMAND_TIMEOUT_S": "3",
          "EJX_DB_CONNECT_TIMEOUT_S": "2", "EJX_DB_IDLE_IN_TRANSACTION_TIMEOUT_S": "5",
          "EJX_SHUTDOWN_GRACE_S": str(GRACE_S), "EJX_HTTP_GRACE_S": "1"}
"""Production's order of limits (statement < command timeout < lease), scaled down."""


async def backlog(pool: asyncpg.Pool, phase: int, *, keys: int = 3, per_key: int = 5) -> int:
    """Due rows for both destinations, ``per_key`` for each of ``keys`` keys; how many."""
    rows = []
    for key in range(keys):
        for n in range(per_key):
            record = f"stall-{phase}-{key}-{n}-{new_message_id().hex[:8]}"
            envelope = build_envelope(term_grade_xml(record), recipient="RSMEV")
            header, _ = read_envelope(envelope)
            rows.append(outbox.NewMessage(message_id=header.message_id, destination="interagency",
                                          partition_key=f"sch-{key}", payload=hardened.to_bytes(envelope),
                                          recipient="RSMEV", message_type="TermGradeFinalized"))
            rows.append(outbox.NewMessage(message_id=new_message_id(), destination="portal",
                                          partition_key=f"sch-{key}", payload=b"<Envelope/>", recipient="EPGU",
                                          message_type="GradePosted"))
    async with UnitOfWork(pool) as uow:
        await outbox.enqueue(uow.connection, rows)
        await uow.commit()
    return len(rows)


async def first_copies_in_key_order(pool: asyncpg.Pool, destination: str, received: list) -> bool:
    """Whether each key's rows first reached the receiver in outbox order (repeats ignored)."""
    rows = await pool.fetch("SELECT message_id, partition_key FROM outbox WHERE destination = $1 ORDER BY id",
                            destination)
    key_of = {r["message_id"]: r["partition_key"] for r in rows}
    first = list(dict.fromkeys(m for m in received if m in key_of))
    return all([m for m in first if key_of[m] == key] == [r["message_id"] for r in rows if r["partition_key"] == key]
               for key in set(key_of.values()))
