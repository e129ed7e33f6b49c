"""Credentials of every face, one mechanism: a named bearer token of one kind, stored as its SHA-256.

Vendors (ingest), portal clients (e-diary), authorities (monitoring, analytics,
the dashboard; optionally scoped to districts) and operators (``/metrics``, the
pipeline view) all hold a token minted here. Only the token's SHA-256 is stored,
so a leaked database leaks no credential. Every request looks the hash up
(one indexed read, no cache), so ``revoke`` and ``rotate`` take effect on the
very next request of every running server.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import asyncpg
import structlog

from broker.domain.faults import InvalidContent, SenderIsNotRegistered
from broker.infra.postgres import outage_as_failure

log = structlog.get_logger(__name__)

TOKEN_PREFIX = "ejx_"
MAX_NAME = 64
VENDOR_NAME = re.compile(r"[a-z0-9][a-z0-9\-]{1,63}")  # the events XSD's VendorType
# Portal clients, authorities, operators: printable, no spaces or control characters.
PLAIN_NAME = re.compile(r"[^\s\x00-\x1f\x7f]{1,64}")


class Kind(StrEnum):
    """What a credential opens; each route admits the kinds it names."""

    VENDOR = "vendor"
    PORTAL_CLIENT = "portal_client"
    AUTHORITY = "authority"
    OPERATOR = "operator"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


@dataclass(frozen=True)
class Principal:
    """Who a request is from: the credential's kind, name and (authorities) district scope."""

    kind: Kind
    name: str
    districts: tuple[str, ...] = ()
    """An authority's districts; empty means every district."""
    token_hash: bytes = b""
    """Lets a dashboard session re-check, per request, that the token is still in force."""

    @property
    def scoped(self) -> bool:
        return bool(self.districts)


@dataclass(frozen=True)
class CredentialInfo:
    """A credential as listed to an operator (never its token)."""

    kind: Kind
    name: str
    districts: tuple[str, ...]
    created_at: datetime
    rotated_at: datetime | None
    revoked: bool


def token_hash(token: str) -> bytes:
    """What is stored and looked up instead of the token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def new_token() -> str:
    """256 random bits, URL-safe, with a prefix that secret scanners can recognise."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def check_name(kind: Kind, name: str) -> str:
    """The name stripped, or InvalidContent: vendor names become SourceSystem, so they are stricter."""
    name = name.strip()
    pattern = VENDOR_NAME if kind is Kind.VENDOR else PLAIN_NAME
    if not pattern.fullmatch(name):
        rule = "2–64 of a-z, 0-9 and '-'" if kind is Kind.VENDOR else "1–64 printable characters, no spaces"
        raise InvalidContent(f"{kind.label} name {name[:MAX_NAME]!r} must be {rule}")
    return name


def check_districts(districts: tuple[str, ...]) -> tuple[str, ...]:
    found = tuple(dict.fromkeys(d.strip() for d in districts if d.strip()))
    for district in found:
        if len(district) > MAX_NAME or not district.isprintable():
            raise InvalidContent(f"district {district[:MAX_NAME]!r} must be 1–64 printable characters")
    return found


class Credentials:
    """The ``credentials`` table; settings at construction, data at call time."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def mint(self, conn: asyncpg.Connection, kind: Kind, name: str,
                   districts: tuple[str, ...] = ()) -> str:
        """Insert a credential on ``conn`` (inside the caller's transaction); return its token."""
        token = new_token()
        try:
            await conn.execute("INSERT INTO credentials (kind, name, token_hash, districts) VALUES ($1, $2, $3, $4)",
                               kind.value, name, token_hash(token), list(districts))
        except asyncpg.UniqueViolationError as error:
            raise InvalidContent(f"{kind.label} {name!r} is already registered") from error
        log.info("credentials.added", kind=kind.value, name=name, districts=list(districts))
        return token

    async def add(self, kind: Kind, name: str, *, districts: tuple[str, ...] = ()) -> str:
        """Register ``name`` of ``kind`` and return its token — the only time it is visible."""
        name = check_name(kind, name)
        districts = check_districts(districts)
        if districts and kind is not Kind.AUTHORITY:
            raise InvalidContent("only authorities are scoped to districts")
        async with self._pool.acquire() as conn:
            return await self.mint(conn, kind, name, districts)

    async def revoke(self, kind: Kind, name: str) -> None:
        """The token stops working at once (next request, every server); the name stays taken."""
        done = await self._pool.fetchval(
            "UPDATE credentials SET revoked_at = now() WHERE kind = $1 AND name = $2 RETURNING true", kind.value, name)
        if not done:
            raise InvalidContent(f"no {kind.label} {name!r}")
        log.info("credentials.revoked", kind=kind.value, name=name)

    async def rotate(self, kind: Kind, name: str) -> str:
        """A new token for ``name`` (also lifting a revocation); the old one stops working at once."""
        token = new_token()
        done = await self._pool.fetchval(
            "UPDATE credentials SET token_hash = $3, rotated_at = now(), revoked_at = NULL "
            "WHERE kind = $1 AND name = $2 RETURNING true", kind.value, name, token_hash(token))
        if not done:
            raise InvalidContent(f"no {kind.label} {name!r}")
        log.info("credentials.rotated", kind=kind.value, name=name)
        return token

    async def listed(self, kind: Kind) -> list[CredentialInfo]:
        rows = await self._pool.fetch(
            "SELECT name, districts, created_at, rotated_at, revoked_at IS NOT NULL AS revoked "
            "FROM credentials WHERE kind = $1 ORDER BY name", kind.value)
        return [CredentialInfo(kind, row["name"], tuple(row["districts"]), row["created_at"], row["rotated_at"],
                               row["revoked"]) for row in rows]

    async def authenticate(self, token: str | None) -> Principal:
        """The holder of ``token``, of whatever kind; missing, unknown or revoked is SenderIsNotRegistered."""
        if not token:
            raise SenderIsNotRegistered("a bearer token is required (Authorization: Bearer <token>)")
        return await self.by_hash(token_hash(token))

    async def by_hash(self, digest: bytes) -> Principal:
        with outage_as_failure("the registry"):
            row = await self._pool.fetchrow(
                "SELECT kind, name, districts, token_hash FROM credentials "
                "WHERE token_hash = $1 AND revoked_at IS NULL", digest)
        # The lookup is by hash, so timing reveals nothing about the token; compare anyway.
        if row is None or not hmac.compare_digest(bytes(row["token_hash"]), digest):
            raise SenderIsNotRegistered("the bearer token is unknown or revoked")
        return Principal(Kind(row["kind"]), row["name"], tuple(row["districts"]), digest)
