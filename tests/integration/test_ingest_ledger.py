"""The ingest ledger under concurrent claims of the same keys, on a real PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from adapters.ingest import event_id_for
from adapters.ledger import IngestLedger, LedgerEntry

pytestmark = pytest.mark.postgres

CLAIMERS = 8
ROUNDS = 25


def entry(key: str) -> LedgerEntry:
    return LedgerEntry(key, event_id_for(key), "vendor-a", f"record-{key}", 1, "GradePosted", "school-1")


async def test_concurrent_claims_of_one_key_are_one_claim_and_duplicates(db_pool):
    """Every key is unique twice (idempotency_key and event_id): racing inserts must meet on either as a
    duplicate, never as a UniqueViolationError."""
    ledger = IngestLedger(db_pool)

    async def claim(key: str) -> tuple[int, dict]:
        async with ledger.claim([entry(key)]) as outcome:
            await asyncio.sleep(0)  # the produce step: the claim stays open meanwhile
            return len(outcome.fresh), outcome.known

    for round_ in range(ROUNDS):
        key = f"race-{round_}"
        outcomes = await asyncio.gather(*(claim(key) for _ in range(CLAIMERS)))
        assert sum(fresh for fresh, _ in outcomes) == 1
        assert all(known == {key: event_id_for(key)} for fresh, known in outcomes if not fresh)
