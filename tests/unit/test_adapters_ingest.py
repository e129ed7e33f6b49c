"""The canonical form of vendor events: ids, validation, problems — no Kafka, no database."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest
from lxml import etree

from adapters import examples
from adapters.ingest import Canonicaliser, event_id_for
from adapters.payload import xml_events
from broker.access.registry import Vendor
from broker.domain import model
from broker.domain.faults import InvalidContent
from broker.xml import hardened
from broker.xml.schemas import Schemas

VENDOR = Vendor("dnevnik-plus", datetime(2026, 1, 1, tzinfo=UTC))
NOW = datetime(2026, 10, 14, 6, 41, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def schemas() -> Schemas:
    return Schemas.load()


@pytest.fixture
def canonical(schemas) -> Canonicaliser:
    return Canonicaliser(schemas, clock=lambda: NOW)


def test_every_example_is_a_valid_event(canonical):
    good, bad = canonical.from_dicts(VENDOR, enumerate(examples.EVENTS.values()))
    assert bad == []
    assert [c.event.type.value for c in good] == list(examples.EVENTS)


def test_ejx_assigns_event_id_from_the_key_and_recorded_at_from_its_clock(canonical):
    sent = {**examples.EVENTS["GradePosted"], "event_id": "11111111-1111-4111-8111-111111111111",
            "recorded_at": "2000-01-01T00:00:00Z"}
    [c], _ = canonical.from_dicts(VENDOR, [(0, sent)])
    assert c.idempotency_key == "dnevnik-plus/grade-918273/1"
    assert c.event.event_id == event_id_for(c.idempotency_key)
    assert c.event.recorded_at == NOW
    assert c.event.source_system == "dnevnik-plus"


def test_source_system_defaults_to_the_vendor(canonical):
    sent = {k: v for k, v in examples.EVENTS["AttendanceMarked"].items() if k != "source_system"}
    [c], _ = canonical.from_dicts(VENDOR, [(0, sent)])
    assert c.event.source_system == "dnevnik-plus"


def test_the_kafka_record_has_key_headers_and_canonical_xml(canonical, schemas):
    [c], _ = canonical.from_dicts(VENDOR, [(0, examples.EVENTS["GradePosted"])])
    record = c.record()
    assert record.key == b"sch-770001"
    assert dict(record.headers) == {"event_type": b"GradePosted",
                                    "idempotency_key": b"dnevnik-plus/grade-918273/1",
                                    "event_id": str(c.event.event_id).encode(), "source_system": b"dnevnik-plus"}
    root = hardened.parse(record.value)
    schemas.validate_event(root)
    assert model.event_from_xml(root) == c.event


def test_xml_and_json_of_the_same_event_are_the_same_event(canonical):
    [from_json], _ = canonical.from_dicts(VENDOR, [(0, examples.EVENTS["TermGradeFinalized"])])
    [from_xml], bad = canonical.from_elements(VENDOR, enumerate(xml_events(from_json.xml)))
    assert bad == []
    assert from_xml.event == from_json.event and from_xml.xml == from_json.xml


def test_every_bad_event_is_reported_with_index_path_and_reason(canonical):
    grade = examples.EVENTS["GradePosted"]
    items = [grade, {"type": "Nope"}, {**grade, "mark": {"scale": "five-point", "value": "н"}},
             [grade], {**grade, "student_id": "Иванов Иван"}, {**grade, "colour": "red"}]
    good, bad = canonical.from_dicts(VENDOR, enumerate(items))
    assert [c.index for c in good] == [0]
    assert [(p.index, p.path, p.code) for p in bad] == [
        (1, "/type", "UnknownMessageType"), (2, "/mark", "InvalidContent"), (3, "/", "InvalidContent"),
        (4, "/student_id", "InvalidContent"), (5, "/", "InvalidContent")]
    assert "«н»" in bad[1].reason and "colour" in bad[4].reason


def test_xml_events_failing_the_schema_are_reported_with_their_path(canonical):
    [good], _ = canonical.from_dicts(VENDOR, [(0, examples.EVENTS["GradePosted"])])
    root = hardened.parse(good.xml)
    bad = copy.deepcopy(root)
    bad.find(f"{{{model.NAMESPACE}}}Mark")[0].text = "6"
    batch = etree.Element(f"{{{model.NAMESPACE}}}EventBatch")
    batch.extend([root, bad])
    events, problems = canonical.from_elements(VENDOR, enumerate(xml_events(etree.tostring(batch))))
    assert [c.index for c in events] == [0]
    [problem] = problems
    assert problem.index == 1 and problem.path.startswith("/EventBatch/GradePosted[2]/Mark")


def test_openapi_examples_cover_every_event_type_in_both_forms():
    content = examples.request_body_content()
    assert set(model.EVENT_TYPES) <= set(content["application/json"]["examples"])
    assert set(content["application/xml"]["examples"]) == set(model.EVENT_TYPES)


class CountingSchemas(Schemas):
    """The real schemas, counting the documents they validate and their events."""

    documents: list[int]

    def validate_event(self, element: etree._Element) -> None:
        self.documents.append(len(element) if etree.QName(element).localname == "EventBatch" else 1)
        super().validate_event(element)


class RefusingSchemas(CountingSchemas):
    """Also refuses any document holding a grade commented "refused" (a stand-in for a model/XSD mismatch)."""

    def validate_event(self, element: etree._Element) -> None:
        super().validate_event(element)
        if any(c.text == "refused" for c in element.iter(f"{{{model.NAMESPACE}}}Comment")):
            raise InvalidContent("refused by the test", details={"path": "/comment"})


def test_the_output_of_a_request_is_validated_as_one_document():
    schemas = CountingSchemas.load()
    schemas.documents = []
    grade = examples.EVENTS["GradePosted"]
    items = [{**grade, "source_record_id": f"grade-{n}"} for n in range(100)]
    good, bad = Canonicaliser(schemas, clock=lambda: NOW).from_dicts(VENDOR, enumerate(items))
    assert bad == [] and len(good) == 100
    assert schemas.documents == [100]


def test_output_failing_the_schema_names_only_its_events():
    schemas = RefusingSchemas.load()
    schemas.documents = []
    grade = examples.EVENTS["GradePosted"]
    items = [{**grade, "source_record_id": f"grade-{n}", "comment": "refused" if n in (3, 7) else "fine"}
             for n in range(10)] + [{"type": "Nope"}]
    good, bad = Canonicaliser(schemas, clock=lambda: NOW).from_dicts(VENDOR, enumerate(items))
    assert [c.index for c in good] == [0, 1, 2, 4, 5, 6, 8, 9]
    assert [(p.index, p.path, p.code) for p in bad] == [
        (3, "/comment", "InvalidContent"), (7, "/comment", "InvalidContent"), (10, "/type", "UnknownMessageType")]
    assert schemas.documents == [10] + [1] * 10
