"""ejx's SMEV 3 endpoint on real PostgreSQL: callers known by their signatures, each seeing only its own queue.

Every answer is checked against ejx's XSD; every refusal is a soap:Fault of its code, and leaves the message
where it was: in its owner's queue, handed out to nobody.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from click.testing import CliRunner
from fastapi import FastAPI

from broker.access.participants import Participants
from broker.app.cli import main
from broker.domain.faults import InvalidContent
from broker.smev3 import codec
from broker.smev3.codec import Version
from broker.smev3.exchange import MessageExchange
from broker.smev3.queue import SmevQueue
from broker.smev3.service import smev3_router
from broker.xml import hardened
from broker.xml.signing import find_signatures, verify_reference
from tests.delivery_support import free_port, serving
from tests.smev3_support import (
    ack,
    answer_of,
    ecdsa_pair,
    enqueue,
    exchange_app,
    expired_pair,
    fault_code,
    get_request,
    gost_pair,
    signed,
)

V12, V13 = Version.V1_2, Version.V1_3
SOAP_HEADERS = {"Content-Type": "text/xml; charset=utf-8"}


@pytest.fixture(scope="module")
def keys():
    return {"ejx": gost_pair("ejx SMEV"), "rsmev": gost_pair("RSMEV"), "rsmev-next": ecdsa_pair("RSMEV rotated"),
            "epgu": gost_pair("EPGU"), "stranger": gost_pair("nobody"), "expired": expired_pair("RSMEV old")}


@pytest.fixture
async def endpoint(db_pool, keys):
    participants = Participants(db_pool)
    for mnemonic, name in (("RSMEV", "rsmev"), ("RSMEV", "rsmev-next"), ("RSMEV", "expired"), ("EPGU", "epgu")):
        await participants.add(mnemonic, keys[name].facts)
    async with exchange_app(db_pool, visibility_timeout_s=1.0) as base, httpx.AsyncClient(base_url=base) as client:
        yield client


async def _post(client, version, body: bytes):
    return await client.post(f"/smev3/{version.value}", content=body, headers=SOAP_HEADERS)


def _message_id(root) -> str | None:
    found = root.xpath("//*[local-name()='SenderProvidedRequestData']/*[local-name()='MessageID']/text()")
    return found[0] if found else None


@pytest.mark.parametrize("version", [V12, V13], ids=["1.2", "1.3"])
async def test_get_request_hands_out_the_callers_own_message_with_both_signatures_then_ack_empties_it(
        endpoint, db_pool, keys, version):
    mine = await enqueue(db_pool, keys["ejx"].key, recipient="RSMEV", test=True)
    await enqueue(db_pool, keys["ejx"].key, recipient="EPGU", record="theirs")

    root = answer_of(await _post(endpoint, version, get_request(version, keys["rsmev"].key)), version)
    assert _message_id(root) == mine
    covered = {verify_reference(s).reference_id: verify_reference(s) for s in find_signatures(root)}
    assert set(covered) == {"SIGNED_BY_CALLER", "SIGNED_BY_SMEV"}
    assert {s.certificate_der for s in covered.values()} == {keys["ejx"].key.certificate_der}
    data = covered["SIGNED_BY_CALLER"].covered
    assert data.find(f"{{{version.types}}}TestMessage") is not None
    content = data.find(f"{{{version.basic}}}MessagePrimaryContent")
    assert [c.tag for c in content] == ["{urn://ejx/events/1}TermGradeFinalized"]
    assert root.xpath("//*[local-name()='MessageType']/text()") == ["BROADCAST"]

    response = await _post(endpoint, version, ack(version, keys["rsmev"].key, mine))
    assert response.status_code == 200
    answer_of(response, version)
    empty = answer_of(await _post(endpoint, version, get_request(version, keys["rsmev"].key)), version)
    assert _message_id(empty) is None  # EPGU's message is not RSMEV's
    assert await db_pool.fetchval("SELECT accepted FROM smev_queue WHERE message_id = $1", uuid.UUID(mine))


async def test_a_rotated_certificate_of_the_same_participant_reads_the_same_queue(endpoint, db_pool, keys):
    mine = await enqueue(db_pool, keys["ejx"].key)
    root = answer_of(await _post(endpoint, V12, get_request(V12, keys["rsmev-next"].key)), V12)
    assert _message_id(root) == mine


async def test_the_selector_filters_by_business_root(endpoint, db_pool, keys):
    mine = await enqueue(db_pool, keys["ejx"].key)
    other = get_request(V12, keys["rsmev"].key, namespace_uri="urn://ejx/events/1", root_local_name="GradePosted")
    assert _message_id(answer_of(await _post(endpoint, V12, other), V12)) is None
    same = get_request(V12, keys["rsmev"].key, namespace_uri="urn://ejx/events/1",
                       root_local_name="TermGradeFinalized")
    assert _message_id(answer_of(await _post(endpoint, V12, same), V12)) == mine


def _tampered(key) -> bytes:
    root = hardened.parse(get_request(V12, key))
    stamp = root.xpath("//*[local-name()='Timestamp']")[0]
    stamp.text = (datetime.fromisoformat(stamp.text) + timedelta(seconds=1)).isoformat(timespec="milliseconds")
    return codec.to_bytes(root)


def _unsigned() -> bytes:
    return codec.to_bytes(codec.get_request(V12, timestamp=datetime.now(UTC)).envelope)


async def test_refused_callers_get_their_fault_and_the_message_stays_in_its_owners_queue(endpoint, db_pool, keys):
    mine = await enqueue(db_pool, keys["ejx"].key)
    refusals = {
        "SenderIsNotRegistered": get_request(V12, keys["stranger"].key),
        "SignatureVerificationFault": get_request(V12, keys["expired"].key),
        "InvalidContent": get_request(V12, keys["rsmev"].key, timestamp=datetime.now(UTC) - timedelta(minutes=31)),
    }
    for code, body in refusals.items():
        response = await _post(endpoint, V12, body)
        assert (response.status_code, fault_code(answer_of(response, V12))) == (500, code), code
    for body in (_tampered(keys["rsmev"].key), _unsigned()):
        response = await _post(endpoint, V12, body)
        assert fault_code(answer_of(response, V12)) == "SignatureVerificationFault"
    # Another participant can neither read nor acknowledge RSMEV's message.
    assert _message_id(answer_of(await _post(endpoint, V12, get_request(V12, keys["epgu"].key)), V12)) is None
    response = await _post(endpoint, V12, ack(V12, keys["epgu"].key, mine))
    assert fault_code(answer_of(response, V12)) == "TargetMessageIsNotFound"
    response = await _post(endpoint, V12, ack(V12, keys["rsmev"].key, str(uuid.uuid1())))
    assert fault_code(answer_of(response, V12)) == "TargetMessageIsNotFound"
    # The old anonymous JSON queue is gone.
    for path in ("/smev/v1/get-message", "/smev/v1/ack"):
        assert (await endpoint.post(path, json={"recipient": "RSMEV"})).status_code in (404, 405)

    assert await db_pool.fetchval("SELECT deliveries FROM smev_queue WHERE message_id = $1", uuid.UUID(mine)) == 0
    root = answer_of(await _post(endpoint, V12, get_request(V12, keys["rsmev"].key)), V12)
    assert _message_id(root) == mine


def _wrapped(key) -> bytes:
    """The signed selector moved into the signature slot's neighbourhood, an unsigned one read in its place."""
    root = hardened.parse(get_request(V12, key))
    selector = root.xpath("//*[local-name()='MessageTypeSelector']")[0]
    forged = copy.deepcopy(selector)
    forged.set("Id", "FORGED")
    selector.getparent().insert(0, forged)
    return codec.to_bytes(root)


HOSTILE = {
    "dtd": b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>',
    "xinclude": (f'<soap:Envelope xmlns:soap="{codec.SOAP}"><soap:Body><xi:include '
                 'xmlns:xi="http://www.w3.org/2001/XInclude" href="/etc/passwd"/></soap:Body></soap:Envelope>'
                 ).encode(),
    "soap12": b'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body/></e:Envelope>',
    "not-xml": b"{\"recipient\": \"RSMEV\"}",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_hostile_soap_is_a_fault_and_nothing_else(endpoint, db_pool, keys, name):
    mine = await enqueue(db_pool, keys["ejx"].key)
    response = await _post(endpoint, V12, HOSTILE[name])
    assert (response.status_code, fault_code(answer_of(response, V12))) == (500, "InvalidContent")
    assert await db_pool.fetchval("SELECT deliveries FROM smev_queue WHERE message_id = $1", uuid.UUID(mine)) == 0


async def test_wrapping_oversized_and_foreign_version_requests_are_refused(endpoint, db_pool, keys):
    mine = await enqueue(db_pool, keys["ejx"].key)
    response = await _post(endpoint, V12, _wrapped(keys["rsmev"].key))
    assert fault_code(answer_of(response, V12)) in ("SignatureVerificationFault", "InvalidContent")
    response = await _post(endpoint, V12, b"<a>" + b" " * (2 << 20) + b"</a>")
    assert fault_code(answer_of(response, V12)) == "InvalidContent"
    response = await _post(endpoint, V12, get_request(V13, keys["rsmev"].key))
    assert fault_code(answer_of(response, V12)) == "UnknownMessageType"
    assert await db_pool.fetchval("SELECT deliveries FROM smev_queue WHERE message_id = $1", uuid.UUID(mine)) == 0


async def test_a_message_handed_out_and_not_acknowledged_comes_back_with_the_same_bytes(endpoint, db_pool, keys):
    """A crash between hand-out and Ack: after the visibility timeout, the same MessageID and signatures."""
    mine = await enqueue(db_pool, keys["ejx"].key)
    first = answer_of(await _post(endpoint, V12, get_request(V12, keys["rsmev"].key)), V12)
    assert _message_id(answer_of(await _post(endpoint, V12, get_request(V12, keys["rsmev"].key)), V12)) is None
    await asyncio.sleep(1.2)
    again = answer_of(await _post(endpoint, V12, get_request(V12, keys["rsmev"].key)), V12)
    assert _message_id(again) == _message_id(first) == mine
    assert codec.to_bytes(again) == codec.to_bytes(first)
    assert await db_pool.fetchval("SELECT deliveries FROM smev_queue WHERE message_id = $1", uuid.UUID(mine)) == 2
    # The message log has the first take, signed by its reader; the empty poll and the second take add nothing.
    taken = await db_pool.fetch("SELECT participant, message_id FROM message_log WHERE kind = 'smev3-take'")
    assert [(r["participant"], str(r["message_id"])) for r in taken] == [("RSMEV", mine)]


async def test_the_first_ack_is_final_and_a_repeat_that_says_otherwise_changes_nothing(endpoint, db_pool, keys):
    """A refusal (accepted=false) is final in SMEV: a later Ack, accepted or not, is answered and ignored."""
    mine = await enqueue(db_pool, keys["ejx"].key)
    answer_of(await _post(endpoint, V12, get_request(V12, keys["rsmev"].key)), V12)
    answer_of(await _post(endpoint, V12, ack(V12, keys["rsmev"].key, mine, accepted=False)), V12)
    first = await db_pool.fetchrow("SELECT acked_at, accepted FROM smev_queue WHERE message_id = $1", uuid.UUID(mine))
    assert first["accepted"] is False

    repeated = await _post(endpoint, V12, ack(V12, keys["rsmev"].key, mine, accepted=True))
    assert repeated.status_code == 200
    answer_of(repeated, V12)
    after = await db_pool.fetchrow("SELECT acked_at, accepted FROM smev_queue WHERE message_id = $1", uuid.UUID(mine))
    assert dict(after) == dict(first)
    await db_pool.execute("UPDATE smev_queue SET visible_at = now()")  # its visibility timeout over, at once
    assert _message_id(answer_of(await _post(endpoint, V12, get_request(V12, keys["rsmev"].key)), V12)) is None


async def test_queue_statistics_and_status_of_the_caller(endpoint, db_pool, keys):
    await enqueue(db_pool, keys["ejx"].key)
    await enqueue(db_pool, keys["ejx"].key, record="term-2")
    await enqueue(db_pool, keys["ejx"].key, recipient="EPGU", record="theirs")
    body = signed(_queue_query(V12, "GetIncomingQueueStatistics"), keys["rsmev"].key)
    root = answer_of(await _post(endpoint, V12, body), V12)
    stats = root.xpath("//*[local-name()='QueueStatistics']")
    assert [(s.get("queueName"), s.get("pendingMessageNumber")) for s in stats] == [
        ("{urn://ejx/events/1}TermGradeFinalized", "2")]
    for version in (V12, V13):
        root = answer_of(await _post(endpoint, version, signed(_queue_query(version, "GetStatus"),
                                                                keys["rsmev"].key)), version)
        assert root.xpath("//*[local-name()='GetStatusResponse']") and not root.xpath("//*[local-name()="
                                                                                     "'AsyncProcessingStatus']")


def _queue_query(version: Version, operation: str) -> codec.Unsigned:
    """GetStatus / GetIncomingQueueStatistics: a signed basic:Timestamp (the codec builds GetRequest only)."""
    unsigned = codec.get_request(version, timestamp=datetime.now(UTC))
    request = unsigned.envelope[0][0]
    stamp = unsigned.target.find(f"{{{version.basic}}}Timestamp")
    request.tag = f"{{{version.types}}}{operation}Request"
    request.remove(unsigned.target)
    stamp.set("Id", "SIGNED_BY_CALLER")
    request.append(stamp)
    return codec.Unsigned(unsigned.envelope, stamp)


async def test_postgresql_down_is_the_retriable_smev_failure(keys):
    pool = await asyncpg.create_pool(f"postgresql://ejx@127.0.0.1:{free_port()}/ejx", min_size=0, max_size=1)
    app = FastAPI()
    app.include_router(smev3_router(MessageExchange(queue=SmevQueue(pool), participants=Participants(pool))))
    try:
        async with serving(app) as base, httpx.AsyncClient(base_url=base) as client:
            response = await _post(client, V12, get_request(V12, keys["rsmev"].key))
            assert (response.status_code, fault_code(answer_of(response, V12))) == (500, "SMEVFailure")
    finally:
        await pool.close()


async def test_a_certificate_belongs_to_one_participant(db_pool, keys):
    participants = Participants(db_pool)
    assert await participants.add("RSMEV", keys["rsmev"].facts) is True
    assert await participants.add("RSMEV", keys["rsmev"].facts) is False
    with pytest.raises(InvalidContent, match="another participant"):
        await participants.add("EPGU", keys["rsmev"].facts)
    with pytest.raises(InvalidContent, match="mnemonic"):
        await participants.add("not a mnemonic", keys["epgu"].facts)
    assert [p.mnemonic for p in await participants.all()] == ["RSMEV"]


async def test_a_participant_mnemonic_follows_the_envelopes_rule(db_pool, keys):
    """One rule with routing and the envelope: a recipient routing accepts can be registered to read its queue,
    and a name no envelope may carry cannot be registered."""
    participants = Participants(db_pool)
    with pytest.raises(InvalidContent, match="not a mnemonic"):
        await participants.add("_RSMEV", keys["rsmev"].facts)
    assert await participants.add("RS-MEV", keys["rsmev"].facts) is True


async def test_a_rotated_certificate_keeps_its_participants_service(db_pool, keys):
    """The e-diary is granted by the service: a rotation registered like the first certificate but without
    --service must not lock the portal out of it."""
    participants = Participants(db_pool)
    assert await participants.add("EPGU", keys["epgu"].facts, service="diary")
    assert await participants.add("EPGU", keys["stranger"].facts)
    assert await participants.add("RSMEV", keys["rsmev"].facts)
    services = {(p.mnemonic, p.subject): p.service for p in await participants.all()}
    assert services == {("EPGU", keys["epgu"].facts.subject): "diary",
                        ("EPGU", keys["stranger"].facts.subject): "diary",
                        ("RSMEV", keys["rsmev"].facts.subject): None}
    rotated = await participants.owner(keys["stranger"].facts.der)
    assert (rotated.mnemonic, rotated.service) == ("EPGU", "diary")


async def test_a_records_later_message_waits_until_its_earlier_one_is_acknowledged(endpoint, db_pool, keys):
    """A grade and its correction share a key: while the grade is handed out and unacknowledged (its answer
    lost, or another reader holds it), the correction is not handed out; other records are."""
    grade = await enqueue(db_pool, keys["ejx"].key, record="term-7")
    correction = await enqueue(db_pool, keys["ejx"].key, record="term-7")
    other = await enqueue(db_pool, keys["ejx"].key, record="term-8")

    async def pulled() -> str | None:
        return _message_id(answer_of(await _post(endpoint, V13, get_request(V13, keys["rsmev"].key)), V13))
    assert await pulled() == grade
    assert await pulled() == other  # not the correction: its grade is out, unacknowledged
    assert await pulled() is None
    await asyncio.sleep(1.2)  # the grade's visibility timeout: it comes back before its correction
    assert await pulled() == grade
    assert (await _post(endpoint, V13, ack(V13, keys["rsmev"].key, grade))).status_code == 200
    assert await pulled() == correction


def _mtom(envelope: bytes, *attachments: bytes, start: str = "<root.message@cxf.apache.org>"
          ) -> tuple[bytes, dict[str, str]]:
    """``envelope`` as CXF sends it with MTOM on: the root part of a multipart/related package."""
    boundary = "uuid:f438a15e-9b5b-491f-9b47-aba4d00b8837"
    parts = [b'Content-Type: application/xop+xml; charset=UTF-8; type="text/xml"\r\n'
             b"Content-Transfer-Encoding: binary\r\nContent-ID: <root.message@cxf.apache.org>\r\n\r\n" + envelope]
    parts += [b"Content-Type: application/octet-stream\r\nContent-ID: <a@cxf>\r\n\r\n" + a for a in attachments]
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return body + b"--" + boundary.encode() + b"--\r\n", {"Content-Type": (
        f'multipart/related; type="application/xop+xml"; boundary="{boundary}"; '
        f'start="{start}"; start-info="text/xml"')}


async def test_an_mtom_package_without_attachments_is_served_like_plain_soap(endpoint, db_pool, keys):
    mine = await enqueue(db_pool, keys["ejx"].key)
    body, headers = _mtom(get_request(V12, keys["rsmev"].key))
    response = await endpoint.post(f"/smev3/{V12.value}", content=body, headers=headers)
    assert response.status_code == 200
    assert _message_id(answer_of(response, V12)) == mine
    body, headers = _mtom(ack(V12, keys["rsmev"].key, mine), start="root.message@cxf.apache.org")  # no <>
    assert (await endpoint.post(f"/smev3/{V12.value}", content=body, headers=headers)).status_code == 200
    assert await db_pool.fetchval("SELECT accepted FROM smev_queue WHERE message_id = $1", uuid.UUID(mine))


async def test_an_mtom_package_with_an_attachment_or_no_part_is_invalid_content(endpoint, db_pool, keys):
    await enqueue(db_pool, keys["ejx"].key)
    with_attachment = _mtom(get_request(V13, keys["rsmev"].key), b"\x00\x01binary")
    no_part = (b"--nothing-here--\r\n", {"Content-Type": 'multipart/related; boundary="other"'})
    for body, headers in (with_attachment, no_part):
        response = await endpoint.post(f"/smev3/{V13.value}", content=body, headers=headers)
        assert (response.status_code, fault_code(answer_of(response, V13))) == (500, "InvalidContent")
    assert await db_pool.fetchval("SELECT sum(deliveries) FROM smev_queue") == 0


async def test_an_mtom_package_nested_thousands_of_levels_deep_is_invalid_content(endpoint, db_pool, keys):
    """The MIME parser recurses once per level: deep nesting within the size limit must be a SOAP fault, not
    a plain-text 500 and a traceback."""
    levels = 3000
    body = b"".join(b"--b%d\r\nContent-Type: multipart/related; boundary=b%d\r\n\r\n" % (i, i + 1)
                    for i in range(levels)) + b"--b%d\r\n\r\n<a/>\r\n--b%d--\r\n" % (levels, levels)
    response = await endpoint.post(f"/smev3/{V13.value}", content=body,
                                   headers={"Content-Type": "multipart/related; boundary=b0"})
    assert (response.status_code, fault_code(answer_of(response, V13))) == (500, "InvalidContent")
    assert "nested" in response.text


def _participants_cli(db_settings, *args: str) -> str:
    result = CliRunner().invoke(main, ["participants", *args], env={"EJX_DATABASE_URL": db_settings.database_dsn})
    assert result.exit_code == 0, result.output
    return result.stdout


async def test_a_revoked_certificate_is_refused_on_its_next_request_and_its_queue_waits(endpoint, db_pool, db_settings,
                                                                                        keys):
    """A leaked key is cut off by the operator at once, one certificate of a mnemonic or all of them."""
    mine = await enqueue(db_pool, keys["ejx"].key)
    assert _message_id(answer_of(await _post(endpoint, V12, get_request(V12, keys["rsmev-next"].key)), V12)) == mine
    serial = keys["rsmev-next"].facts.serial_number
    out = await asyncio.to_thread(_participants_cli, db_settings, "revoke", "RSMEV", "--serial", f"0x{serial.upper()}")
    assert f"certificate {serial} " in out and "revoked" in out
    refused = await _post(endpoint, V12, get_request(V12, keys["rsmev-next"].key))
    assert (refused.status_code, fault_code(answer_of(refused, V12))) == (500, "SenderIsNotRegistered")
    assert (await _post(endpoint, V12, ack(V12, keys["rsmev"].key, mine))).status_code == 200  # the other one works

    again = await enqueue(db_pool, keys["ejx"].key, record="term-2")
    await asyncio.to_thread(_participants_cli, db_settings, "revoke", "RSMEV")
    for name in ("rsmev", "rsmev-next"):
        refused = await _post(endpoint, V12, get_request(V12, keys[name].key))
        assert fault_code(answer_of(refused, V12)) == "SenderIsNotRegistered"
    assert await db_pool.fetchval("SELECT acked_at IS NULL AND deliveries = 0 FROM smev_queue WHERE message_id = $1",
                                  uuid.UUID(again))
    assert [p.mnemonic for p in await Participants(db_pool).all()] == ["EPGU"]
    unknown = await asyncio.to_thread(CliRunner().invoke, main, ["participants", "revoke", "RSMEV"],
                                      env={"EJX_DATABASE_URL": db_settings.database_dsn})
    assert unknown.exit_code == 1 and "InvalidContent" in unknown.output
