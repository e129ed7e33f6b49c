"""Envelope building and reading, and the envelope schema around real events."""

from __future__ import annotations

import concurrent.futures
import copy
import itertools
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from lxml import etree

from broker.domain.faults import InvalidContent, UnknownMessageType
from broker.xml import envelope, hardened
from broker.xml.envelope import (
    ENVELOPE_NS,
    EVENTS_NS,
    EnvelopeHeader,
    MessageType,
    SIGNED_DATA_ID,
    build_envelope,
    envelope_document,
    new_message_id,
    read_envelope,
    sender_provided_data,
    signed_block,
)
from broker.xml.schemas import Schemas
from broker.xml.signing import Verifier, XmlDsigSigner, keys
from broker.xml.signing.algorithms import exclusive_c14n

ENV = f"{{{ENVELOPE_NS}}}"
EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples"


@pytest.fixture(scope="module")
def schemas() -> Schemas:
    return Schemas.load()


@pytest.fixture(scope="module")
def events() -> dict[str, etree._Element]:
    """Every valid event example from XML core, by file name."""
    found = {path.stem: hardened.parse(path.read_bytes())
             for path in sorted((EXAMPLES / "events" / "valid").glob("*.xml"))}
    assert {"GradePosted", "AttendanceMarked", "EventBatch"} <= found.keys(), f"event examples missing: {sorted(found)}"
    return found


@pytest.fixture
def event(events) -> etree._Element:
    return events["GradePosted"]


def test_header_is_inside_the_signed_block(event):
    envelope = build_envelope(event, recipient="EPGU")
    data = sender_provided_data(envelope)
    assert [etree.QName(c).localname for c in envelope] == ["SenderProvidedData"]
    assert [etree.QName(c).localname for c in data] == ["Header", "MessagePrimaryContent"]
    assert data.get("Id") == SIGNED_DATA_ID


def test_message_id_is_a_fresh_lowercase_version_1_uuid(event):
    first = read_envelope(build_envelope(event, recipient="EPGU"))[0].message_id
    second = read_envelope(build_envelope(event, recipient="EPGU"))[0].message_id
    assert first.version == second.version == 1 and first != second
    text = build_envelope(event, recipient="EPGU").findtext(f".//{ENV}MessageID")
    assert text == text.lower()


UUID_EPOCH = datetime(1582, 10, 15, tzinfo=UTC)


def test_message_ids_carry_the_time_they_were_made_and_never_repeat_across_threads():
    before = datetime.now(UTC)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        batches = list(pool.map(lambda _: [new_message_id() for _ in range(5000)], range(8)))
    after = datetime.now(UTC)
    ids = [i for batch in batches for i in batch]
    assert len(set(ids)) == len(ids) == 40000
    assert {(i.version, i.variant) for i in ids} == {(1, uuid.RFC_4122)}
    for batch in batches:
        assert all(a.time < b.time for a, b in itertools.pairwise(batch))  # strictly increasing in each thread
    made = [UUID_EPOCH + timedelta(microseconds=i.time // 10) for i in (ids[0], ids[-1])]
    assert all(before - timedelta(seconds=1) <= t <= after + timedelta(seconds=1) for t in made)
    assert len({(i.node, i.clock_seq) for i in ids}) == 1
    assert ids[0].node >> 40 & 1  # a random node, marked multicast: never a network card's address


def test_message_ids_stay_unique_when_the_clock_stands_still_or_steps_back(monkeypatch):
    now = [time.time_ns()]
    monkeypatch.setattr(envelope.time, "time_ns", lambda: now[0])
    ids = [new_message_id() for _ in range(3)]
    now[0] -= 10**9  # NTP steps the clock back a second
    ids += [new_message_id() for _ in range(3)]
    assert all(a.time < b.time for a, b in itertools.pairwise(ids))


def test_each_process_draws_its_own_node_and_clock_sequence():
    """Two routers stamping in the same 100 ns still make different MessageIDs."""
    mine = new_message_id()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # a forked child must not reuse its parent's node
        os.write(write, new_message_id().bytes)
        os._exit(0)
    os.waitpid(child, 0)
    forked = uuid.UUID(bytes=os.read(read, 16))
    spawned = uuid.UUID(subprocess.run(
        [sys.executable, "-c", "from broker.xml.envelope import new_message_id; print(new_message_id())"],
        capture_output=True, text=True, check=True).stdout.strip())
    tails = {(i.node, i.clock_seq) for i in (mine, forked, spawned)}
    assert len(tails) == 3 and {i.version for i in (mine, forked, spawned)} == {1}


def test_build_then_read_round_trips_every_field(event):
    reference, mid = uuid.uuid1(), uuid.uuid1()
    sent = datetime(2025, 3, 14, 9, 26, 53, 589000, tzinfo=timezone(timedelta(hours=3)))
    envelope = build_envelope(event, recipient="RSMEV", sender="EJX", message_type=MessageType.RESPONSE, test=True,
                              reference_message_id=str(reference), message_id=mid, sending_timestamp=sent)
    header, content = read_envelope(envelope)
    assert header == EnvelopeHeader(message_id=mid, message_type=MessageType.RESPONSE, sender="EJX",
                                    recipient="RSMEV", sending_timestamp=sent, test=True,
                                    reference_message_id=reference)
    assert etree.tostring(content, method="c14n", exclusive=True) == etree.tostring(event, method="c14n", exclusive=True)


def test_event_is_copied_not_moved(event):
    before = etree.tostring(event)
    parent = event.getparent()
    build_envelope(event, recipient="EPGU")
    assert event.getparent() is parent and etree.tostring(event) == before


def test_event_bytes_go_through_the_hardened_parser(event):
    envelope = build_envelope(hardened.to_bytes(event), recipient="EPGU")
    assert read_envelope(envelope)[1].tag == event.tag
    with pytest.raises(InvalidContent, match="DOCTYPE"):
        build_envelope(b'<!DOCTYPE x [<!ENTITY a "b">]><x/>', recipient="EPGU")


@pytest.mark.parametrize("message_id, message", [
    (uuid.uuid4(), "version-1"),
    (str(uuid.uuid1()).upper(), "lower case"),
    ("not-a-uuid", "not a UUID"),
])
def test_message_id_must_be_lowercase_version_1(event, message_id, message):
    with pytest.raises(InvalidContent, match=message):
        build_envelope(event, recipient="EPGU", message_id=message_id)


def test_timestamp_needs_a_zone(event):
    with pytest.raises(InvalidContent, match="time zone"):
        build_envelope(event, recipient="EPGU", sending_timestamp=datetime(2025, 1, 1))


def test_only_events_go_in(event):
    with pytest.raises(UnknownMessageType, match="not in the events namespace"):
        build_envelope(etree.Element("{urn:other}Thing"), recipient="EPGU")


def test_an_event_that_cannot_be_canonicalized_is_invalid_content_not_a_crash(schemas):
    """A relative namespace URI, declared and never used, passes the parser, the XSD and the model, but
    exclusive c14n refuses it: the router must get a fault it dead-letters, not lxml's C14NError."""
    document = (EXAMPLES / "events" / "valid" / "GradePosted.xml").read_bytes().replace(
        b'xmlns="urn://ejx/events/1"', b'xmlns="urn://ejx/events/1" xmlns:r="relative"', 1)
    event = hardened.parse(document)
    schemas.validate_event(event)
    with pytest.raises(InvalidContent, match="every namespace URI in it must be absolute"):
        signed_block(event, recipient="EPGU")


def test_an_event_with_xsi_type_is_refused_since_its_envelope_would_break_the_schema(schemas):
    """events.xsd admits ``xsi:type="ev:GradePostedType"``; exclusive c14n drops the ``ev`` declaration that
    only the value uses, so the signed envelope would fail envelope.xsd at every receiver."""
    document = (EXAMPLES / "events" / "valid" / "GradePosted.xml").read_bytes().replace(
        b"<Mark>", b'<Mark xmlns:ev="urn://ejx/events/1" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
                   b'xsi:type="ev:MarkType">', 1)
    event = hardened.parse(document)
    schemas.validate_event(event)
    with pytest.raises(InvalidContent, match="must not carry xsi:type"):
        signed_block(event, recipient="EPGU")


def test_read_refuses_broken_structure(event):
    envelope = build_envelope(event, recipient="EPGU")
    content = envelope.find(f".//{ENV}MessagePrimaryContent")
    content.append(copy.deepcopy(content[0]))
    with pytest.raises(InvalidContent, match="exactly one element, found 2"):
        read_envelope(envelope)
    envelope = build_envelope(event, recipient="EPGU")
    header = envelope.find(f".//{ENV}Header")
    envelope.insert(0, header)
    with pytest.raises(InvalidContent, match="first element|exactly one Header"):
        read_envelope(envelope)
    with pytest.raises(InvalidContent, match="expected"):
        read_envelope(event)


@pytest.mark.parametrize(("field", "change", "message"), [
    ("MessageID", "twice", "exactly one MessageID, found 2"),
    ("Recipient", "drop", "exactly one Recipient, found 0"),
    ("SendingTimestamp", "twice", "exactly one SendingTimestamp, found 2"),
    ("MessageType", "drop", "exactly one MessageType, found 0"),
])
def test_read_refuses_a_header_field_missing_or_repeated(event, field, change, message):
    envelope = build_envelope(event, recipient="EPGU", reference_message_id=uuid.uuid1(), test=True)
    element = envelope.find(f".//{ENV}Header/{ENV}{field}")
    if change == "drop":
        element.getparent().remove(element)
    else:
        element.addnext(copy.deepcopy(element))
    with pytest.raises(InvalidContent, match=message):
        read_envelope(envelope)


def test_read_takes_the_optional_header_fields_only_as_children_of_the_header(event):
    reference = uuid.uuid1()
    header, _ = read_envelope(build_envelope(event, recipient="EPGU", reference_message_id=reference, test=True))
    assert (header.reference_message_id, header.test) == (reference, True)
    # A TestMessage deeper inside (here, in the content's own namespace tree) is not the header's.
    envelope = build_envelope(event, recipient="EPGU")
    etree.SubElement(envelope.find(f".//{ENV}MessagePrimaryContent")[0], f"{ENV}TestMessage")
    assert read_envelope(envelope)[0].test is False


# --- the schema ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("message_type", list(MessageType))
def test_built_envelopes_of_every_type_and_event_are_schema_valid(schemas, events, message_type):
    for event in events.values():
        envelope = build_envelope(event, recipient="EPGU", message_type=message_type, test=True,
                                  reference_message_id=uuid.uuid1())
        schemas.validate_envelope(envelope)


def test_schema_checks_the_primary_content_strictly(schemas, event):
    envelope = build_envelope(event, recipient="EPGU")
    content = envelope.find(f".//{ENV}MessagePrimaryContent")[0]
    content.append(etree.Element(f"{{{EVENTS_NS}}}NotInTheSchema"))
    with pytest.raises(InvalidContent):
        schemas.validate_envelope(envelope)


@pytest.mark.parametrize("mutate", [
    pytest.param(lambda e: e.find(f".//{ENV}MessageID").__setattr__("text", str(uuid.uuid4())), id="uuid4"),
    pytest.param(lambda e: e.find(f".//{ENV}MessageID").__setattr__("text", str(uuid.uuid1()).upper()), id="upper"),
    pytest.param(lambda e: e.find(f".//{ENV}MessageType").__setattr__("text", "PUSH"), id="message-type"),
    pytest.param(lambda e: e.find(f".//{ENV}Recipient").__setattr__("text", "epgu portal"), id="mnemonic"),
    pytest.param(lambda e: e.find(f".//{ENV}SendingTimestamp").__setattr__("text", "2025-01-01T10:00:00"),
                 id="naive-timestamp"),
    pytest.param(lambda e: e[0].attrib.pop("Id"), id="no-id"),
    pytest.param(lambda e: e.insert(0, e.find(f".//{ENV}Header")), id="header-outside-signed-block"),
    pytest.param(lambda e: etree.SubElement(e.find(f".//{ENV}Header"), f"{ENV}TestMessage").__setattr__(
        "text", "yes"), id="test-message-not-empty"),
    pytest.param(lambda e: etree.SubElement(e, f"{ENV}CallerInformationSystemSignature").append(
        etree.Element("{urn:evil}Signature")), id="foreign-signature"),
])
def test_schema_refuses(schemas, event, mutate):
    envelope = build_envelope(event, recipient="EPGU")
    mutate(envelope)
    with pytest.raises(InvalidContent):
        schemas.validate_envelope(envelope)


def test_unknown_event_type_is_reported_as_such(schemas):
    with pytest.raises(UnknownMessageType):
        schemas.validate_event(etree.Element(f"{{{EVENTS_NS}}}GradeDeleted"))


def test_sending_timestamp_is_utc_by_default(event):
    header, _ = read_envelope(build_envelope(event, recipient="EPGU"))
    assert header.sending_timestamp.tzinfo is not None
    assert abs(header.sending_timestamp - datetime.now(UTC)) < timedelta(minutes=1)


@pytest.fixture(scope="module", params=[keys.KeyAlgorithm.ECDSA, keys.KeyAlgorithm.RSA])
def signer_and_verifier(request) -> tuple[XmlDsigSigner, Verifier]:
    key = keys.generate_key(request.param)
    certificate = keys.self_signed_certificate(key)
    return XmlDsigSigner(key, certificate), Verifier([certificate])


HEADERS = {
    "plain": {},
    "test": {"test": True},
    "reference": {"reference_message_id": uuid.UUID("6f1c9a2e-5b7d-11ef-8000-0242ac120002")},
    "moscow time": {"sending_timestamp": datetime(2026, 12, 1, 9, 30, tzinfo=timezone(timedelta(hours=3)))},
    "response": {"message_type": MessageType.RESPONSE, "sender": "RSMEV", "recipient": "EJX_2"},
}


@pytest.mark.parametrize("header", HEADERS.values(), ids=list(HEADERS))
def test_the_router_path_writes_the_canonical_form_it_signs(events, schemas, signer_and_verifier, header):
    """The router signs signed_block's octets without a tree: they must be exactly the exclusive c14n a
    verifier computes from the document, the document must be schema-valid, and the signature must hold."""
    signer, verifier = signer_and_verifier
    for name, event in events.items():
        block = signed_block(event, **{"recipient": "EPGU", **header})
        sent = envelope_document(block, signer.signature(block))
        received = hardened.parse(sent)
        assert exclusive_c14n(sender_provided_data(received)) == block, name
        schemas.validate_envelope(received)
        verified = verifier.verify(received)
        assert exclusive_c14n(verified.content) == exclusive_c14n(event), name
        assert read_envelope(received)[0] == verified.header


def test_a_tree_signed_in_place_verifies_too(events, signer_and_verifier):
    """``ejx envelope sign``'s path: an envelope tree signed in place, serialised, parsed, verified."""
    signer, verifier = signer_and_verifier
    for name, event in events.items():
        sent = hardened.to_bytes(signer.sign(build_envelope(event, recipient="EPGU")))
        verified = verifier.verify(hardened.parse(sent))
        assert etree.QName(verified.content).localname == etree.QName(event).localname, name


@pytest.mark.parametrize("header, message", [
    ({"recipient": "epgu"}, "Recipient 'epgu' is not a mnemonic"),
    ({"recipient": "E"}, "Recipient 'E' is not a mnemonic"),
    ({"recipient": "EPGU", "sender": "EJX<x/>"}, "Sender 'EJX<x/>' is not a mnemonic"),
    ({"recipient": "EPGU", "sending_timestamp": datetime(2026, 12, 1, tzinfo=timezone(timedelta(seconds=10)))},
     "whole minutes"),
], ids=["lower case", "too short", "markup", "offset in seconds"])
def test_signed_block_refuses_what_the_schema_would(event, schemas, header, message):
    """Each value signed_block refuses is one the envelope schema refuses: nothing invalid is built."""
    with pytest.raises(InvalidContent, match=message):
        signed_block(event, **header)
    envelope = build_envelope(event, recipient="EPGU", message_id=new_message_id())
    field, value = next((k, v) for k, v in header.items() if k in ("recipient", "sender", "sending_timestamp")
                        and not (k == "recipient" and v == "EPGU"))
    tag = {"recipient": "Recipient", "sender": "Sender", "sending_timestamp": "SendingTimestamp"}[field]
    node = envelope.find(f"{ENV}SenderProvidedData/{ENV}Header/{ENV}{tag}")
    node.text = value.isoformat() if isinstance(value, datetime) else value
    with pytest.raises(InvalidContent):
        schemas.validate_envelope(envelope)


def _rss_anon_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssAnon"))


def test_validating_envelopes_for_a_long_time_does_not_grow_the_thread_memory(event, schemas):
    """libxml2 interns every xs:ID value it validates into the thread's dictionary for the thread's life:
    with an Id per MessageID, 20,000 envelopes grew the process by ~1.5 MiB (the router, forever)."""
    def validate(count: int) -> None:
        for _ in range(count):
            schemas.validate_envelope(build_envelope(event, recipient="EPGU"))

    with concurrent.futures.ThreadPoolExecutor(1) as worker:  # where the router validates, and one thread's dict
        worker.submit(validate, 2_000).result()  # warm-up: caches, arenas
        before = _rss_anon_kib()
        worker.submit(validate, 20_000).result()
        grown = _rss_anon_kib() - before
    assert grown < 600, f"RSS grew {grown} KiB over 20,000 envelopes"
