"""The message log's records and their hash chain: pure code, shared by the database and the archives.

A record's hash is SHA-256 over a canonical encoding of all its fields, the
previous record's hash included, so changing, removing or reordering any record
breaks the chain from there on. The encoding (version 1), for anyone writing a
verifier of their own::

    b"ejx-message-log/1", then for each field in this order a 4-byte big-endian
    length followed by the field's bytes:
      sequence        decimal ASCII, no leading zeros
      recorded_at     UTC, "YYYY-MM-DDTHH:MM:SS.ffffffZ"
      direction       "out" (signed or sent by ejx) | "in" (received by ejx)
      participant     UTF-8 mnemonic, e.g. "EPGU"
      message_id      lowercase hyphenated UUID
      kind            ASCII, e.g. "envelope", "smev3-request"
      payload_sha256  32 raw bytes
      previous_hash   32 raw bytes; the first record's is 32 zero bytes

Length prefixes (rather than separators) make the encoding injective whatever a
participant name contains.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

FORMAT = b"ejx-message-log/1"
GENESIS = bytes(32)
"""The previous hash of record 1."""


class Direction(StrEnum):
    """Which way the message went, seen from ejx."""

    OUT = "out"
    """Signed or sent by ejx."""
    IN = "in"
    """Received by ejx, signed by the participant."""


class Kind(StrEnum):
    """What the logged bytes are."""

    ENVELOPE = "envelope"
    """ejx's own signed envelope (portal push, interagency topic and pull queue)."""
    SMEV3_REQUEST = "smev3-request"
    SMEV3_RESPONSE = "smev3-response"
    SMEV3_RECEIPT = "smev3-receipt"
    """SendRequestResponse: ejx's signed receipt of a request, before its response."""
    SMEV3_TAKE = "smev3-take"
    """A participant's signed GetRequest or GetResponse that took a message the first time."""
    ACK = "ack"


@dataclass(frozen=True)
class Entry:
    """One message a writer appends, exactly as it was signed or received."""

    direction: Direction
    participant: str
    """The other side's mnemonic: the recipient of what ejx sent, the sender of what it received."""
    message_id: uuid.UUID
    kind: Kind
    payload: bytes
    """The exact bytes on the wire; their SHA-256 is chained, the bytes are kept until retention."""


@dataclass(frozen=True)
class Record:
    """One link of the chain, as stored in PostgreSQL and in archives."""

    sequence: int
    recorded_at: datetime
    direction: str
    participant: str
    message_id: uuid.UUID
    kind: str
    payload_sha256: bytes
    previous_hash: bytes
    record_hash: bytes
    payload: bytes


@dataclass(frozen=True)
class Head:
    """The end of a chain so far: the next record must have ``sequence + 1`` and chain to ``hash``."""

    sequence: int = 0
    hash: bytes = GENESIS
    recorded_at: datetime | None = None
    """No record may be older than this (times never run backwards along the chain)."""


@dataclass(frozen=True)
class Break:
    """The first place a chain stops being trustworthy."""

    sequence: int | None
    """The first broken record; None when the fault is not in a record (an archive's manifest, say)."""
    reason: str
    where: str = "database"
    """An archive's file name, or "database" for the live table."""

    def __str__(self) -> str:
        record = f"record {self.sequence}" if self.sequence is not None else "archive"
        return f"{self.where}: {record}: {self.reason}"


def utc_text(moment: datetime) -> str:
    """The one textual form of a record's time (microseconds, UTC, "Z")."""
    if moment.tzinfo is None:
        raise ValueError("a record's time must carry a zone")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(*, sequence: int, recorded_at: datetime, direction: str, participant: str,
              message_id: uuid.UUID, kind: str, payload_sha256: bytes, previous_hash: bytes) -> bytes:
    """The bytes a record's hash is taken over (see the module docstring)."""
    fields = (str(sequence).encode(), utc_text(recorded_at).encode(), direction.encode(), participant.encode(),
              str(message_id).encode(), kind.encode(), payload_sha256, previous_hash)
    return FORMAT + b"".join(len(field).to_bytes(4, "big") + field for field in fields)


def record_hash(record: Record) -> bytes:
    """What ``record.record_hash`` must be, recomputed from its other fields."""
    return hashlib.sha256(canonical(
        sequence=record.sequence, recorded_at=record.recorded_at, direction=record.direction,
        participant=record.participant, message_id=record.message_id, kind=record.kind,
        payload_sha256=record.payload_sha256, previous_hash=record.previous_hash)).digest()


def seal(entries: Sequence[Entry], *, after: Head, at: datetime) -> list[Record]:
    """Chain ``entries`` onto ``after``, all recorded at ``at`` (never earlier than the head's time)."""
    if after.recorded_at is not None and at < after.recorded_at:
        at = after.recorded_at
    records, previous = [], after.hash
    for offset, entry in enumerate(entries, start=1):
        digest = hashlib.sha256(entry.payload).digest()
        fields = dict(sequence=after.sequence + offset, recorded_at=at, direction=str(entry.direction),
                      participant=entry.participant, message_id=entry.message_id, kind=str(entry.kind),
                      payload_sha256=digest, previous_hash=previous)
        previous = hashlib.sha256(canonical(**fields)).digest()
        records.append(Record(**fields, record_hash=previous, payload=entry.payload))
    return records


class ChainCheck:
    """Walks records in chain order from an anchor and names the first that breaks it.

    Everything after a break is suspect by construction, so callers stop at the
    first :class:`Break` :meth:`feed` returns.
    """

    def __init__(self, anchor: Head = Head(), *, where: str = "database") -> None:
        self.head = anchor
        """The last record found sound (or the anchor)."""
        self.where = where
        self.checked = 0

    def feed(self, record: Record) -> Break | None:
        """Check one record against the head; on success it becomes the head."""
        expected = self.head.sequence + 1
        if record.sequence > expected:
            return self._break(expected, f"missing (the next record present is {record.sequence})")
        if record.sequence < expected:
            return self._break(record.sequence, f"out of order or repeated (expected record {expected})")
        if hashlib.sha256(record.payload).digest() != record.payload_sha256:
            return self._break(record.sequence, "payload bytes do not match the record's payload SHA-256")
        if record.previous_hash != self.head.hash:
            return self._break(record.sequence, f"previous hash does not match the hash of record {expected - 1}")
        if record_hash(record) != record.record_hash:
            return self._break(record.sequence, "record hash does not match the record's fields")
        if self.head.recorded_at is not None and record.recorded_at < self.head.recorded_at:
            return self._break(record.sequence, f"recorded before record {expected - 1}")
        self.head = Head(record.sequence, record.record_hash, record.recorded_at)
        self.checked += 1
        return None

    def end(self, expected: Head) -> Break | None:
        """After the last record: the chain must end where ``expected`` (a head row, a manifest) says."""
        if self.head.sequence < expected.sequence:
            return self._break(self.head.sequence + 1, f"missing (the chain should end at record {expected.sequence})")
        if self.head.sequence > expected.sequence:
            return self._break(expected.sequence + 1, f"beyond the recorded end of the chain ({expected.sequence})")
        if self.head.hash != expected.hash:
            return self._break(self.head.sequence, "hash differs from the one recorded for the end of the chain")
        return None

    def _break(self, sequence: int | None, reason: str) -> Break:
        return Break(sequence, reason, self.where)
