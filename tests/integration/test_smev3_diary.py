"""The e-diary service over SMEV 3 on real PostgreSQL: SendRequest → signed response in the requester's queue
→ GetResponse → Ack, answered from the e-diary projection the analytics consumer fed.

Every SOAP answer is checked against ejx's XSD, every DiaryResponse against diary.xsd, and every signature
is verified with ejx's certificate.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import asynccontextmanager
from datetime import date

import asyncpg
import httpx
import pytest
from lxml import etree

from broker.access.credentials import Kind
from broker.access.participants import Participants
from broker.audit import message_log
from broker.domain.faults import Failure
from broker.ops import metrics
from broker.smev3 import codec
from broker.smev3.client import ClientOptions, Smev3Client
from broker.smev3.diary import DiaryOptions
from broker.smev3.diary_documents import DiaryQuery, diary_request, read_diary_response
from broker.smev3.requester import RequesterOptions, request_diary
from broker.xml import hardened
from broker.xml.schemas import DIARY_NS
from broker.xml.signing import find_signatures, verify_reference
from broker.xml.smev_transform import transform, transform_bytes
from consumers.analytics import AnalyticsConsumer
from tests import access_support
from tests.delivery_support import free_port
from tests.fixtures.analytics.journal import JOURNAL, register
from tests.integration.test_analytics_diary import client_for
from tests.integration.test_analytics_projections import ANNA_GRADES, record
from tests.smev3_support import SCHEMAS, ack, answer_of, exchange_app, fault_code, get_request, gost_pair, signed

V12, V13 = codec.Version.V1_2, codec.Version.V1_3
SOAP_HEADERS = {"Content-Type": "text/xml; charset=utf-8"}
ANNA = DiaryQuery("st-anna1")


@pytest.fixture(scope="module")
def keys():
    return {"ejx": gost_pair("ejx SMEV"), "epgu": gost_pair("EPGU"), "rsmev": gost_pair("RSMEV"),
            "stranger": gost_pair("nobody")}


async def feed_journal(settings, pool) -> None:
    """The hand-checked journal of tests/fixtures/analytics, applied by the analytics consumer."""
    await register(pool)
    consumer = AnalyticsConsumer(settings=settings, pool=pool, schemas=SCHEMAS)
    for offset, delivery in enumerate(JOURNAL):
        await consumer.handle(record(delivery, offset))


async def _participants(pool, keys) -> None:
    participants = Participants(pool)
    await participants.add("EPGU", keys["epgu"].facts, service="diary")
    await participants.add("RSMEV", keys["rsmev"].facts, service="regional node")


@pytest.fixture
async def endpoint(db_settings, db_pool, keys):
    await feed_journal(db_settings, db_pool)
    await _participants(db_pool, keys)
    async with exchange_app(db_pool, visibility_timeout_s=1.0, diary_key=keys["ejx"].key) as base, \
            httpx.AsyncClient(base_url=base) as client:
        yield client


def _send_body(version, key, query: DiaryQuery, *, message_id: str | None = None, test: bool = False,
               content: etree._Element | None = None) -> tuple[str, bytes]:
    message_id = message_id or str(uuid.uuid1())
    data = codec.sender_provided_request_data(
        version, message_id=message_id, content=diary_request(query) if content is None else content, test=test,
        transaction_code="DiaryRequest" if version is V12 else None)
    return message_id, signed(codec.send(version, data), key)


async def _post(client, version, body: bytes):
    return answer_of(await client.post(f"/smev3/{version.value}", content=body, headers=SOAP_HEADERS), version)


async def _send(client, version, key, query: DiaryQuery = ANNA, **options) -> tuple[str, etree._Element]:
    message_id, body = _send_body(version, key, query, **options)
    return message_id, await _post(client, version, body)


def _by_ejx(root, keys) -> dict[str, etree._Element]:
    """Every signature verified and made with ejx's certificate: the covered elements by Id."""
    verified = [verify_reference(s) for s in find_signatures(root)]
    assert {v.certificate_der for v in verified} == {keys["ejx"].key.certificate_der}
    return {v.reference_id: v.covered for v in verified}


def _local(root, name: str) -> list[etree._Element]:
    return root.xpath(f"//*[local-name()='{name}']")


async def _response(client, version, key) -> etree._Element | None:
    root = await _post(client, version, get_request(version, key, operation="GetResponse"))
    found = _local(root, "ResponseMessage")
    return found[0] if found else None


def _rejection(message) -> str | None:
    codes = _local(message, "RejectionReasonCode")
    return codes[0].text if codes else None


async def _audit(pool) -> list[tuple]:
    rows = await pool.fetch("SELECT channel, client_id, student_id, outcome, test FROM diary_access_log ORDER BY id")
    return [tuple(row) for row in rows]


@pytest.mark.parametrize("version", [V12, V13], ids=["1.2", "1.3"])
async def test_a_diary_request_is_answered_with_corrections_applied_and_retractions_removed(
        endpoint, db_pool, keys, version):
    message_id, accepted = await _send(endpoint, version, keys["epgu"].key)
    meta = _by_ejx(accepted, keys)["SIGNED_BY_SMEV"]
    assert etree.QName(meta).localname == "MessageMetadata" and _local(meta, "MessageId")[0].text == message_id

    message = await _response(endpoint, version, keys["epgu"].key)
    covered = _by_ejx(message, keys)
    response, data = covered["SIGNED_BY_SMEV"], covered["SIGNED_BY_CALLER"]
    assert etree.QName(response).localname == "Response" and data.getparent() is response
    assert _local(response, "OriginalMessageId")[0].text == message_id
    reply_to = await db_pool.fetchval("SELECT reply_to FROM diary_requests WHERE message_id = $1",
                                      uuid.UUID(message_id))
    assert _local(data, "To")[0].text == reply_to == f"EPGU:{message_id}"
    content = data.find(f"{{{version.basic}}}MessagePrimaryContent")[0]
    SCHEMAS.validate_diary(content, "DiaryResponse")
    diary = read_diary_response(content)
    marks = [(g["grade_id"], g["lesson_date"], g["subject_code"], g["mark"]["value"], g["corrected"],
              g["correction_reason"]) for g in diary["grades"]]
    assert marks == ANNA_GRADES  # g2 and g6 corrected, shown once with the new mark; g3 retracted: absent
    assert [a["status"] for a in diary["attendance"]] == ["late", "present"]
    assert [h["text"] for h in diary["homework"]] == ["Упражнение 34", "№ 125, 126"]
    assert [(t["subject_code"], t["mark"]["value"]) for t in diary["term_grades"]] == [("MATH", "4")]

    response_id = _local(data, "MessageID")[0].text
    assert _local(await _post(endpoint, version, ack(version, keys["epgu"].key, response_id)), "AckResponse")
    await asyncio.sleep(1.2)  # past the visibility timeout: an acknowledged response never comes back
    assert await _response(endpoint, version, keys["epgu"].key) is None

    assert await _audit(db_pool) == [("smev3", "EPGU", "st-anna1", "answered", False)]
    logged = [(r["direction"], r["participant"], str(r["message_id"]), r["kind"]) for r in await db_pool.fetch(
        "SELECT direction, participant, message_id, kind FROM message_log ORDER BY sequence")]
    assert logged == [("in", "EPGU", message_id, "smev3-request"), ("out", "EPGU", message_id, "smev3-receipt"),
                      ("out", "EPGU", response_id, "smev3-response"), ("in", "EPGU", response_id, "smev3-take"),
                      ("in", "EPGU", response_id, "ack")]
    payload = await db_pool.fetchval("SELECT payload FROM message_log WHERE kind = 'smev3-response'")
    assert transform(message) == transform_bytes(payload)  # what was signed is what was handed out
    taken = hardened.parse(await db_pool.fetchval("SELECT payload FROM message_log WHERE kind = 'smev3-take'"))
    assert [verify_reference(s).certificate_der for s in find_signatures(taken)] == [keys["epgu"].key.certificate_der]
    verdict = await message_log.verify(db_pool)
    assert (verdict.checked, verdict.broken) == (5, None)


async def test_an_unknown_pupil_or_nothing_in_range_is_no_data(endpoint, db_pool, keys):
    for query in (DiaryQuery("st-nobody9"), DiaryQuery("st-anna1", subject_code="PHYS"),
                  DiaryQuery("st-vera3", date(2020, 1, 1), date(2020, 1, 31))):
        await _send(endpoint, V13, keys["epgu"].key, query)
        message = await _response(endpoint, V13, keys["epgu"].key)
        assert _rejection(message) == "NO_DATA", query
        assert not _local(message, "MessagePrimaryContent")
    assert [row[3] for row in await _audit(db_pool)] == ["NO_DATA"] * 3


async def test_a_participant_not_registered_for_the_diary_service_is_access_denied(endpoint, db_pool, keys):
    await _send(endpoint, V12, keys["rsmev"].key)
    message = await _response(endpoint, V12, keys["rsmev"].key)
    assert _rejection(message) == "ACCESS_DENIED" and not _local(message, "Marks")
    assert await _audit(db_pool) == [("smev3", "RSMEV", "st-anna1", "ACCESS_DENIED", False)]
    _, refused = await _send(endpoint, V12, keys["stranger"].key)
    assert fault_code(refused) == "SenderIsNotRegistered"


async def test_a_repeated_message_id_is_processed_once(endpoint, db_pool, keys):
    message_id, body = _send_body(V13, keys["epgu"].key, ANNA)
    first, again = await _post(endpoint, V13, body), await _post(endpoint, V13, body)
    assert etree.tostring(first) == etree.tostring(again)  # the same signed SendRequestResponse
    _, other = await _send(endpoint, V13, keys["rsmev"].key, message_id=message_id)
    assert fault_code(other) == "MessageIsAlreadySent"
    # Its own sender asking another question under the same MessageID does not get the first answer.
    for query, test in ((DiaryQuery("st-boris2"), False), (DiaryQuery("st-anna1", subject_code="MATH"), False),
                        (ANNA, True)):
        _, changed = await _send(endpoint, V13, keys["epgu"].key, query, message_id=message_id, test=test)
        assert fault_code(changed) == "MessageIsAlreadySent", query
    assert await db_pool.fetchval("SELECT count(*) FROM diary_requests") == 1
    assert await db_pool.fetchval("SELECT count(*) FROM smev_queue WHERE kind = 'response'") == 1
    assert len(await _audit(db_pool)) == 1
    assert await db_pool.fetchval("SELECT count(*) FROM message_log WHERE kind = 'smev3-request'") == 1


async def test_a_test_message_is_answered_but_not_audited_as_real_nor_counted(endpoint, db_pool, keys):
    def counted() -> float:
        return metrics.REGISTRY.get_sample_value("ejx_diary_requests_total", {"outcome": "answered"}) or 0.0

    before = counted()
    await _send(endpoint, V12, keys["epgu"].key, test=True)
    message = await _response(endpoint, V12, keys["epgu"].key)
    assert _rejection(message) is None and _local(message, "Mark")
    assert counted() == before
    assert await _audit(db_pool) == [("smev3", "EPGU", "st-anna1", "answered", True)]
    await _send(endpoint, V12, keys["epgu"].key)
    assert counted() == before + 1


@pytest.mark.parametrize("pupil", ["Иванов Иван", "ivanov", "12345678901", "123-456-789 01", "st-12345678"])
async def test_a_pupil_id_like_a_name_or_a_snils_is_invalid_content(endpoint, db_pool, keys, pupil):
    _, refused = await _send(endpoint, V13, keys["epgu"].key, DiaryQuery(pupil))
    assert fault_code(refused) == "InvalidContent"
    assert await db_pool.fetchval("SELECT count(*) FROM diary_requests") == 0


async def test_a_backwards_range_or_another_document_is_refused(endpoint, db_pool, keys):
    _, backwards = await _send(endpoint, V13, keys["epgu"].key, DiaryQuery("st-anna1", date(2026, 3, 9),
                                                                          date(2026, 3, 1)))
    assert fault_code(backwards) == "InvalidContent"
    other = etree.Element(f"{{{DIARY_NS}}}DiaryResponse")
    _, unknown = await _send(endpoint, V13, keys["epgu"].key, content=other)
    assert fault_code(unknown) == "UnknownMessageType"
    assert await db_pool.fetchval("SELECT count(*) FROM diary_requests") == 0


async def test_get_response_and_ack_by_another_participant_are_refused(endpoint, db_pool, keys):
    await _send(endpoint, V13, keys["epgu"].key)
    assert await _response(endpoint, V13, keys["rsmev"].key) is None
    response_id = str(await db_pool.fetchval("SELECT response_message_id FROM diary_requests"))
    refused = await _post(endpoint, V13, ack(V13, keys["rsmev"].key, response_id))
    assert fault_code(refused) == "TargetMessageIsNotFound"
    assert await _response(endpoint, V13, keys["epgu"].key) is not None  # still the requester's
    assert await db_pool.fetchval("SELECT count(*) FROM message_log WHERE kind = 'ack'") == 0


async def test_a_diary_too_large_to_send_is_failure(db_settings, db_pool, keys):
    await feed_journal(db_settings, db_pool)
    await _participants(db_pool, keys)
    async with exchange_app(db_pool, diary_key=keys["ejx"].key,
                            diary_options=DiaryOptions(max_response_bytes=4000)) as base, \
            httpx.AsyncClient(base_url=base) as client:
        for version, code in ((V13, "FAILURE"), (V12, "UNKNOWN_REQUEST_DESCRIPTION")):  # 1.2 has no FAILURE
            await _send(client, version, keys["epgu"].key)
            assert _rejection(await _response(client, version, keys["epgu"].key)) == code
    assert [row[3] for row in await _audit(db_pool)] == ["FAILURE", "FAILURE"]


async def test_the_reference_requester_and_the_portal_reads_share_one_audit(endpoint, db_pool, keys):
    client = Smev3Client(str(endpoint.base_url) + "/smev3/1.3", keys["epgu"].key,
                         trusted=frozenset({keys["ejx"].key.certificate_der}),
                         options=ClientOptions(version=V13))
    try:
        answer = await request_diary(client, DiaryQuery("st-anna1", subject_code="MATH"), version=V13,
                                     schemas=SCHEMAS)
        assert answer.outcome == "answered"
        assert [g["grade_id"] for g in answer.diary["grades"]] == ["g2", "g6", "g1"]
        missing = await request_diary(client, DiaryQuery("st-nobody9"), version=V13, schemas=SCHEMAS)
        assert missing.rejection[0] == "NO_DATA"
        assert await client.get_response() is None  # both acknowledged
    finally:
        await client.aclose()
    assert await db_pool.fetchval("SELECT count(*) FROM message_log WHERE kind = 'ack'") == 2
    token = await access_support.token(db_pool, Kind.PORTAL_CLIENT, "epgu-portal")
    async with client_for(db_pool) as api:
        for pupil in ("st-anna1", "st-nobody9"):
            assert (await api.get(f"/v1/diary/{pupil}", headers={"Authorization": f"Bearer {token}"})).is_success
    assert await _audit(db_pool) == [("smev3", "EPGU", "st-anna1", "answered", False),
                                     ("smev3", "EPGU", "st-nobody9", "NO_DATA", False),
                                     ("api", "epgu-portal", "st-anna1", "answered", False),
                                     ("api", "epgu-portal", "st-nobody9", "NO_DATA", False)]


class PostgresSwitch:
    """A TCP proxy in front of PostgreSQL that can be switched off (connections cut and refused) and on."""

    def __init__(self, target_port: int) -> None:
        self.port, self._target, self._server, self._links = free_port(), target_port, None, set()

    async def on(self) -> None:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port)

    async def off(self) -> None:
        self._server.close()
        await self._server.wait_closed()
        for writer in list(self._links):
            writer.transport.abort()

    async def _link(self, reader, writer) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self._target)
        self._links.update({writer, upstream_writer})

        async def pipe(source, sink) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


@asynccontextmanager
async def _switched_pool(database_url: str):
    port = int(database_url.rsplit(":", 1)[1].split("/")[0])
    switch = PostgresSwitch(port)
    await switch.on()
    pool = await asyncpg.create_pool(database_url.replace(f":{port}/", f":{switch.port}/"), min_size=1, max_size=4)
    try:
        yield switch, pool
    finally:
        await pool.close()


async def test_postgresql_down_at_send_request_is_smev_failure_then_answered_after_recovery(
        db_settings, db_pool, database_url, keys):
    await feed_journal(db_settings, db_pool)
    await _participants(db_pool, keys)
    async with _switched_pool(database_url) as (switch, pool), \
            exchange_app(pool, diary_key=keys["ejx"].key) as base, httpx.AsyncClient(base_url=base) as client:
        await switch.off()
        message_id, body = _send_body(V12, keys["epgu"].key, ANNA)
        assert fault_code(await _post(client, V12, body)) == "SMEVFailure"
        assert await db_pool.fetchval("SELECT count(*) FROM diary_requests") == 0
        await switch.on()
        accepted = await _post(client, V12, body)  # the requester's retry: the same MessageID
        assert _local(accepted, "MessageId")[0].text == message_id
        message = await _response(client, V12, keys["epgu"].key)
        assert _local(message, "OriginalMessageId")[0].text == message_id and _rejection(message) is None

        # The reference requester rides out an outage by itself, then gets its answer.
        await switch.off()
        requester = Smev3Client(f"{base}/smev3/1.2", keys["epgu"].key, options=ClientOptions(version=V12))
        asyncio.get_running_loop().call_later(1.0, lambda: asyncio.ensure_future(switch.on()))
        try:
            answer = await request_diary(requester, ANNA, version=V12, schemas=SCHEMAS,
                                         options=RequesterOptions(wait_s=20))
        finally:
            await requester.aclose()
        assert answer.outcome == "answered" and len(answer.diary["grades"]) == len(ANNA_GRADES)


async def test_a_recorded_request_is_answered_by_an_endpoint_started_afterwards(db_settings, db_pool, keys):
    await feed_journal(db_settings, db_pool)
    await _participants(db_pool, keys)
    async with exchange_app(db_pool, diary_key=keys["ejx"].key) as base, httpx.AsyncClient(base_url=base) as client:
        message_id, _ = await _send(client, V13, keys["epgu"].key)
    async with exchange_app(db_pool, diary_key=keys["ejx"].key) as base, httpx.AsyncClient(base_url=base) as client:
        message = await _response(client, V13, keys["epgu"].key)  # a restarted ejx: the response was durable
    assert _local(message, "OriginalMessageId")[0].text == message_id


class SilentExchange:
    """The requester's client interface, for an exchange that takes the request and never answers it."""

    def __init__(self) -> None:
        self.polls = 0

    async def send_request(self, data):
        return None

    async def get_response(self):
        self.polls += 1
        return None

    async def ack(self, message_id):
        raise AssertionError("nothing to acknowledge")


async def test_the_requester_gives_up_with_a_clear_failure_when_no_response_comes():
    silent = SilentExchange()
    with pytest.raises(Failure, match="no response to MessageID .* within 0.5 s"):
        await request_diary(silent, ANNA, version=V13, schemas=SCHEMAS,
                            options=RequesterOptions(wait_s=0.5, poll_s=0.05))
    assert silent.polls > 2


async def test_a_pretty_printed_date_of_the_range_is_read_as_the_schema_reads_it(endpoint, db_pool, keys):
    """xs:date collapses surrounding whitespace, so the schema accepts an indented From; the reader must too,
    rather than answering a valid request with a retriable SMEVFailure the requester would repeat forever."""
    content = diary_request(DiaryQuery("st-anna1", date(2026, 3, 1)))
    content.find(f"{{{DIARY_NS}}}From").text = "\n      2026-03-01\n    "
    _, answer = await _send(endpoint, V13, keys["epgu"].key, content=content)
    assert not _local(answer, "Fault"), etree.tostring(answer)
    message = await _response(endpoint, V13, keys["epgu"].key)
    assert _local(message, "MessagePrimaryContent")
    assert [e.text for e in _local(message, "From")] == ["2026-03-01"]
