"""The message log's hash chain, pure: the documented encoding, sealing, and the first break named."""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from broker.audit.chain import (
    GENESIS,
    ChainCheck,
    Direction,
    Entry,
    Head,
    Kind,
    record_hash,
    seal,
)

AT = datetime(2026, 10, 5, 6, 15, 0, 123456, tzinfo=UTC)


def entries(n: int, *, participant: str = "EPGU") -> list[Entry]:
    return [Entry(Direction.OUT, participant, uuid.UUID(int=i + 1), Kind.ENVELOPE, f"<e n='{i}'/>".encode())
            for i in range(n)]


def _walk(check: ChainCheck, records):
    """Feed records until the first break, as every verifier does."""
    for record in records:
        found = check.feed(record)
        if found is not None:
            return found
    return None


def test_record_hash_follows_the_documented_encoding_byte_for_byte():
    (record,) = seal([Entry(Direction.IN, "RSMEV", uuid.UUID("6f1c2a34-0f0e-11ef-9a2b-0242ac120002"),
                            Kind.SMEV3_REQUEST, b"<req/>")], after=Head(), at=AT)
    fields = [b"1", b"2026-10-05T06:15:00.123456Z", b"in", b"RSMEV", b"6f1c2a34-0f0e-11ef-9a2b-0242ac120002",
              b"smev3-request", hashlib.sha256(b"<req/>").digest(), bytes(32)]
    expected = hashlib.sha256(b"ejx-message-log/1" + b"".join(struct.pack(">I", len(f)) + f for f in fields))
    assert record.record_hash == expected.digest()
    assert record.payload_sha256 == hashlib.sha256(b"<req/>").digest()


def test_field_boundaries_cannot_be_shifted_under_the_same_hash():
    (a,) = seal([Entry(Direction.OUT, "AB", uuid.UUID(int=1), "C", b"x")], after=Head(), at=AT)
    (b,) = seal([Entry(Direction.OUT, "A", uuid.UUID(int=1), "BC", b"x")], after=Head(), at=AT)
    assert a.record_hash != b.record_hash


def test_the_same_instant_in_moscow_time_hashes_as_in_utc():
    (a,) = seal(entries(1), after=Head(), at=AT)
    (b,) = seal(entries(1), after=Head(), at=AT.astimezone(ZoneInfo("Europe/Moscow")))
    assert a.record_hash == b.record_hash


def test_seal_chains_from_the_head_and_never_runs_time_backwards():
    first = seal(entries(3), after=Head(), at=AT)
    assert [r.sequence for r in first] == [1, 2, 3]
    assert first[0].previous_hash == GENESIS
    assert [r.previous_hash for r in first[1:]] == [r.record_hash for r in first[:-1]]
    assert all(record_hash(r) == r.record_hash for r in first)
    head = Head(3, first[-1].record_hash, AT)
    second = seal(entries(2), after=head, at=AT - timedelta(seconds=5))  # the clock stepped back
    assert [r.sequence for r in second] == [4, 5] and second[0].previous_hash == first[-1].record_hash
    assert all(r.recorded_at == AT for r in second)


def test_a_sound_chain_walks_to_its_end():
    records = seal(entries(5), after=Head(), at=AT)
    check = ChainCheck()
    assert _walk(check, records) is None
    assert check.end(Head(5, records[-1].record_hash)) is None
    assert check.checked == 5


def _first_break(records, *, end: Head | None = None):
    check = ChainCheck()
    found = _walk(check, records)
    return found if found is not None or end is None else check.end(end)


def test_each_kind_of_tampering_names_the_first_broken_record():
    records = seal(entries(6), after=Head(), at=AT)
    end = Head(6, records[-1].record_hash)

    payload = list(records)
    payload[2] = dataclasses.replace(records[2], payload=records[2].payload.replace(b"2", b"9"))
    assert (_first_break(payload).sequence, "payload" in _first_break(payload).reason) == (3, True)

    field = list(records)
    field[3] = dataclasses.replace(records[3], participant="RSMEV")
    assert (_first_break(field).sequence, "record hash" in _first_break(field).reason) == (4, True)

    rehashed = list(records)  # a forger recomputes record 2's hash: record 3 no longer chains to it
    forged = dataclasses.replace(records[1], participant="RSMEV")
    rehashed[1] = dataclasses.replace(forged, record_hash=record_hash(forged))
    assert (_first_break(rehashed).sequence, "previous hash" in _first_break(rehashed).reason) == (3, True)

    deleted = records[:3] + records[4:]
    assert (_first_break(deleted).sequence, "missing" in _first_break(deleted).reason) == (4, True)

    swapped = [records[0], records[2], records[1], *records[3:]]
    assert _first_break(swapped).sequence == 2

    repeated = records[:3] + [records[2]] + records[3:]
    assert (_first_break(repeated).sequence, "repeated" in _first_break(repeated).reason) == (3, True)

    truncated = _first_break(records[:4], end=end)
    assert (truncated.sequence, "missing" in truncated.reason) == (5, True)


def test_a_record_older_than_its_predecessor_is_a_break():
    early = seal(entries(1), after=Head(), at=AT)
    late = seal(entries(1), after=Head(1, early[0].record_hash), at=AT - timedelta(seconds=1))[0]
    # seal clamps only against the head's time; a head without one lets the forged time through
    found = _walk(ChainCheck(), [early[0], late])
    assert found.sequence == 2 and "recorded before" in found.reason


def test_a_chain_can_be_checked_from_an_archive_boundary():
    records = seal(entries(8), after=Head(), at=AT)
    check = ChainCheck(Head(5, records[4].record_hash), where="live")
    assert _walk(check, records[5:]) is None
    wrong_anchor = _walk(ChainCheck(Head(5, GENESIS)), records[5:])
    assert wrong_anchor.sequence == 6 and "previous hash" in wrong_anchor.reason
    assert str(wrong_anchor).startswith("database: record 6: ")
