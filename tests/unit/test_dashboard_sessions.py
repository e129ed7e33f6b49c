"""Dashboard sessions: bounded in all and per token, so one authority cannot sign the others out."""

from __future__ import annotations

from broker.access.credentials import Kind, Principal
from broker.access.gate import GateOptions, Sessions


def authority(name: str) -> Principal:
    return Principal(Kind.AUTHORITY, name, token_hash=name.encode())


def test_a_token_signing_in_again_and_again_drops_only_its_own_oldest_sessions() -> None:
    sessions = Sessions(GateOptions(max_sessions=50, max_sessions_per_token=3))
    others = [sessions.open(authority(f"a{i}")) for i in range(10)]
    mallory = [sessions.open(authority("mallory")) for _ in range(1000)]
    assert all(sessions.token_hash(s) is not None for s in others)
    assert [s for s in mallory if sessions.token_hash(s) is not None] == mallory[-3:]


def test_past_the_overall_bound_the_oldest_session_goes_first() -> None:
    sessions = Sessions(GateOptions(max_sessions=5, max_sessions_per_token=3))
    opened = [sessions.open(authority(f"a{i}")) for i in range(7)]
    assert [sessions.token_hash(s) is not None for s in opened] == [False, False, True, True, True, True, True]


def test_a_session_ends_at_its_expiry() -> None:
    now = [0.0]
    sessions = Sessions(GateOptions(session_ttl_s=60), clock=lambda: now[0])
    session = sessions.open(authority("a"))
    now[0] = 59.0
    assert sessions.token_hash(session) == b"a"
    now[0] = 60.0
    assert sessions.token_hash(session) is None
