"""The interagency destination takes the relay's rows in batches: one topic flush, one signing call, one
queue transaction and one message-log append per batch, in the rows' order, nothing signed twice."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from broker.delivery.destinations import InteragencyDestination
from broker.delivery.outbox import OutboxMessage
from broker.delivery.relay import Relay
from broker.domain.faults import Fault
from broker.smev3.outgoing import RequestMessages
from broker.smev3.queue import SmevQueue
from broker.smev3.wire import Version
from tests.delivery_support import term_grade_xml
from tests.integration.router_support import (  # noqa: F401  (fixtures)
    pair,
    pipeline,
    read_all,
    run_until,
    schemas,
)
from tests.smev3_support import gost_pair

RECORDS, VERSIONS = 4, 3
ROWS = RECORDS * VERSIONS


async def _interagency_rows(pool) -> list[OutboxMessage]:
    rows = await pool.fetch(
        """SELECT id, message_id, destination, partition_key, payload, recipient, message_type
           FROM outbox WHERE destination = 'interagency' ORDER BY id""")
    return [OutboxMessage(**dict(row), attempts=1, lease_id=uuid.uuid4()) for row in rows]


async def test_a_batch_is_enqueued_in_order_with_one_log_append_and_held_messages_keep_their_signatures(pipeline):
    # Each record's versions are one chain (one ordering key), delivered in order; records in parallel.
    await pipeline.produce(*(term_grade_xml(f"tg-{n}", version=v) for v in range(1, VERSIONS + 1)
                             for n in range(RECORDS)))

    async def routed() -> bool:
        return await pipeline.pool.fetchval(
            "SELECT count(*) FROM outbox WHERE destination = 'interagency'") == ROWS
    await run_until(pipeline.router(), routed)
    rows = await _interagency_rows(pipeline.pool)
    key = gost_pair("ejx SMEV").key
    queue = SmevQueue(pipeline.pool)
    # An earlier attempt enqueued the first row, then died before the outbox heard of it.
    earlier = RequestMessages(key).build(rows[0])
    assert await queue.put([earlier]) == {rows[0].message_id}

    destination = InteragencyDestination(producer=pipeline.producer, topic=pipeline.settings.interagency_topic,
                                          queue=queue, messages=RequestMessages(key))
    assert await Relay(pipeline.pool, {"interagency": destination}).drain() == ROWS

    queued = await pipeline.pool.fetch("SELECT message_id, message_1_2, message_1_3 FROM smev_queue ORDER BY seq")
    position = {row["message_id"]: n for n, row in enumerate(queued)}
    assert set(position) == {row.message_id for row in rows}
    for chain_key in {row.partition_key for row in rows}:
        chain = [position[row.message_id] for row in rows if row.partition_key == chain_key]
        assert chain == sorted(chain), f"{chain_key} enqueued out of order"
    assert (queued[0]["message_1_2"], queued[0]["message_1_3"]) == (earlier.messages[Version.V1_2],
                                                                    earlier.messages[Version.V1_3])
    # Both versions of every message logged once; the batch's records share one append (one timestamp).
    logged = await pipeline.pool.fetch(
        """SELECT message_id, recorded_at FROM message_log WHERE kind = 'smev3-request' ORDER BY sequence""")
    assert sorted(str(row["message_id"]) for row in logged) == sorted(
        str(row.message_id) for row in rows for _ in Version)
    assert len({row["recorded_at"] for row in logged}) == 2  # the earlier attempt's append and the batch's
    on_topic = await read_all(pipeline.settings, pipeline.settings.interagency_topic)
    # Every row goes to the topic (its readers de-duplicate), in the order the batch enqueued them.
    sent = [uuid.UUID(dict(record.headers)["message_id"].decode()) for record in on_topic]
    assert sorted(sent) == sorted(row.message_id for row in rows)
    assert [m for m in sent if m != rows[0].message_id] == [row["message_id"] for row in queued[1:]]


async def test_a_batch_with_one_bad_row_fails_whole_and_enqueues_nothing(pipeline):
    await pipeline.produce(*(term_grade_xml(f"tg-{n}") for n in range(3)))

    async def routed() -> bool:
        return await pipeline.pool.fetchval(
            "SELECT count(*) FROM outbox WHERE destination = 'interagency'") == 3
    await run_until(pipeline.router(), routed)
    rows = await _interagency_rows(pipeline.pool)
    rows[-1] = replace(rows[-1], payload=b"<NotAnEnvelope/>")
    destination = InteragencyDestination(producer=pipeline.producer, topic=pipeline.settings.interagency_topic,
                                          queue=SmevQueue(pipeline.pool), messages=RequestMessages(gost_pair("x").key))
    with pytest.raises(Fault):
        await destination.deliver_batch(rows)
    assert await pipeline.pool.fetchval("SELECT count(*) FROM smev_queue") == 0
    assert await pipeline.pool.fetchval("SELECT count(*) FROM message_log WHERE kind = 'smev3-request'") == 0
