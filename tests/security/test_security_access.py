"""Every route × every credential kind, district scopes, revoke/rotate at once, bad tokens → 429."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from click.testing import CliRunner

from adapters import examples
from broker.app.cli import main
from tests.security.conftest import (
    DISTRICT_A,
    DISTRICT_B,
    SCHOOL_A,
    SCHOOL_B,
    Faces,
    serving,
)

KINDS = ("vendor", "portal_client", "authority", "authority_a", "operator")
GRADE = {**examples.EVENTS["GradePosted"], "school_id": SCHOOL_A}
# (method, path, body, kinds allowed); everyone else: 401 anonymous or bad token, 403 another kind.
ROUTES = [
    ("POST", "/v1/events", GRADE, {"vendor"}),
    ("POST", "/v1/oneroster/results", examples.ONEROSTER_BUNDLE, {"vendor"}),
    ("GET", "/v1/diary/st-77k3f9q2m", None, {"portal_client"}),
    ("GET", "/v1/monitoring/schools", None, {"authority", "authority_a"}),
    ("GET", "/v1/analytics/grades", None, {"authority", "authority_a"}),
    ("GET", "/v1/monitoring/pipeline", None, {"operator", "authority"}),  # not a district office: it spans all
    ("GET", "/metrics", None, {"operator"}),
]
OPEN = [("GET", "/healthz"), ("GET", "/readyz")]


async def call(client: httpx.AsyncClient, method: str, path: str, body: object) -> httpx.Response:
    return await client.request(method, path, json=body) if body is not None else await client.request(method, path)


async def test_every_route_admits_exactly_its_kinds(faces: Faces) -> None:
    table = {}
    for method, path, body, allowed in ROUTES:
        for who in (None, "bad", *KINDS):
            if who == "bad":
                client = httpx.AsyncClient(transport=httpx.ASGITransport(app=faces.app, client=("10.0.0.9", 1)),
                                           base_url="http://ejx", headers={"Authorization": "Bearer ejx_nope"})
            else:
                client = faces.client(who)
            async with client:
                answer = await call(client, method, path, body)
            table[(path, who)] = answer.status_code
            if who in allowed:
                assert answer.status_code in (200, 202), (path, who, answer.text)
            else:
                expected = 403 if who in KINDS else 401
                assert answer.status_code == expected, (path, who, answer.text)
                assert answer.json()["code"] == ("AccessDenied" if expected == 403 else "SenderIsNotRegistered")
                assert answer.json()["retriable"] is False
    for method, path in OPEN:
        async with faces.client() as client:
            assert (await client.request(method, path)).status_code == 200, path
    assert len(table) == len(ROUTES) * (len(KINDS) + 2)


async def test_a_district_office_sees_only_its_districts(faces: Faces) -> None:
    async with faces.client("authority_a") as office, faces.client("authority") as ministry:
        other = await office.get("/v1/monitoring/schools", params={"district": DISTRICT_B})
        other_grades = await office.get("/v1/analytics/grades", params={"district": DISTRICT_B})
        own = await office.get("/v1/monitoring/schools")
        own_filtered = await office.get("/v1/monitoring/schools", params={"district": DISTRICT_A})
        everything = await ministry.get("/v1/monitoring/schools")
    assert other.status_code == other_grades.status_code == 403
    assert other.json()["code"] == "AccessDenied"
    assert [s["school_id"] for s in own.json()["schools"]] == [SCHOOL_A]
    assert [s["school_id"] for s in own_filtered.json()["schools"]] == [SCHOOL_A]
    assert sorted(s["school_id"] for s in everything.json()["schools"]) == [SCHOOL_A, SCHOOL_B]


def _cli(faces: Faces, *args: str) -> str:
    result = CliRunner().invoke(main, list(args), env={"EJX_DATABASE_URL": faces.settings.database_dsn})
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


@pytest.mark.parametrize("kind,group,path", [
    ("vendor", "vendors", "/v1/events"), ("portal_client", "portal-clients", "/v1/diary/st-77k3f9q2m"),
    ("authority", "authorities", "/v1/monitoring/schools"), ("operator", "operators", "/metrics")])
async def test_revoke_and_rotate_take_effect_at_once_on_a_running_server(faces: Faces, kind: str, group: str,
                                                                         path: str) -> None:
    name = {"vendor": "dnevnik-plus", "portal_client": "epgu", "authority": "ministry", "operator": "on-call"}[kind]
    body = GRADE if path == "/v1/events" else None
    async with serving(faces.settings, faces.app) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        async def status(token: str) -> int:
            headers = {"Authorization": f"Bearer {token}"}
            answer = await (client.post(path, json=body, headers=headers) if body else client.get(path, headers=headers))
            return answer.status_code

        old = faces.tokens[kind]
        assert await status(old) in (200, 202)
        await asyncio.to_thread(_cli, faces, group, "revoke", name)
        assert await status(old) == 401  # the very next request
        new = (await asyncio.to_thread(_cli, faces, group, "rotate", name)).splitlines()[0]
        assert new.startswith("ejx_") and new != old
        assert await status(new) in (200, 202)
        assert await status(old) == 401
        listed = await asyncio.to_thread(_cli, faces, group, "list")
        assert name in listed and new not in listed and "active" in listed


async def test_revoking_an_authority_ends_its_dashboard_sessions(faces: Faces) -> None:
    async with faces.client() as browser:
        signed_in = await browser.post("/dashboard/session", data={"token": faces.tokens["authority"],
                                                                    "next": "/dashboard"})
        assert signed_in.status_code == 303
        assert "httponly" in signed_in.headers["set-cookie"].lower()
        assert "samesite=strict" in signed_in.headers["set-cookie"].lower()
        assert (await browser.get("/v1/monitoring/schools")).status_code == 200  # on the cookie alone
        assert 'id="schools"' in (await browser.get("/dashboard")).text
        await asyncio.to_thread(_cli, faces, "authorities", "rotate", "ministry")
        assert (await browser.get("/v1/monitoring/schools")).status_code == 401
        assert 'id="sign-in"' in (await browser.get("/dashboard")).text
    async with faces.client() as browser:
        vendor = await browser.post("/dashboard/session", data={"token": faces.tokens["vendor"]})
        assert vendor.status_code == 403 and "set-cookie" not in vendor.headers


async def test_repeated_bad_tokens_from_one_client_get_429(faces: Faces) -> None:
    statuses = []
    async with faces.client(address="10.1.2.3") as attacker:
        attacker.headers["Authorization"] = "Bearer ejx_guess"
        for _ in range(60):
            statuses.append((await attacker.get("/v1/monitoring/schools")).status_code)
        refused = await attacker.get("/v1/monitoring/schools", headers={
            "Authorization": f"Bearer {faces.tokens['authority']}"})
    assert statuses[:20] == [401] * 20 and set(statuses[20:]) == {429}
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert refused.json()["code"] == "TooManyRequests" and refused.json()["retriable"] is True
    async with faces.client("authority", address="10.1.2.4") as someone_else:
        assert (await someone_else.get("/v1/monitoring/schools")).status_code == 200


async def test_dashboards_left_open_over_a_restart_do_not_lock_their_office_out(faces: Faces) -> None:
    """After a restart (or the 8 h expiry) every open tab of an office behind one address calls the JSON APIs with
    its ended session and reloads into the sign-in form: signing in again must still work from that address."""
    stale = {"Cookie": "ejx_session=a-session-of-the-process-before-the-restart"}
    async with faces.client(address="10.7.7.7") as office:
        for _ in range(6):  # six tabs: each page load makes four JSON calls, then reloads
            for path in ("/v1/monitoring/schools", "/v1/monitoring/pipeline", "/v1/analytics/grades",
                         "/v1/analytics/grades"):
                assert (await office.get(path, headers=stale)).status_code == 401
            assert 'id="sign-in"' in (await office.get("/dashboard", headers=stale)).text
        signed_in = await office.post("/dashboard/session", data={"token": faces.tokens["authority"],
                                                                   "next": "/dashboard"}, headers=stale)
        assert signed_in.status_code == 303, signed_in.text
        assert (await office.get("/v1/monitoring/schools")).status_code == 200
        guessing = [(await office.get("/v1/monitoring/schools", headers={"Authorization": "Bearer ejx_guess"})
                     ).status_code for _ in range(25)]
    assert guessing[:20] == [401] * 20 and set(guessing[20:]) == {429}  # unknown tokens are still throttled
