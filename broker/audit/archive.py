"""Archive files of the message log: written once, signed by ejx, verified offline by anyone.

An archive is an uncompressed POSIX tar (uncompressed, so one changed byte
names one record instead of breaking a whole stream) holding exactly:

``manifest.json``
    :class:`~broker.audit.manifest.Manifest` as JSON: number, first/last
    sequence, record count, anchor (previous hash of the first record) and last
    record hash, first/last time, SHA-256 of ``records.jsonl``, SHA-256 of the
    previous archive's manifest, and the signer's certificate fingerprint.
``manifest.sig``
    A detached signature of ``manifest.json``'s exact bytes with ejx's key
    (see :mod:`broker.audit.manifest`; OpenSSL alone can check it).
``records.jsonl``
    One JSON object per record in sequence order: the fields of
    :class:`~broker.audit.chain.Record`, hashes in hex, times UTC "Z",
    ``payload`` (the exact bytes) in base64.

Verification needs only the files and ejx's certificate; each archive is
checked on its own (signature, every record, the chain from its anchor to its
last hash, the file's digest) and against the archive given before it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import tarfile
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from broker.audit.chain import Break, ChainCheck, Head, Record, utc_text
from broker.audit.manifest import (
    ArchiveSummary,
    Manifest,
    ManifestSigner,
    link_fault,
    parse_time,
    signature_fault,
)
from broker.domain.faults import Failure, InvalidContent

MANIFEST, SIGNATURE, RECORDS = "manifest.json", "manifest.sig", "records.jsonl"
_FIELDS = ("sequence", "recorded_at", "direction", "participant", "message_id", "kind", "payload_sha256",
           "previous_hash", "record_hash", "payload")


class ArchiveWriter:
    """Spools records to a temporary file next to ``path``, then writes the signed tar and links it in.

    An existing ``path`` is never overwritten; nothing appears at ``path`` unless :meth:`finish` ran.
    """

    def __init__(self, path: Path, *, signer: ManifestSigner, number: int, anchor: Head,
                 previous_archive: bytes | None) -> None:
        if path.exists():
            raise Failure(f"{path} exists; an archive is never overwritten")
        self._path, self._signer, self._number = path, signer, number
        self._previous_archive = previous_archive
        self._check = ChainCheck(anchor, where=path.name)
        self._first: Record | None = None
        self._digest = hashlib.sha256()
        try:
            self._spool = tempfile.TemporaryFile(dir=path.parent, prefix=".ejx-archive-")
        except OSError as error:
            raise Failure(f"cannot write an archive into {path.parent}: {error.strerror or error}") from None

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._spool.close()

    def add(self, record: Record) -> None:
        """Append one record; one that does not chain is refused, so no archive ever signs a break."""
        found = self._check.feed(record)
        if found is not None:
            raise InvalidContent(f"refusing to archive a broken chain: {found}")
        self._first = self._first or record
        line = json.dumps(_line(record), separators=(",", ":")).encode() + b"\n"
        self._digest.update(line)
        self._spool.write(line)

    def finish(self) -> ArchiveSummary:
        """Sign the manifest and write the tar, fsynced, at ``path``."""
        first, head = self._first, self._check.head
        if first is None:
            raise Failure("an archive needs at least one record")
        manifest = Manifest(
            number=self._number, created_at=datetime.now(UTC), first_sequence=first.sequence,
            last_sequence=head.sequence, records=self._check.checked, anchor_hash=first.previous_hash,
            last_record_hash=head.hash, first_recorded_at=first.recorded_at, last_recorded_at=head.recorded_at,
            records_sha256=self._digest.digest(), previous_archive=self._previous_archive,
            signer_certificate_sha256=self._signer.certificate_sha256, signature_algorithm=self._signer.algorithm)
        manifest_bytes = manifest.to_json()
        partial = self._path.with_name(f".{self._path.name}.partial")
        try:
            with tarfile.open(partial, "x", format=tarfile.PAX_FORMAT) as tar:
                for name, data in ((MANIFEST, manifest_bytes), (SIGNATURE, self._signer.sign(manifest_bytes))):
                    tar.addfile(_member(name, len(data)), io.BytesIO(data))
                size = self._spool.tell()
                self._spool.seek(0)
                tar.addfile(_member(RECORDS, size), self._spool)
            with open(partial, "rb+") as file:
                os.fsync(file.fileno())
            os.link(partial, self._path)  # unlike a rename, refuses a path that appeared meanwhile
        except FileExistsError as error:
            raise Failure(f"{error.filename} exists; an archive is never overwritten") from None
        finally:
            partial.unlink(missing_ok=True)
        return ArchiveSummary(self._path.name, manifest, hashlib.sha256(manifest_bytes).digest())


@dataclass(frozen=True)
class ArchiveVerdict:
    """The outcome of verifying archives in the order given."""

    archives: list[ArchiveSummary]
    """Every archive found sound, in the order given."""
    checked: int
    """Records found sound."""
    broken: Break | None


def verify_archives(paths: Sequence[Path], *, trusted: Sequence[x509.Certificate],
                    on_start: Callable[[int], None] = lambda total: None,
                    on_progress: Callable[[int], None] = lambda n: None) -> ArchiveVerdict:
    """Re-compute every record, the manifests' signatures and the links between consecutive archives.

    Needs no database: only the files and the certificate(s) ejx signed with. A
    certificate is trusted because it is given here, never because an archive names it.
    One file is open at a time, however many are given: a first pass reads and checks every
    manifest (so ``on_start`` knows the total), a second re-opens each file for its records.
    """
    trust = {c.fingerprint(hashes.SHA256()).hex(): c for c in trusted}
    total = 0
    for path in paths:
        tar, summary, broken = _open(path, trust)
        if broken is not None:
            return ArchiveVerdict([], 0, broken)
        tar.close()
        total += summary.manifest.records
    on_start(total)
    sound: list[ArchiveSummary] = []
    checked = 0
    for path in paths:
        tar, summary, broken = _open(path, trust)  # checked again: what is verified is what is read now
        if broken is not None:
            return ArchiveVerdict(sound, checked, broken)
        with tar:
            reason = link_fault(sound[-1] if sound else None, summary)
            if reason is not None:
                return ArchiveVerdict(sound, checked, Break(summary.manifest.first_sequence, reason, summary.name))
            count, broken = _check_records(tar, summary, on_progress)
        checked += count
        if broken is not None:
            return ArchiveVerdict(sound, checked, broken)
        sound.append(summary)
    return ArchiveVerdict(sound, checked, None)


def _open(path: Path, trust: dict[str, x509.Certificate]
          ) -> tuple[tarfile.TarFile | None, ArchiveSummary | None, Break | None]:
    """Open one archive and verify its manifest's signature; a Break instead if either fails."""
    try:
        tar = tarfile.open(path, "r:")
    except (OSError, tarfile.TarError) as error:
        return None, None, Break(None, f"not a readable archive: {error}", path.name)
    try:
        members = {m.name: m for m in tar.getmembers()}
        if sorted(members) != sorted((MANIFEST, SIGNATURE, RECORDS)) or not all(m.isfile() for m in members.values()):
            raise ValueError(f"an archive holds exactly {MANIFEST}, {SIGNATURE} and {RECORDS}; found {sorted(members)}")
        manifest_bytes = tar.extractfile(members[MANIFEST]).read()
        signature = tar.extractfile(members[SIGNATURE]).read()
        manifest = Manifest.from_json(manifest_bytes)
        reason = signature_fault(manifest, manifest_bytes, signature, trust)
        if reason is not None:
            raise ValueError(reason)
    except (OSError, tarfile.TarError, ValueError, KeyError, TypeError) as error:
        tar.close()
        return None, None, Break(None, error.args[0] if isinstance(error, ValueError) else
                                 f"not a readable archive: {error!r}", path.name)
    return tar, ArchiveSummary(path.name, manifest, hashlib.sha256(manifest_bytes).digest()), None


def _check_records(tar: tarfile.TarFile, summary: ArchiveSummary,
                   on_progress: Callable[[int], None]) -> tuple[int, Break | None]:
    manifest, name = summary.manifest, summary.name
    check = ChainCheck(Head(manifest.first_sequence - 1, manifest.anchor_hash), where=name)
    digest = hashlib.sha256()
    pending = 0
    for line in _lines(tar.extractfile(RECORDS), digest):
        try:
            record = _record(line)
        except (ValueError, KeyError, TypeError, binascii.Error) as error:
            return check.checked, Break(check.head.sequence + 1, f"not a readable record: {error!r}", name)
        found = check.feed(record)
        if found is not None:
            return check.checked, found
        pending += 1
        if pending == 1000:
            on_progress(pending)
            pending = 0
    on_progress(pending)
    found = check.end(Head(manifest.last_sequence, manifest.last_record_hash))
    if found is None and digest.digest() != manifest.records_sha256:
        found = Break(None, f"{RECORDS} differs from the SHA-256 its manifest names", name)
    return check.checked, found


def _lines(file: io.BufferedReader, digest) -> Iterator[bytes]:
    for line in file:
        digest.update(line)
        yield line


def _line(record: Record) -> dict:
    return {"sequence": record.sequence, "recorded_at": utc_text(record.recorded_at),
            "direction": record.direction, "participant": record.participant,
            "message_id": str(record.message_id), "kind": record.kind,
            "payload_sha256": record.payload_sha256.hex(), "previous_hash": record.previous_hash.hex(),
            "record_hash": record.record_hash.hex(), "payload": base64.b64encode(record.payload).decode()}


def _record(line: bytes) -> Record:
    data = orjson.loads(line)  # a forged line nested 10⁵ deep is a ValueError here, not a RecursionError
    if not isinstance(data, dict) or sorted(data) != sorted(_FIELDS):
        raise ValueError(f"fields must be {list(_FIELDS)}")
    if not isinstance(data["sequence"], int):
        raise ValueError("sequence is not an integer")
    return Record(sequence=data["sequence"], recorded_at=parse_time(data["recorded_at"]),
                  direction=str(data["direction"]), participant=str(data["participant"]),
                  message_id=uuid.UUID(data["message_id"]), kind=str(data["kind"]),
                  payload_sha256=bytes.fromhex(data["payload_sha256"]),
                  previous_hash=bytes.fromhex(data["previous_hash"]), record_hash=bytes.fromhex(data["record_hash"]),
                  payload=base64.b64decode(data["payload"], validate=True))


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o444, int(datetime.now(UTC).timestamp())
    return info
