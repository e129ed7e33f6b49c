"""How claimed rows become chains and batches, and what a batch's faults mean per chain."""

from __future__ import annotations

import uuid

from broker.delivery.chains import batch_outcomes, chains, deliveries
from broker.delivery.outbox import OutboxMessage
from broker.domain.faults import DestinationOverflow


def _row(n: int, key: str, destination: str = "portal") -> OutboxMessage:
    return OutboxMessage(id=n, message_id=uuid.uuid4(), destination=destination, partition_key=key, payload=b"",
                         recipient="EPGU", message_type="GradePosted", attempts=1, lease_id=uuid.uuid4())


def test_chains_keep_each_keys_rows_in_claim_order():
    rows = [_row(1, "a"), _row(2, "b"), _row(3, "a"), _row(4, "a", "interagency")]
    assert [[r.id for r in chain] for chain in chains(rows)] == [[1, 3], [2], [4]]


def test_a_batching_destination_gets_chains_together_up_to_its_limit_and_others_one_chain_each():
    rows = [_row(1, "a"), _row(2, "a"), _row(3, "b"), _row(4, "c"), _row(5, "c"), _row(6, "c"),
            _row(7, "x", "interagency"), _row(8, "y", "interagency")]
    limits = {"portal": 4, "interagency": 1}
    grouped = deliveries(chains(rows), limits.__getitem__)
    assert [[[r.id for r in chain] for chain in delivery] for delivery in grouped] == [
        [[1, 2], [3]], [[4, 5, 6]], [[7]], [[8]]]


def test_in_a_batch_each_chain_ends_at_its_own_first_failure():
    a1, a2, a3, b1, c1 = _row(1, "a"), _row(2, "a"), _row(3, "a"), _row(4, "b"), _row(5, "c")
    fault = DestinationOverflow("queue full")
    outcomes = batch_outcomes([[a1, a2, a3], [b1], [c1]], [None, fault, None, None, None])
    assert outcomes == [([a1], (a2, fault), [a3]), ([b1], None, []), ([c1], None, [])]
