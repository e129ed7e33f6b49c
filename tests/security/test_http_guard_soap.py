"""The HTTP guard's own refusals speak SOAP on the SMEV 3 endpoints: an agency's unchanged SOAP client (zeep,
CXF) gets a soap:Fault it can parse, with the status and Retry-After every other caller gets, while ejx's REST
paths keep the JSON fault. On ``ejx serve``'s app and uvicorn, with deadlines and caps made small."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from lxml import etree

from broker.settings import Settings
from broker.smev3.wire import SOAP, Version
from tests.security.conftest import Faces, serving

SOAP_TYPE = "text/xml; charset=utf-8"
STALLED_BODY = b"Content-Type: text/xml; charset=utf-8\r\nContent-Length: 100\r\n\r\n<soap:Envelope"


@pytest.fixture
def face_settings(face_settings: Settings) -> Settings:
    """One request in flight per address; a second or so for headers and body pauses."""
    return face_settings.model_copy(update={"http_max_requests_per_client": 1, "http_header_timeout_s": 1.0,
                                            "http_body_idle_s": 1.5, "http_body_timeout_s": 3.0})


async def _send(port: int, head: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    return reader, writer


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of what the server said before closing."""
    raw = await asyncio.wait_for(reader.read(), 10)
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def _soap_fault(body: bytes, version: Version) -> tuple[str, etree._Element]:
    """faultcode and the detail's one element of a SOAP 1.1 Fault, which must parse and be in ``version``."""
    root = etree.fromstring(body)
    assert root.tag == f"{{{SOAP}}}Envelope"
    node = root.find(f"{{{SOAP}}}Body/{{{SOAP}}}Fault")
    assert node is not None, body
    (detail,) = node.find("detail")
    assert etree.QName(detail).namespace == version.faults
    assert node.findtext("faultstring")
    return node.findtext("faultcode"), detail


async def test_too_many_in_flight_on_smev3_is_a_soap_fault(faces: Faces) -> None:
    async with serving(faces.settings, faces.app) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        _, stalled = await _send(faces.settings.http_port, b"POST /smev3/1.3 HTTP/1.1\r\nHost: ejx\r\n" + STALLED_BODY)
        await asyncio.sleep(0.3)  # the stalled request is in flight: the cap of one is reached
        answer = await client.post("/smev3/1.3", content=b"<x/>", headers={"Content-Type": SOAP_TYPE})
        stalled.close()
    assert answer.status_code == 429 and answer.headers["content-type"] == SOAP_TYPE, answer.text
    assert answer.headers["retry-after"] == "5"
    code, detail = _soap_fault(answer.content, Version.V1_3)
    assert code == "soap:Server" and detail.tag == f"{{{Version.V1_3.faults}}}SMEVFailure"


async def test_too_many_in_flight_on_rest_stays_json(faces: Faces) -> None:
    async with serving(faces.settings, faces.app) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        _, stalled = await _send(faces.settings.http_port, b"POST /v1/events HTTP/1.1\r\nHost: ejx\r\n"
                                 b"Authorization: Bearer " + faces.tokens["vendor"].encode() + b"\r\n" + STALLED_BODY)
        await asyncio.sleep(0.3)
        answer = await client.post("/v1/events", content=b"{}", headers={"Content-Type": "application/json"})
        stalled.close()
    assert answer.status_code == 429 and answer.headers["content-type"] == "application/json", answer.text
    assert answer.headers["retry-after"] == "5" and answer.json()["code"] == "TooManyRequests"


async def test_a_slow_body_on_smev3_is_a_soap_fault(faces: Faces) -> None:
    async with serving(faces.settings, faces.app):
        reader, writer = await _send(faces.settings.http_port, b"POST /smev3/1.2 HTTP/1.1\r\nHost: ejx\r\n"
                                                               b"SOAPAction: \"urn:GetRequest\"\r\n" + STALLED_BODY)
        status, headers, body = await _answer(reader)
        writer.close()
    assert status == 408 and headers["content-type"] == SOAP_TYPE, (status, headers, body)
    assert headers["connection"] == "close" and "retry-after" not in headers
    code, detail = _soap_fault(body, Version.V1_2)
    assert code == "soap:Server" and detail.tag == f"{{{Version.V1_2.faults}}}InvalidContent"
    assert detail.findtext(f"{{{Version.V1_2.basic}}}Code") == "InvalidContent"
    assert "did not arrive" in detail.findtext(f"{{{Version.V1_2.basic}}}Description")


async def test_a_slow_body_on_rest_stays_json(faces: Faces) -> None:
    async with serving(faces.settings, faces.app):
        reader, writer = await _send(faces.settings.http_port, b"POST /v1/events HTTP/1.1\r\nHost: ejx\r\n"
                                     b"Authorization: Bearer " + faces.tokens["vendor"].encode() + b"\r\n"
                                     + STALLED_BODY.replace(b"text/xml; charset=utf-8", b"application/json"))
        status, headers, body = await _answer(reader)
        writer.close()
    assert status == 408 and headers["content-type"] == "application/json", (status, headers, body)
    assert b'"InvalidContent"' in body


async def test_slow_headers_on_smev3_are_a_soap_fault(faces: Faces) -> None:
    async with serving(faces.settings, faces.app):
        reader, writer = await _send(faces.settings.http_port, b"POST /smev3/1.3 HTTP/1.1\r\nHost: ejx\r\nX-Slow: ")
        status, headers, body = await _answer(reader)
        writer.close()
    assert status == 408 and headers["content-type"] == SOAP_TYPE, (status, headers, body)
    assert int(headers["content-length"]) == len(body)
    code, detail = _soap_fault(body, Version.V1_3)
    assert code == "soap:Server" and detail.tag == f"{{{Version.V1_3.faults}}}InvalidContent"


@pytest.mark.parametrize("path", ["/v1/events", "/smev3/1.30"])  # a REST path; one that only looks like SMEV's
async def test_slow_headers_elsewhere_stay_json(faces: Faces, path: str) -> None:
    async with serving(faces.settings, faces.app):
        head = b"POST %s HTTP/1.1\r\nHost: ejx\r\nX-Slow: " % path.encode()
        reader, writer = await _send(faces.settings.http_port, head)
        status, headers, body = await _answer(reader)
        writer.close()
    assert status == 408 and headers["content-type"] == "application/json", (status, headers, body)
    assert b'"InvalidContent"' in body
