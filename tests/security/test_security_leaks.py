"""Nothing leaks and nothing malformed gets past the door: masked DSNs, no hosts in public answers,
NUL bytes / year-1 dates / over-long identifiers → 400 on every face, the fault shape for every error,
an honest OpenAPI whose every example is accepted, and /docs that works offline."""

from __future__ import annotations

import asyncio
import json

import pytest
from click.testing import CliRunner

from adapters import examples
from broker.app.cli import main
from broker.infra.postgres import create_pool
from tests.security.conftest import SCHOOL_A, Faces

SECRET = "s3cret-pa55"


def _cli(*args: str, env: dict[str, str]):  # noqa: ANN202 - a click Result
    return CliRunner().invoke(main, list(args), env=env)


async def test_the_database_password_is_never_printed(faces: Faces) -> None:
    base = faces.settings.database_dsn.replace("postgresql://ejx@", f"postgresql://ejx:{SECRET}@")
    down = f"postgresql://ejx:{SECRET}@127.0.0.1:1/ejx"
    kafka = {"EJX_KAFKA_BOOTSTRAP": faces.settings.kafka_address}
    status = await asyncio.to_thread(_cli, "infra", "status", env={**kafka, "EJX_DATABASE_URL": base})
    listed = await asyncio.to_thread(_cli, "vendors", "list", env={"EJX_DATABASE_URL": down})
    served = await asyncio.to_thread(_cli, "serve", "--components", "dashboard", "--fail-fast",
                                     env={**kafka, "EJX_DATABASE_URL": down, "EJX_EVENTS_TOPIC": faces.settings.events_topic,
                                          "EJX_DLQ_TOPIC": faces.settings.dlq_topic,
                                          "EJX_INTERAGENCY_TOPIC": faces.settings.interagency_topic})
    assert status.exit_code == 0 and "postgresql://ejx:***@127.0.0.1" in status.output
    assert listed.exit_code == served.exit_code == 1
    assert listed.stderr.startswith("Failure: PostgreSQL at postgresql://ejx:***@127.0.0.1:1/ejx is unreachable")
    for result in (status, listed, served):
        assert SECRET not in result.output and SECRET not in (result.stderr or ""), result.output


async def test_outages_name_no_host_to_anyone(faces: Faces) -> None:
    from broker.app import bootstrap

    pool = await create_pool(faces.settings, max_size=2)
    async with bootstrap.runtime(faces.settings, ("dashboard",)) as built:
        await built.pool.close()  # every query now fails the way a lost database does
        faces_down = Faces(built.app, faces.settings, pool, faces.tokens)
        async with faces_down.client() as anonymous, faces_down.client("authority") as authority:
            guess = {"Authorization": "Bearer ejx_guess"}
            answers = [await anonymous.get("/v1/monitoring/schools", headers=guess),
                       await authority.get("/v1/analytics/grades"), await anonymous.get("/readyz")]
    await pool.close()
    for answer in answers:
        assert answer.status_code == 503 and "retry-after" in answer.headers or answer.url.path == "/readyz"
        for leak in ("127.0.0.1", "15432", "19092", "postgresql://"):
            assert leak not in answer.text, (answer.url, answer.text)


BAD_QUERIES = [
    ("authority", "/v1/monitoring/schools", {"district": "Цент\x00ральный"}),
    ("authority", "/v1/monitoring/schools", {"vendor": "dnevnik\x00"}),
    ("authority", "/v1/monitoring/schools", {"as_of": "0001-01-01T00:00:00Z"}),
    ("authority", "/v1/monitoring/schools", {"as_of": "9999-12-31T23:59:59+14:00"}),
    ("authority", "/v1/monitoring/schools", {"as_of": "0.0"}),
    ("authority", "/v1/monitoring/schools", {"district": "д" * 65}),
    ("authority", "/v1/analytics/grades", {"school": "sch\x00"}),
    ("authority", "/v1/analytics/grades", {"subject": "MATH\x00"}),
    ("authority", "/v1/analytics/grades", {"from": "0001-01-01"}),
    ("authority", "/v1/analytics/grades", {"to": "0.0"}),
    ("authority", "/v1/analytics/grades", {"to": "2026-02-30"}),
    ("authority", "/v1/analytics/grades", {"group_by": "school,\x00"}),
    ("portal_client", "/v1/diary/st-77k3f9q2m", {"from": "0001-01-01"}),
    ("portal_client", "/v1/diary/st-%00k3f9q2m", {}),
    ("portal_client", "/v1/diary/st-" + "7" * 5000, {}),
]


@pytest.mark.parametrize("who,path,query", BAD_QUERIES, ids=lambda v: repr(v)[:40])
async def test_malformed_query_parameters_are_invalid_content(faces: Faces, who: str, path: str,
                                                              query: dict[str, str]) -> None:
    async with faces.client(who) as client:
        answer = await client.get(path, params=query)
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "InvalidContent" and answer.json()["retriable"] is False


@pytest.mark.parametrize("field,value", [("student_id", "st-77k3\x00f9q2m"), ("school_id", "sch-770001\x00"),
                                         ("student_id", "st-" + "7k" * 2500), ("comment", "a\x00b"),
                                         ("lesson_date", "0001-01-01"), ("occurred_at", "0001-01-01T00:00:00Z")])
async def test_hostile_event_fields_are_invalid_content(faces: Faces, field: str, value: str) -> None:
    event = {**examples.EVENTS["GradePosted"], field: value, "source_record_id": f"hostile-{field}"}
    async with faces.client("vendor") as client:
        answer = await client.post("/v1/events", json=event)
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "InvalidContent" and answer.json()["retriable"] is False
    assert len(answer.text) < 5000  # a 5,000-character id is not echoed back whole


async def test_errors_outside_routes_have_the_fault_shape(faces: Faces) -> None:
    async with faces.client() as client:
        missing = await client.get("/nowhere")
        wrong_method = await client.delete("/v1/events")
        sign_in_nul = await client.post("/dashboard/session", data={"token": "ejx_\x00"})
        crowded_form = await client.post("/dashboard/session", content=b"token=x&next=/dashboard&a=1&b=2&c=3",
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (missing.status_code, missing.json()["code"]) == (404, "NotFound")
    assert (crowded_form.status_code, crowded_form.json()["code"]) == (400, "InvalidContent")
    assert wrong_method.status_code == 405 and set(wrong_method.json()) == {"code", "description", "retriable",
                                                                          "details"}
    assert sign_in_nul.status_code == 401


async def test_empty_requests_are_refused_alike(faces: Faces) -> None:
    async with faces.client("vendor") as client:
        events = await client.post("/v1/events", json=[])
        bundle = await client.post("/v1/oneroster/results", json={"results": [], "lineItems": [], "classes": [],
                                                                   "academicSessions": []})
        nothing = await client.post("/v1/oneroster/results", json={})
    assert events.status_code == bundle.status_code == nothing.status_code == 400
    assert bundle.json()["code"] == "InvalidContent"


async def test_openapi_declares_every_status_with_the_fault_body_and_no_422(faces: Faces) -> None:
    async with faces.client() as client:
        spec = (await client.get("/openapi.json")).json()
    operations = {(method, path): op for path, item in spec["paths"].items() for method, op in item.items()}
    assert ("get", "/metrics") in operations and ("post", "/v1/events") in operations
    for (method, path), operation in operations.items():
        statuses = set(operation["responses"])
        assert "422" not in statuses, path
        assert {"400", "408", "429", "503"} <= statuses, (method, path, statuses)
        if path not in ("/healthz", "/readyz") and not path.startswith("/smev/"):
            assert {"401", "403"} <= statuses, (method, path, statuses)
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/FaultBody"}, (path, status)


async def test_every_openapi_example_is_accepted(faces: Faces) -> None:
    async with faces.client() as anonymous:
        spec = (await anonymous.get("/openapi.json")).json()
    events = spec["paths"]["/v1/events"]["post"]["requestBody"]["content"]
    oneroster = spec["paths"]["/v1/oneroster/results"]["post"]["requestBody"]["content"]["application/json"]
    async with faces.client("vendor") as vendor:
        for name, example in events["application/json"]["examples"].items():
            answer = await vendor.post("/v1/events", json=example["value"])
            assert answer.status_code == 202, (name, answer.text)
        for name, example in events["application/xml"]["examples"].items():
            answer = await vendor.post("/v1/events", content=example["value"].encode(),
                                       headers={"Content-Type": "application/xml"})
            assert answer.status_code == 202, (name, answer.text)
        answer = await vendor.post("/v1/oneroster/results", json=oneroster["example"])
        assert answer.status_code == 202, answer.text
        assert json.loads(answer.text)["events"][0]["duplicate"] is False
    async with faces.client("authority") as authority:
        for path in ("/v1/monitoring/schools", "/v1/analytics/grades"):
            params = {p["name"]: p["schema"]["examples"][0] for p in spec["paths"][path]["get"]["parameters"]
                      if p["schema"].get("examples")}
            answer = await authority.get(path, params=params)
            assert answer.status_code == 200, (path, params, answer.text)
    assert SCHOOL_A == examples.EVENTS["GradePosted"]["school_id"]
