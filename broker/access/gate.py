"""The HTTP side of access: one FastAPI dependency per role, dashboard sessions, bad-token throttling.

Every route names the credential kinds it admits through :meth:`Gate.require`;
anonymous is 401 (SenderIsNotRegistered), a credential of another kind 403
(AccessDenied). The token is looked up on every request (see
:mod:`broker.access.credentials`), and so is the token behind a dashboard
session, so a revoke or rotate ends sessions at once too.

Sessions are server-side (a random id in an HttpOnly, SameSite=Strict cookie,
the token's hash and an expiry in this process's memory): nothing in the cookie
can be forged or replayed after sign-out or expiry, and a restart signs
everyone out, which a dashboard can afford.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from broker.access.credentials import Credentials, Kind, Principal
from broker.domain.faults import (
    AccessDenied,
    Fault,
    SenderIsNotRegistered,
    TooManyRequests,
)

SESSION_COOKIE = "ejx_session"

_bearer = HTTPBearer(auto_error=False, description="A token from `ejx vendors|portal-clients|authorities|"
                                                   "operators add` (or `… rotate`).")


@dataclass(frozen=True)
class GateOptions:
    """Limits of authentication."""

    bad_tokens_per_window: int = 20
    """Unknown tokens one client may present per window before every request is 429 (ended sessions do not
    count)."""
    bad_token_window_s: float = 60.0
    """The sliding window of bad-token counting, in seconds."""
    session_ttl_s: float = 8 * 3600
    """A dashboard session ends this long after sign-in."""
    max_sessions: int = 10_000
    """Sessions kept at once; the oldest are dropped first."""
    max_sessions_per_token: int = 16
    """Sessions one token keeps at once (its own oldest goes first), so no authority signing in again and
    again can push every other authority's sessions out."""
    max_clients: int = 10_000
    """Clients whose bad tokens are remembered at once."""


class BadTokenThrottle:
    """Counts bad tokens per client address in a sliding window; past the limit, everything is 429."""

    def __init__(self, options: GateOptions, clock: Callable[[], float] = time.monotonic) -> None:
        self._options = options
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def check(self, client: str) -> None:
        failures = self._failures.get(client)
        if not failures:
            return
        now = self._clock()
        while failures and failures[0] <= now - self._options.bad_token_window_s:
            failures.popleft()
        if len(failures) >= self._options.bad_tokens_per_window:
            wait = int(failures[0] + self._options.bad_token_window_s - now) + 1
            raise TooManyRequests(f"too many bad tokens from this client; retry in {wait} s", retry_after_s=wait)

    def failed(self, client: str) -> None:
        if client not in self._failures and len(self._failures) >= self._options.max_clients:
            self._failures.pop(next(iter(self._failures)))
        failures = self._failures.setdefault(client, deque(maxlen=self._options.bad_tokens_per_window))
        failures.append(self._clock())


class Sessions:
    """Dashboard sessions: random id → (token hash, expiry), in memory."""

    def __init__(self, options: GateOptions, clock: Callable[[], float] = time.monotonic) -> None:
        self._options = options
        self._clock = clock
        self._open: dict[str, tuple[bytes, float]] = {}
        self.ttl_s = options.session_ttl_s

    def open(self, principal: Principal) -> str:
        mine = [sid for sid, (token_hash, _) in self._open.items() if token_hash == principal.token_hash]
        for session_id in mine[:max(len(mine) - self._options.max_sessions_per_token + 1, 0)]:
            self.close(session_id)
        while len(self._open) >= self._options.max_sessions:
            self._open.pop(next(iter(self._open)))
        session_id = secrets.token_urlsafe(32)
        self._open[session_id] = (principal.token_hash, self._clock() + self._options.session_ttl_s)
        return session_id

    def token_hash(self, session_id: str) -> bytes | None:
        found = self._open.get(session_id)
        if found is None:
            return None
        if found[1] <= self._clock():
            self.close(session_id)
            return None
        return found[0]

    def close(self, session_id: str) -> None:
        self._open.pop(session_id, None)


def client_address(request: Request) -> str:
    """The peer's address (ejx is not behind a proxy it trusts, so no forwarded headers)."""
    return request.client.host if request.client else "unknown"


def districts_in_scope(principal: Principal, district: str | None) -> tuple[str, ...] | None:
    """The districts a query may cover: an explicit one (AccessDenied outside a scoped authority's
    districts), else the authority's own districts, else None (every district)."""
    if district is not None:
        if principal.scoped and district not in principal.districts:
            raise AccessDenied(f"district {district!r} is outside the districts of authority {principal.name!r}")
        return (district,)
    return principal.districts or None


class Gate:
    """Authenticates requests for the routes of every face."""

    def __init__(self, credentials: Credentials, options: GateOptions = GateOptions()) -> None:
        self.credentials = credentials
        self.sessions = Sessions(options)
        self._throttle = BadTokenThrottle(options)

    async def principal(self, request: Request, token: str | None, *, sessions: bool = False) -> Principal:
        """The holder of the bearer token (or, where ``sessions``, of the dashboard session)."""
        client = client_address(request)
        self._throttle.check(client)
        if token:
            try:
                return await self.credentials.authenticate(token)
            except SenderIsNotRegistered:
                self._throttle.failed(client)
                raise
        session_id = request.cookies.get(SESSION_COOKIE) if sessions else None
        if session_id:
            digest = self.sessions.token_hash(session_id)
            if digest is None:
                # Not a bad token: every tab left open over a restart or the expiry presents its ended session
                # (the page's calls, then its reload), and an office behind one address would be locked out of
                # signing in again. A session id is 256 random bits, so there is nothing to guess at.
                raise SenderIsNotRegistered("the dashboard session has ended; sign in again")
            try:
                return await self.credentials.by_hash(digest)
            except SenderIsNotRegistered:
                self.sessions.close(session_id)
                raise
        raise SenderIsNotRegistered("a bearer token is required (Authorization: Bearer <token>)")

    def require(self, *kinds: Kind, sessions: bool = False, unscoped: frozenset[Kind] = frozenset(),
                on_refused: Callable[[Fault], None] | None = None) -> Callable[..., Awaitable[Principal]]:
        """A dependency admitting ``kinds`` (and, in ``unscoped``, only their district-free holders).

        ``sessions``: a dashboard session cookie counts as the credential too.
        ``on_refused`` hears of every refusal (e.g. to count denied diary reads).
        """
        allowed = frozenset(kinds) | unscoped
        names = " or ".join(kind.label for kind in sorted(allowed))

        async def admit(request: Request, token: str | None) -> Principal:
            principal = await self.principal(request, token, sessions=sessions)
            if principal.kind not in allowed:
                raise AccessDenied(f"a {principal.kind.label} credential may not use this; it needs a {names}")
            if principal.kind in unscoped and principal.kind not in kinds and principal.scoped:
                raise AccessDenied(f"{principal.kind.label} {principal.name!r} is scoped to districts; "
                                   "this view covers all of them")
            return principal

        async def dependency(request: Request,
                             bearer: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
            try:
                return await admit(request, bearer.credentials if bearer else None)
            except Fault as fault:
                if on_refused is not None and not fault.retriable:
                    on_refused(fault)
                raise

        return dependency
