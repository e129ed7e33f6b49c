"""Schema validation: compiled once, faults that say line, path and the schema's reason."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from broker.domain.faults import InvalidContent, UnknownMessageType
from broker.domain.model import event_from_xml, events_from_xml
from broker.xml import hardened
from broker.xml.schemas import Schemas, default_schema_dir

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
VALID = SCHEMAS / "examples" / "events" / "valid"
GRADE = (VALID / "GradePosted.xml").read_bytes()


@pytest.fixture(scope="module")
def schemas() -> Schemas:
    return Schemas.load()


def test_default_schema_dir_is_the_repository_one():
    assert (default_schema_dir() / "events.xsd").samefile(SCHEMAS / "events.xsd")


@pytest.mark.parametrize("path", sorted(VALID.glob("*.xml")), ids=lambda path: path.stem)
def test_round_trip_model_xml_parse_validate_model(schemas, path):
    for event in events_from_xml(hardened.parse(path.read_bytes())):
        root = hardened.parse(event.to_xml())
        schemas.validate_event(root)
        assert event_from_xml(root) == event


def test_schema_errors_name_line_path_and_reason(schemas):
    root = hardened.parse(GRADE.replace(b"<FivePoint>5<", b"<FivePoint>7<"))
    with pytest.raises(InvalidContent) as caught:
        schemas.validate_event(root)
    fault = caught.value
    assert fault.description.startswith("line 21, /GradePosted/Mark/FivePoint: ")
    assert "'7' is not accepted by the pattern '[1-5]'" in fault.description
    assert fault.details["line"] == 21 and fault.details["path"] == "/GradePosted/Mark/FivePoint"


def test_unknown_root_is_unknown_message_type(schemas):
    with pytest.raises(UnknownMessageType, match="GradeDeleted is not an event type"):
        schemas.validate_event(hardened.parse(b'<GradeDeleted xmlns="urn://ejx/events/1"/>'))
    with pytest.raises(UnknownMessageType):  # abstract head of the substitution group
        schemas.validate_event(hardened.parse(b'<Event xmlns="urn://ejx/events/1"/>'))


def test_known_root_in_another_namespace_is_invalid_content(schemas):
    with pytest.raises(InvalidContent, match="must be in namespace urn://ejx/events/1"):
        schemas.validate_event(hardened.parse(GRADE.replace(b' xmlns="urn://ejx/events/1"', b"")))


def test_an_event_inside_a_bigger_document_is_validated_as_its_own_root(schemas):
    outer = b'<Wrapper xmlns="urn://other">\n' + GRADE.split(b"\n", 1)[1] + b"</Wrapper>"
    event = hardened.parse(outer)[0]
    schemas.validate_event(event)
    broken = hardened.parse(outer.replace(b"<FivePoint>5<", b"<FivePoint>9<"))[0]
    with pytest.raises(InvalidContent, match=r"line 21, /Wrapper/GradePosted/Mark/FivePoint: "):
        schemas.validate_event(broken)


def test_check_event_goes_all_the_way(schemas):
    assert schemas.check_event(GRADE).idempotency_key == "dnevnik-plus/grade-100234/1"
    with pytest.raises(InvalidContent, match="second year must follow"):  # a rule only the model knows
        schemas.check_event(GRADE.replace(b"2026-2027<", b"2026-2031<"))
    with pytest.raises(InvalidContent, match="not an EventBatch"):
        schemas.check_event((VALID / "EventBatch.xml").read_bytes())
    assert len(schemas.check_events((VALID / "EventBatch.xml").read_bytes())) == 4
    with pytest.raises(InvalidContent, match="DOCTYPE"):
        schemas.check_event(b"<!DOCTYPE x>" + GRADE.split(b"\n", 1)[1])


def test_fault_documents(schemas):
    schemas.validate_fault(hardened.parse(
        '<Fault xmlns="urn://ejx/fault/1"><Code>InvalidContent</Code><Description>line 3: нет школы'
        '</Description><Retriable>false</Retriable><Details><Detail name="line">3</Detail></Details>'
        "</Fault>".encode()))
    with pytest.raises(InvalidContent, match="Retriable"):
        schemas.validate_fault(hardened.parse(
            b'<Fault xmlns="urn://ejx/fault/1"><Code>Failure</Code><Description>x</Description>'
            b"<Retriable>maybe</Retriable></Fault>"))


def test_envelope_schema_takes_events_as_content(schemas):
    envelope = (
        '<Envelope xmlns="urn://ejx/envelope/1"><SenderProvidedData Id="spd-1"><Header>'
        "<MessageID>6f1c2d3e-8a9b-11ef-9c61-2f4d8e7a1b30</MessageID><MessageType>BROADCAST</MessageType>"
        "<Sender>EJX</Sender><Recipient>EPGU</Recipient><SendingTimestamp>2026-10-05T09:30:00+03:00"
        "</SendingTimestamp></Header><MessagePrimaryContent>{}</MessagePrimaryContent>"
        "</SenderProvidedData></Envelope>")
    content = GRADE.split(b"\n", 1)[1].decode()
    schemas.validate_envelope(hardened.parse(envelope.format(content).encode()))
    with pytest.raises(InvalidContent, match="FivePoint"):
        schemas.validate_envelope(hardened.parse(envelope.format(content.replace(">5<", ">8<")).encode()))


def test_concurrent_validations_keep_their_own_errors(schemas):
    good = hardened.parse(GRADE)
    failures: list[BaseException] = []

    def work(index: int) -> None:
        bad = hardened.parse(GRADE.replace(b"<Version>1<", f"<Version>{-index}<".encode()))
        try:
            for _ in range(200):
                schemas.validate_event(good)
                with pytest.raises(InvalidContent, match=f"The value '{-index}' is less than"):
                    schemas.validate_event(bad)
        except BaseException as error:  # reported below
            failures.append(error)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
