"""Chains: one key's claimed rows in delivery order, and how they travel to their destination.

A chain is delivered in order and ends at its first failed row: the rows after it are
untried and stay leased until recorded, so nothing of the key overtakes the failure. A
destination that takes batches gets several keys' chains in one call (a delivery), each
chain still in order within it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from broker.delivery.outbox import OutboxMessage
from broker.domain.faults import Fault

Chain = list[OutboxMessage]
ChainOutcome = tuple[Chain, "tuple[OutboxMessage, Fault] | None", Chain]
"""One key's chain after delivery: (delivered, the one that failed with its fault, untried after it)."""
Delivery = list[Chain]
"""Chains handed to one destination together: one chain, or several in one batch."""


def chains(claimed: Sequence[OutboxMessage]) -> list[Chain]:
    """Claimed rows grouped per (destination, partition_key), each group in delivery order."""
    grouped: dict[tuple[str, str], Chain] = {}
    for message in claimed:
        grouped.setdefault((message.destination, message.partition_key), []).append(message)
    return list(grouped.values())


def deliveries(claimed_chains: Sequence[Chain], max_batch: Callable[[str], int]) -> list[Delivery]:
    """Chains grouped per destination into batches of up to ``max_batch(destination)`` rows (a longer chain
    travels alone); a destination that takes one row at a time gets each chain on its own."""
    out: list[Delivery] = []
    open_batches: dict[str, tuple[Delivery, int]] = {}
    for chain in claimed_chains:
        destination = chain[0].destination
        limit = max_batch(destination)
        if limit <= 1:
            out.append([chain])
            continue
        batch, size = open_batches.get(destination, ([], limit))
        if size + len(chain) > limit:
            batch, size = [], 0
            out.append(batch)
        batch.append(chain)
        open_batches[destination] = (batch, size + len(chain))
    return out


def batch_outcomes(delivery: Delivery, faults: Sequence[Fault | None]) -> list[ChainOutcome]:
    """Per chain of a batch, given each row's fault (None: delivered) in the batch's order."""
    outcomes: list[ChainOutcome] = []
    position = 0
    for chain in delivery:
        own = faults[position:position + len(chain)]
        position += len(chain)
        failed = next((index for index, fault in enumerate(own) if fault is not None), None)
        outcomes.append((chain, None, []) if failed is None else
                        (chain[:failed], (chain[failed], own[failed]), chain[failed + 1:]))
    return outcomes
