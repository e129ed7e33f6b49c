"""Who may read a child's e-diary: portal clients with their own tokens, and the access log.

Vendors write journals; they never read diaries through ejx. A portal client
(e.g. the public-services portal) holds a token minted by
``ejx portal-clients add``; only its SHA-256 is stored, like vendors' tokens,
but in a table of its own so the two can never be confused. Every allowed
read is logged in the same transaction as the read itself.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import date

import asyncpg
import structlog

from broker.access.registry import new_token, token_hash
from broker.domain.faults import AccessDenied, InvalidContent, SenderIsNotRegistered

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class PortalClient:
    client_id: str


class PortalClients:
    """Portal credentials in PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add(self, client_id: str) -> str:
        """Register a portal client and return its bearer token — the only time it is visible."""
        client_id = client_id.strip()
        if not client_id or len(client_id) > 64 or not client_id.isprintable() or " " in client_id:
            raise InvalidContent(f"portal client name {client_id!r} must be 1–64 printable characters, no spaces")
        token = new_token()
        try:
            await self._pool.execute("INSERT INTO portal_clients (client_id, token_hash) VALUES ($1, $2)",
                                     client_id, token_hash(token))
        except asyncpg.UniqueViolationError as error:
            raise InvalidContent(f"portal client {client_id!r} is already registered") from error
        log.info("diary.portal_client_added", client_id=client_id)
        return token

    async def authenticate(self, token: str | None) -> PortalClient:
        """The portal client holding ``token``.

        A vendor's token is AccessDenied (a known sender, not allowed here); a
        missing or unknown one is SenderIsNotRegistered.
        """
        if not token:
            raise SenderIsNotRegistered("a bearer token is required (Authorization: Bearer <token>)")
        digest = token_hash(token)
        row = await self._pool.fetchrow(
            "SELECT client_id, token_hash FROM portal_clients WHERE token_hash = $1 AND disabled_at IS NULL", digest)
        if row is not None and hmac.compare_digest(bytes(row["token_hash"]), digest):
            return PortalClient(row["client_id"])
        vendor = await self._pool.fetchval("SELECT vendor_id FROM vendors WHERE token_hash = $1", digest)
        if vendor is not None:
            raise AccessDenied(f"vendor {vendor!r} may not read e-diaries; only portal clients may")
        raise SenderIsNotRegistered("the bearer token does not belong to a registered portal client")


async def record_read(conn: asyncpg.Connection, *, client: PortalClient, student_id: str,
                      date_from: date | None, date_to: date | None) -> None:
    """One line of the access log: who read whose diary, when, for which days."""
    await conn.execute(
        "INSERT INTO diary_access_log (client_id, student_id, date_from, date_to) VALUES ($1, $2, $3, $4)",
        client.client_id, student_id, date_from, date_to)
