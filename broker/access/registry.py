"""Registry of vendors (who may send) and schools (for whom each vendor may send).

A vendor authenticates like every other face, with a credential of kind vendor
(:mod:`broker.access.credentials`) minted by ``ejx vendors add`` in the same
transaction as the vendor's row.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import structlog

from broker.access.credentials import Credentials, Kind, check_name
from broker.domain.faults import (
    InvalidContent,
    SenderIsNotRegistered,
)
from broker.infra.postgres import UnitOfWork, outage_as_failure

log = structlog.get_logger(__name__)

SCHOOL_COLUMNS = ("school_id", "name", "district", "vendor")
# Russian headers of registry exports, mapped to ours.
SCHOOL_HEADER_ALIASES = {
    "код школы": "school_id", "школа": "school_id", "код оо": "school_id",
    "наименование": "name", "название": "name",
    "район": "district", "округ": "district", "муниципалитет": "district",
    "поставщик": "vendor", "вендор": "vendor", "электронный журнал": "vendor",
}


@dataclass(frozen=True)
class Vendor:
    """A registered e-journal system; ``vendor_id`` is also its ``source_system``."""

    vendor_id: str
    created_at: datetime | None = None
    revoked: bool = False
    """Its credential is revoked: it can neither send nor be imported for."""


@dataclass(frozen=True)
class School:
    school_id: str
    name: str
    district: str
    vendor_id: str


class Registry:
    """Vendors and schools in PostgreSQL; settings at construction, data at call time."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add_vendor(self, vendor_id: str) -> str:
        """Register a vendor and return its bearer token — the only time it is visible."""
        vendor_id = check_name(Kind.VENDOR, vendor_id)
        async with UnitOfWork(self._pool) as uow:
            try:
                await uow.connection.execute("INSERT INTO vendors (vendor_id) VALUES ($1)", vendor_id)
            except asyncpg.UniqueViolationError as error:
                raise InvalidContent(f"vendor {vendor_id!r} is already registered") from error
            token = await Credentials(self._pool).mint(uow.connection, Kind.VENDOR, vendor_id)
            await uow.commit()
        log.info("registry.vendor_added", vendor_id=vendor_id)
        return token

    async def vendors(self) -> list[Vendor]:
        rows = await self._pool.fetch(
            "SELECT v.vendor_id, v.created_at, c.revoked_at IS NOT NULL AS revoked FROM vendors v "
            "LEFT JOIN credentials c ON c.kind = 'vendor' AND c.name = v.vendor_id ORDER BY v.vendor_id")
        return [Vendor(row["vendor_id"], row["created_at"], row["revoked"]) for row in rows]

    async def vendor(self, vendor_id: str) -> Vendor:
        """The named vendor in good standing (for imports run by an operator on a vendor's behalf)."""
        with outage_as_failure("the registry"):
            row = await self._pool.fetchrow(
                "SELECT v.vendor_id, v.created_at FROM vendors v JOIN credentials c "
                "ON c.kind = 'vendor' AND c.name = v.vendor_id AND c.revoked_at IS NULL WHERE v.vendor_id = $1",
                vendor_id)
        if row is None:
            raise SenderIsNotRegistered(f"no enabled vendor {vendor_id[:64]!r}; see `ejx vendors list`")
        return Vendor(row["vendor_id"], row["created_at"])

    async def school_vendors(self, school_ids: Iterable[str]) -> dict[str, str]:
        """The vendor serving each school, in one round trip; unknown schools are absent."""
        with outage_as_failure("the registry"):
            rows = await self._pool.fetch(
                "SELECT school_id, vendor_id FROM schools WHERE school_id = ANY($1::text[])", sorted(set(school_ids)))
        return {row["school_id"]: row["vendor_id"] for row in rows}

    async def import_schools(self, schools: Iterable[School]) -> tuple[int, int]:
        """Upsert schools in one transaction; return (inserted or changed, unchanged).

        Idempotent: a row identical to the stored one is not touched.
        """
        batch = list(schools)
        async with UnitOfWork(self._pool) as uow:
            known = {row["vendor_id"] for row in await uow.connection.fetch("SELECT vendor_id FROM vendors")}
            unknown = sorted({s.vendor_id for s in batch} - known)
            if unknown:
                raise InvalidContent(f"unknown vendor(s) {', '.join(unknown)}; register them with `ejx vendors add`")
            changed = await uow.connection.fetchval(
                """WITH incoming AS (
                       SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
                                AS t(school_id, name, district, vendor_id)),
                   upserted AS (
                       INSERT INTO schools (school_id, name, district, vendor_id)
                       SELECT school_id, name, district, vendor_id FROM incoming
                       ON CONFLICT (school_id) DO UPDATE
                          SET name = EXCLUDED.name, district = EXCLUDED.district,
                              vendor_id = EXCLUDED.vendor_id, updated_at = now()
                          WHERE (schools.name, schools.district, schools.vendor_id)
                                IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.district, EXCLUDED.vendor_id)
                       RETURNING 1)
                   SELECT count(*) FROM upserted""",
                [s.school_id for s in batch], [s.name for s in batch],
                [s.district for s in batch], [s.vendor_id for s in batch])
            await uow.commit()
        log.info("registry.schools_imported", changed=changed, unchanged=len(batch) - changed)
        return changed, len(batch) - changed


def read_schools_csv(data: bytes) -> Iterator[School]:
    """Schools from a CSV (UTF-8 or CP1251, ``,`` or ``;``, English or Russian headers)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1251")
    sample = text[:4096]
    delimiter = ";" if sample.count(";") > sample.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        raise InvalidContent("the schools file is empty")
    columns = [SCHOOL_HEADER_ALIASES.get(h.strip().lower(), h.strip().lower()) for h in header]
    missing = [c for c in SCHOOL_COLUMNS if c not in columns]
    if missing:
        raise InvalidContent(f"the schools file lacks column(s) {', '.join(missing)}",
                             details={"expected": list(SCHOOL_COLUMNS), "found": header})
    seen: set[str] = set()
    for line, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        values = dict(zip(columns, (cell.strip() for cell in row), strict=False))
        if any(not values.get(c) for c in SCHOOL_COLUMNS):
            raise InvalidContent(f"line {line}: every one of {', '.join(SCHOOL_COLUMNS)} is required")
        if values["school_id"] in seen:
            raise InvalidContent(f"line {line}: school {values['school_id']!r} appears twice")
        seen.add(values["school_id"])
        yield School(values["school_id"], values["name"], values["district"], values["vendor"])
