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


@pytest.mark.parametrize(("status", "kind"), [(503, Failure), (429, DestinationOverflow), (403, AccessDenied),
                                              (400, InvalidContent)])
def test_without_a_code_the_status_decides(status: int, kind: type) -> None:
    assert type(answer_fault(status, "text/html", b"<html>proxy error</html>")) is kind


@pytest.mark.parametrize("body", [b"[" * 200_000, b"{\"code\": " * 50_000, b"\xff\xfe not utf-8", b"{"])
def test_a_body_no_json_reader_can_take_names_no_fault_and_raises_nothing(body: bytes) -> None:
    """A proxy's page or a hostile portal answer must not crash the relay (a RecursionError would stop it)."""
    assert type(answer_fault(400, "application/json", body)) is InvalidContent
    assert type(answer_fault(502, "application/json", body)) is Failure
