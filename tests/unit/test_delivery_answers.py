"""What a receiver's answer means to the relay: its fault code, or the status alone when the body names none."""

from __future__ import annotations

import pytest

from broker.delivery.answers import answer_fault, fault_xml
from broker.domain.faults import AccessDenied, DestinationOverflow, Failure, InvalidContent, MessageIsAlreadySent


def test_a_json_body_names_the_fault() -> None:
    fault = answer_fault(409, "application/json", b'{"code": "MessageIsAlreadySent", "description": "seen"}')
    assert isinstance(fault, MessageIsAlreadySent)
    assert fault.description == "seen"


def test_an_xml_fault_names_the_fault() -> None:
    fault = answer_fault(400, "application/xml", fault_xml(InvalidContent("bad mark")))
    assert isinstance(fault, InvalidContent)
    assert fault.description == "bad mark"


@pytest.mark.parametrize(("status", "kind"), [
    (503, Failure), (429, DestinationOverflow), (408, DestinationOverflow),
    (400, InvalidContent), (415, InvalidContent), (422, InvalidContent),  # about the message: refused for good
    (401, Failure), (403, Failure), (404, Failure), (413, Failure), (431, Failure),  # about the connection
])
def test_without_a_code_the_status_decides(status: int, kind: type) -> None:
    fault = answer_fault(status, "text/html", b"<html>proxy error</html>")
    assert type(fault) is kind
    assert fault.retriable is (kind is not InvalidContent)


def test_a_fault_code_in_the_body_decides_over_the_status() -> None:
    fault = answer_fault(403, "application/json", b'{"code": "AccessDenied", "description": "not your school"}')
    assert isinstance(fault, AccessDenied) and not fault.retriable


@pytest.mark.parametrize(("status", "content_type", "body"), [
    (500, "application/json", b'{"code": "InvalidContent", "description": "could not store it"}'),
    (503, "application/xml", fault_xml(AccessDenied("backend down, token store unreadable"))),
], ids=["json", "xml"])
def test_a_5xx_is_retried_whatever_fault_its_body_names(status: int, content_type: str, body: bytes) -> None:
    """A portal failing mid-request may name any code: taken as a verdict, it would park the row dead and hold
    back its key until an operator redrives it."""
    fault = answer_fault(status, content_type, body)
    assert type(fault) is Failure and fault.retriable
    assert fault.description.startswith(f"HTTP {status}: ")


@pytest.mark.parametrize("body", [b"[" * 200_000, b"{\"code\": " * 50_000, b"\xff\xfe not utf-8", b"{"])
def test_a_body_no_json_reader_can_take_names_no_fault_and_raises_nothing(body: bytes) -> None:
    """A proxy's page or a hostile portal answer must not crash the relay (a RecursionError would stop it)."""
    assert type(answer_fault(400, "application/json", body)) is InvalidContent
    assert type(answer_fault(502, "application/json", body)) is Failure
