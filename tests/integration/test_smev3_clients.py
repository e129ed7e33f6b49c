"""SMEV 3 clients that know nothing of ejx's internals, against a running ejx app on real PostgreSQL.

zeep builds its client from the WSDL ejx serves and calls GetRequest → Ack through it (a zeep plugin signs
with the caller's key, as agencies' clients do); ``ejx participants`` and ``ejx smev3 pull`` run as the
commands operators, agencies and portals type.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path

import zeep
from lxml import etree

from broker.app import bootstrap
from broker.smev3 import codec
from broker.smev3.codec import Version
from broker.xml import hardened
from broker.xml.schemas import Schemas
from broker.xml.signing import find_signatures, sign_reference, verify_reference
from tests.delivery_support import serving
from tests.integration.test_smev3_diary import feed_journal
from tests.smev3_support import enqueue, gost_pair

EJX = str(Path(sys.executable).with_name("ejx"))


class CallerSignature(zeep.Plugin):
    """Signs the element with Id SIGNED_BY_CALLER into CallerInformationSystemSignature; keeps each answer."""

    def __init__(self, key) -> None:
        self.key = key
        self.answers: list[bytes] = []

    def egress(self, envelope, http_headers, operation, binding_options):
        (target,) = envelope.xpath("//*[@Id='SIGNED_BY_CALLER']")
        codec.attach_signature(target.getparent(), "CallerInformationSystemSignature",
                               sign_reference(target, self.key))
        return envelope, http_headers

    def ingress(self, envelope, http_headers, operation):
        self.answers.append(etree.tostring(envelope))
        return envelope, http_headers


async def _running_ejx(settings, pool, stack: AsyncExitStack, smev, directory) -> str:
    """ejx's HTTP app with the smev component, wired by the bootstrap, served on a free port; its SMEV key
    (``smev``, which signs e-diary answers) read from files as ``ejx serve`` reads it."""
    (directory / "ejx-smev.key").write_bytes(smev.key_pem)
    (directory / "ejx-smev.crt").write_bytes(smev.cert_pem)
    settings = settings.model_copy(update={"smev_key_file": directory / "ejx-smev.key",
                                           "smev_cert_file": directory / "ejx-smev.crt"})
    built = bootstrap.Runtime(settings=settings, pool=pool, schemas=Schemas.load(), producer=None)
    app = await bootstrap.http_app(settings, built, {"smev"}, stack)
    return await stack.enter_async_context(serving(app))


async def _ejx(*args: str, settings) -> tuple[int, str, str]:
    env = {**os.environ, "EJX_DATABASE_URL": settings.database_dsn, "EJX_LOG_LEVEL": "warning"}
    process = await asyncio.create_subprocess_exec(EJX, *args, env=env, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode, out.decode(), err.decode()


async def _registered_agency(settings, directory: Path, pinned: dict) -> None:
    """RSMEV registered by `ejx participants add`, its key and certificate in ``directory`` (rsmev.key,
    rsmev.crt) beside the exchange certificates it pins (``<name>.crt``)."""
    agency = gost_pair("RSMEV")
    for name, pair in (*pinned.items(), ("rsmev", agency)):
        (directory / f"{name}.crt").write_bytes(pair.cert_pem)
    (directory / "rsmev.key").write_bytes(agency.key_pem)
    assert (await _ejx("participants", "add", "RSMEV", "--cert", str(directory / "rsmev.crt"),
                       settings=settings))[0] == 0


async def test_zeep_from_the_served_wsdl_drives_get_request_then_ack(db_settings, db_pool, tmp_path):
    ejx_smev, agency = gost_pair("ejx SMEV"), gost_pair("RSMEV")
    (tmp_path / "rsmev.crt").write_bytes(agency.cert_pem)
    code, out, err = await _ejx("participants", "add", "RSMEV", "--cert", str(tmp_path / "rsmev.crt"),
                                "--service", "regional SMEV node", settings=db_settings)
    assert code == 0, err
    mine = await enqueue(db_pool, ejx_smev.key)

    async with AsyncExitStack() as stack:
        base = await _running_ejx(db_settings, db_pool, stack, ejx_smev, tmp_path)
        plugin = CallerSignature(agency.key)
        client = await asyncio.to_thread(zeep.Client, f"{base}/smev3/1.2?wsdl", plugins=[plugin])
        assert client.service._binding_options["address"] == f"{base}/smev3/1.2"
        skip = zeep.xsd.SkipValue
        got = await asyncio.to_thread(client.service.GetRequest, MessageTypeSelector={
            "Id": "SIGNED_BY_CALLER", "NamespaceURI": skip, "RootElementLocalName": skip,
            "Timestamp": datetime.now(UTC)})
        assert got["Request"]["SenderProvidedRequestData"]["MessageID"] == mine
        answer = hardened.parse(plugin.answers[-1])
        codec.validate(answer, Version.V1_2)
        assert {verify_reference(s).reference_id for s in find_signatures(answer)} == {"SIGNED_BY_CALLER",
                                                                                       "SIGNED_BY_SMEV"}
        await asyncio.to_thread(client.service.Ack, AckTargetMessage={
            "_value_1": mine, "Id": "SIGNED_BY_CALLER", "accepted": True})
        codec.validate(hardened.parse(plugin.answers[-1]), Version.V1_2)
        empty = await asyncio.to_thread(client.service.GetRequest, MessageTypeSelector={
            "Id": "SIGNED_BY_CALLER", "NamespaceURI": skip, "RootElementLocalName": skip,
            "Timestamp": datetime.now(UTC)})
        assert empty is None or empty["Request"] is None
    assert await db_pool.fetchval("SELECT accepted FROM smev_queue WHERE message_id = $1", uuid.UUID(mine))

    code, out, err = await _ejx("participants", "list", settings=db_settings)
    assert code == 0, err
    (line,) = out.splitlines()
    mnemonic, service, subject, serial, not_before, not_after, state = line.split("\t")
    assert (mnemonic, service, subject, serial, state) == ("RSMEV", "regional SMEV node", agency.facts.subject,
                                                          agency.facts.serial_number, "valid")
    assert not_before.endswith("+03:00") and not_after.endswith("+03:00")  # Europe/Moscow


async def test_ejx_smev3_pull_records_durably_then_acks(db_settings, db_pool, tmp_path):
    ejx_smev = gost_pair("ejx SMEV")
    await _registered_agency(db_settings, tmp_path, {"ejx-smev": ejx_smev})
    mine = await enqueue(db_pool, ejx_smev.key)
    inbox = tmp_path / "inbox"

    async with AsyncExitStack() as stack:
        served = db_settings.model_copy(update={"smev_visibility_timeout_s": 0.5})
        base = await _running_ejx(served, db_pool, stack, ejx_smev, tmp_path)
        pull = ("smev3", "pull", "--url", f"{base}/smev3/1.3", "--key", str(tmp_path / "rsmev.key"),
                "--cert", str(tmp_path / "rsmev.crt"), "--trust", str(tmp_path / "ejx-smev.crt"),
                "--type", "urn://ejx/events/1:TermGradeFinalized", "--out", str(inbox), "--once")
        code, out, err = await _ejx(*pull, settings=db_settings)  # no --ack: the message stays queued
        assert code == 0, err
        assert out.split("\t")[:2] == [mine, "received"]
        await asyncio.sleep(0.6)  # not acknowledged: handed out again after the visibility timeout
        code, out, err = await _ejx(*pull, "--ack", settings=db_settings)
        assert code == 0, err
        assert out.split("\t")[:2] == [mine, "duplicate"]
        code, out, err = await _ejx(*pull, "--ack", settings=db_settings)
        assert (code, out, err.strip().splitlines()[-1]) == (0, "", "the queue is empty")
    assert await db_pool.fetchval("SELECT accepted FROM smev_queue WHERE message_id = $1", uuid.UUID(mine))
    recorded = hardened.parse((inbox / f"{mine}.xml").read_bytes())
    assert len([verify_reference(s) for s in find_signatures(recorded)]) == 2
    assert [p.name for p in inbox.iterdir()] == [f"{mine}.xml"]


async def test_ejx_smev3_request_prints_the_diary_and_says_no_data(db_settings, db_pool, tmp_path):
    ejx_smev, portal = gost_pair("ejx SMEV"), gost_pair("EPGU")
    (tmp_path / "epgu.crt").write_bytes(portal.cert_pem)
    (tmp_path / "epgu.key").write_bytes(portal.key_pem)
    assert (await _ejx("participants", "add", "EPGU", "--cert", str(tmp_path / "epgu.crt"), "--service", "diary",
                       settings=db_settings))[0] == 0
    await feed_journal(db_settings, db_pool)

    async with AsyncExitStack() as stack:
        base = await _running_ejx(db_settings, db_pool, stack, ejx_smev, tmp_path)
        ask = ("smev3", "request", "--url", f"{base}/smev3/1.2", "--key", str(tmp_path / "epgu.key"),
               "--cert", str(tmp_path / "epgu.crt"), "--trust", str(tmp_path / "ejx-smev.crt"), "--wait", "20")
        code, out, err = await _ejx(*ask, "--pupil", "st-anna1", "--from", "2026-03-01", "--to", "2026-03-31",
                                    settings=db_settings)
        assert code == 0, err
        assert "E-diary of st-anna1" in out and "MSK" in out
        assert "пересдача" in out and "02.03.2026" in out and "Упражнение 34" in out
        code, out, err = await _ejx(*ask, "--pupil", "st-nobody9", settings=db_settings)
        assert code == 3 and "NO_DATA" in out, err
        code, out, err = await _ejx(*ask, "--pupil", "12345678901", settings=db_settings)
        assert code == 1 and err.strip().splitlines()[-1].startswith("InvalidContent: ")
    assert await db_pool.fetchval("SELECT count(*) FROM smev_queue WHERE kind = 'response' AND acked_at IS NULL") == 0


async def test_ejx_smev3_pull_does_not_refuse_for_good_a_message_signed_by_a_certificate_it_does_not_trust(
        db_settings, db_pool, tmp_path):
    """accepted=false is final in SMEV ("ignored"): a client pinning the exchange's next certificate must not
    throw away the backlog signed by the current one. The message stays queued and comes back."""
    ejx_smev = gost_pair("ejx SMEV")
    await _registered_agency(db_settings, tmp_path, {"next-smev": gost_pair("ejx SMEV next")})
    mine = await enqueue(db_pool, ejx_smev.key)

    async with AsyncExitStack() as stack:
        base = await _running_ejx(db_settings, db_pool, stack, ejx_smev, tmp_path)
        code, out, err = await _ejx("smev3", "pull", "--url", f"{base}/smev3/1.2", "--key", str(tmp_path / "rsmev.key"),
                                    "--cert", str(tmp_path / "rsmev.crt"), "--trust", str(tmp_path / "next-smev.crt"),
                                    "--out", str(tmp_path / "inbox"), "--once", "--ack", settings=db_settings)
    assert code == 0, err
    assert f"{mine}\trefused (not acknowledged: it comes back)\tsigned by untrusted certificates" in err
    row = await db_pool.fetchrow("SELECT acked_at, accepted FROM smev_queue WHERE message_id = $1", uuid.UUID(mine))
    assert (row["acked_at"], row["accepted"]) == (None, None)
