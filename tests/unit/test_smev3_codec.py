"""The SMEV 3 codec reads every request ejx serves, builds every answer valid against ejx's schemas, and refuses
odd envelopes with the right fault; a SOAP client that knows nothing of ejx (zeep) works from ejx's WSDLs."""

from __future__ import annotations

import datetime
import uuid

import pytest
import zeep
from lxml import etree

from broker.domain import faults
from broker.smev3 import codec
from broker.smev3.codec import Version
from broker.xml import hardened

V12, V13 = Version.V1_2, Version.V1_3
BOTH = pytest.mark.parametrize("version", list(Version), ids=lambda v: v.value)
NOW = datetime.datetime(2025, 9, 1, 8, 30, tzinfo=datetime.timezone.utc)
MID = str(uuid.uuid1())
OTHER = str(uuid.uuid1())
DIARY = b'<d:DiaryRequest xmlns:d="urn://ejx/diary/1.0"><d:StudentId>42</d:StudentId></d:DiaryRequest>'
SIGNATURE = (b'<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo/>'
             b'<ds:SignatureValue>AA==</ds:SignatureValue></ds:Signature>')
SOAP = codec.SOAP


def wire(envelope: etree._Element) -> etree._Element:
    """What the other side reads: our bytes through the project's hardened parser."""
    return hardened.parse(codec.to_bytes(envelope))


def canonical(element: etree._Element) -> bytes:
    """Exclusive c14n, as the SMEV signature sees an element: no namespaces inherited from where it sits."""
    return etree.tostring(element, method="c14n", exclusive=True)


def diary() -> etree._Element:
    return etree.fromstring(DIARY)


def signature() -> etree._Element:
    return etree.fromstring(SIGNATURE)


def meta(message_type: str = "REQUEST", **extra) -> codec.Metadata:
    return codec.Metadata(MID, message_type, ("PORTAL01", "Parents' portal"), NOW, **extra)


def request_data(version: Version, **extra) -> etree._Element:
    return codec.sender_provided_request_data(version, message_id=MID, content=diary(), transaction_code="TX-1",
                                              **extra)


def envelope(body: str, namespace: str = SOAP) -> etree._Element:
    return hardened.parse(f'<s:Envelope xmlns:s="{namespace}">{body}</s:Envelope>'.encode())


# ---- requests: built by the client side, read by the server side --------------------------------------------

@BOTH
def test_get_request_round_trip_with_and_without_filter(version):
    plain = codec.get_request(version, timestamp=NOW)
    filtered = codec.get_request(version, timestamp=NOW, namespace_uri="urn://ejx/diary/1.0",
                                 root_local_name="DiaryRequest", node_id="node-7")
    for unsigned in (plain, filtered):
        codec.validate(unsigned.envelope)
        assert unsigned.target.get("Id") == "SIGNED_BY_CALLER"
    call = codec.parse_request(wire(plain.envelope))
    assert isinstance(call, codec.GetMessage)
    assert (call.operation, call.version, call.timestamp) == ("GetRequest", version, NOW)
    assert (call.namespace_uri, call.root_local_name, call.node_id, call.signature) == (None, None, None, None)
    assert etree.QName(call.signed).localname == "MessageTypeSelector" and call.signed.get("Id") == "SIGNED_BY_CALLER"
    call = codec.parse_request(wire(filtered.envelope))
    assert (call.namespace_uri, call.root_local_name, call.node_id) == ("urn://ejx/diary/1.0", "DiaryRequest", "node-7")


@BOTH
def test_signature_slot_is_found_by_the_parser(version):
    unsigned = codec.get_request(version, timestamp=NOW, operation="GetResponse")
    slot = codec.attach_signature(unsigned.target.getparent(), "CallerInformationSystemSignature", signature())
    assert slot.getparent()[-1] is slot  # SMEV wants signature slots last
    codec.validate(unsigned.envelope)
    call = codec.parse_request(wire(unsigned.envelope))
    assert call.operation == "GetResponse"
    assert call.signature.tag == f"{{{codec.DS}}}Signature"
    assert call.signature.getparent().getprevious() is call.signed


def test_attach_signature_takes_only_a_ds_signature():
    unsigned = codec.ack(V12, MID)
    with pytest.raises(ValueError, match="ds:Signature"):
        codec.attach_signature(unsigned.target.getparent(), "CallerInformationSystemSignature", diary())


@BOTH
@pytest.mark.parametrize("accepted", [True, False])
def test_ack_round_trip(version, accepted):
    unsigned = codec.ack(version, MID, accepted=accepted, id="ACK_1")
    codec.validate(unsigned.envelope)
    call = codec.parse_request(wire(unsigned.envelope))
    assert isinstance(call, codec.Ack)
    assert (call.operation, call.message_id, call.accepted, call.signed.get("Id")) == ("Ack", MID, accepted, "ACK_1")


def test_ack_without_accepted_is_refused_in_1_2_and_taken_as_accepted_in_1_3():
    for version, outcome in ((V12, None), (V13, True)):
        root = wire(codec.ack(version, MID).envelope)
        del root.find(f".//{{{version.basic}}}AckTargetMessage").attrib["accepted"]
        if outcome is None:
            with pytest.raises(faults.InvalidContent, match="accepted"):
                codec.parse_request(root)
        else:
            assert codec.parse_request(root).accepted is outcome


@BOTH
def test_send_request_round_trip(version):
    unsigned = codec.send(version, request_data(version, test=True))
    codec.validate(unsigned.envelope)
    call = codec.parse_request(wire(unsigned.envelope))
    assert isinstance(call, codec.SendRequest)
    assert (call.operation, call.message_id, call.transaction_code, call.test) == ("SendRequest", MID, "TX-1", True)
    assert call.reference_message_id == (MID if version is V12 else None)  # 1.2: a new chain starts at itself
    assert canonical(call.content) == canonical(diary())
    assert call.signed.get("Id") == "SIGNED_BY_CALLER" and unsigned.target.get("Id") == "SIGNED_BY_CALLER"


def test_1_3_request_data_may_leave_out_what_1_2_requires():
    data = codec.sender_provided_request_data(V13, message_id=MID, content=diary())
    assert [etree.QName(child).localname for child in data] == ["MessageID", "MessagePrimaryContent"]
    codec.validate(codec.send(V13, data).envelope)
    with pytest.raises(ValueError, match="TransactionCode"):
        codec.sender_provided_request_data(V12, message_id=MID, content=diary())


@BOTH
def test_send_response_round_trip_content_and_rejections(version):
    content = codec.sender_provided_response_data(version, message_id=OTHER, to="reply-to-portal", content=diary())
    rejected = codec.sender_provided_response_data(version, message_id=OTHER, to="reply-to-portal",
                                                   rejections=[("NO_DATA", "no such pupil"),
                                                               ("ACCESS_DENIED", "not a parent")])
    call = codec.parse_request(wire(codec.send(version, content).envelope))
    assert isinstance(call, codec.SendResponse)
    assert (call.message_id, call.to, call.rejections) == (OTHER, "reply-to-portal", ())
    assert canonical(call.content) == canonical(diary())
    unsigned = codec.send(version, rejected)
    codec.validate(unsigned.envelope)
    call = codec.parse_request(wire(unsigned.envelope))
    assert call.content is None
    assert call.rejections == (("NO_DATA", "no such pupil"), ("ACCESS_DENIED", "not a parent"))


def test_failure_rejection_exists_only_in_1_3():
    built = codec.sender_provided_response_data(V13, message_id=OTHER, to="r", rejections=[("FAILURE", "down")])
    codec.validate(codec.send(V13, built).envelope)
    with pytest.raises(ValueError, match="rejection codes"):
        codec.sender_provided_response_data(V12, message_id=OTHER, to="r", rejections=[("FAILURE", "down")])
    with pytest.raises(ValueError, match="either content or rejections"):
        codec.sender_provided_response_data(V13, message_id=OTHER, to="r")


@BOTH
def test_get_status_and_queue_statistics_requests_are_read(version):
    ts = f"{{{version.basic}}}Timestamp"
    operations = ["GetStatus"] + (["GetIncomingQueueStatistics"] if version is V12 else [])
    for operation in operations:
        node = '<t:NodeID>n1</t:NodeID>' if operation != "GetStatus" else ""
        root = envelope(f'<s:Body><t:{operation}Request xmlns:t="{version.types}" xmlns:b="{version.basic}">{node}'
                        f'<b:Timestamp Id="TS">2025-09-01T08:30:00Z</b:Timestamp><t:CallerInformationSystemSignature>'
                        f'{SIGNATURE.decode()}</t:CallerInformationSystemSignature></t:{operation}Request></s:Body>')
        codec.validate(root, version)
        call = codec.parse_request(root)
        assert isinstance(call, codec.QueueQuery)
        assert (call.operation, call.timestamp, call.signed.tag, call.signed.get("Id")) == (operation, NOW, ts, "TS")
        assert call.node_id == ("n1" if node else None) and call.signature is not None


def test_queue_statistics_is_not_served_in_1_3():
    root = envelope(f'<s:Body><t:GetIncomingQueueStatisticsRequest xmlns:t="{V13.types}" xmlns:b="{V13.basic}">'
                    '<b:Timestamp>2025-09-01T08:30:00Z</b:Timestamp></t:GetIncomingQueueStatisticsRequest></s:Body>')
    with pytest.raises(faults.UnknownMessageType):
        codec.parse_request(root)
    with pytest.raises(ValueError, match="1.3"):
        codec.queue_statistics_response(V13, {})


# ---- hostile and odd envelopes ------------------------------------------------------------------------------

GET = f'<t:GetRequestRequest xmlns:t="{V12.types}"/>'


@pytest.mark.parametrize(("document", "fault", "says"), [
    (f'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>{GET}</s:Body></s:Envelope>',
     faults.InvalidContent, "SOAP 1.2"),
    (f'<Envelope><Body>{GET}</Body></Envelope>', faults.InvalidContent, "not a SOAP 1.1 Envelope"),
    (f'<s:Envelope xmlns:s="{SOAP}"><s:Header/></s:Envelope>', faults.InvalidContent, "exactly one Body"),
    (f'<s:Envelope xmlns:s="{SOAP}"><s:Body/><s:Body/></s:Envelope>', faults.InvalidContent, "exactly one Body"),
    (f'<s:Envelope xmlns:s="{SOAP}"><s:Body>  </s:Body></s:Envelope>', faults.InvalidContent, "exactly one element"),
    (f'<s:Envelope xmlns:s="{SOAP}"><s:Body>{GET}{GET}</s:Body></s:Envelope>', faults.InvalidContent,
     "exactly one element"),
    (f'<s:Envelope xmlns:s="{SOAP}"><s:Body>text{GET}</s:Body></s:Envelope>', faults.InvalidContent, "holds text"),
    (f'<s:Envelope xmlns:s="{SOAP}"><s:Body><t:CancelRequest xmlns:t="{V12.types}"/></s:Body></s:Envelope>',
     faults.UnknownMessageType, "CancelRequest"),
    (f'<s:Envelope xmlns:s="{SOAP}"><s:Body><t:GetRequestResponse xmlns:t="{V12.types}"/></s:Body></s:Envelope>',
     faults.UnknownMessageType, "GetRequestResponse"),
    (f'<s:Envelope xmlns:s="{SOAP}"><s:Body><GetRequestRequest/></s:Body></s:Envelope>',
     faults.UnknownMessageType, "GetRequestRequest"),
    (f'<s:Envelope xmlns:s="{SOAP}"><s:Body><t:GetRequestRequest xmlns:t="{V12.types.replace("1.2", "1.1")}"/>'
     '</s:Body></s:Envelope>', faults.UnknownMessageType, "1.1"),
    (f'<s:Envelope xmlns:s="{SOAP}"><s:Body>{GET}</s:Body></s:Envelope>', faults.InvalidContent,
     "MessageTypeSelector"),
], ids=["soap12", "no-namespace", "no-body", "two-bodies", "empty-body", "two-children", "text-in-body",
        "unknown-operation", "a-response", "namespace-less", "version-1.1", "missing-selector"])
def test_odd_envelopes_get_the_right_fault(document, fault, says):
    with pytest.raises(fault, match=says):
        codec.parse_request(hardened.parse(document.encode()))


@pytest.mark.parametrize(("selector", "says"), [
    ("<b:Timestamp>yesterday</b:Timestamp>", "date-time"),
    ("<b:Timestamp>2025-09-01T08:30:00</b:Timestamp>", "time zone"),
    ("<b:NamespaceURI>urn:x</b:NamespaceURI><b:Timestamp>2025-09-01T08:30:00Z</b:Timestamp>", "both"),
])
def test_bad_selectors_are_invalid_content(selector, says):
    root = envelope(f'<s:Body><t:GetRequestRequest xmlns:t="{V12.types}" xmlns:b="{V12.basic}">'
                    f'<b:MessageTypeSelector Id="S">{selector}</b:MessageTypeSelector></t:GetRequestRequest></s:Body>')
    with pytest.raises(faults.InvalidContent, match=says):
        codec.parse_request(root)


def test_bad_message_ids_are_invalid_content():
    root = wire(codec.ack(V12, MID).envelope)
    root.find(f".//{{{V12.basic}}}AckTargetMessage").text = MID.upper()
    with pytest.raises(faults.InvalidContent, match="UUID"):
        codec.parse_request(root)


def test_builders_refuse_what_smev_cannot_carry():
    with pytest.raises(ValueError, match="control character"):
        codec.sender_provided_response_data(V12, message_id=MID, to="line\nbreak", content=diary())
    with pytest.raises(ValueError, match="without a namespace"):
        codec.sender_provided_request_data(V13, message_id=MID, content=etree.fromstring(b"<Diary><a/></Diary>"))
    with pytest.raises(ValueError, match="UUID"):
        codec.ack(V12, "not-a-uuid")
    with pytest.raises(ValueError, match="time zone"):
        codec.get_request(V12, timestamp=NOW.replace(tzinfo=None))
    with pytest.raises(ValueError, match="re-versioned"):
        codec.send(V13, request_data(V12))


# ---- answers: built by the server side, read by the client side ---------------------------------------------

def answers(version: Version) -> dict[str, etree._Element]:
    """Every answer the codec builds, in its richest and its barest form."""
    reply = codec.sender_provided_response_data(version, message_id=OTHER, to="reply-1", content=diary())
    built = {
        "GetRequestResponse-empty": codec.answer(version, "GetRequest"),
        "GetRequestResponse": codec.answer(version, "GetRequest", codec.request_message(
            version, request_data(version, test=True), meta(recipient=("EJX01", "ejx"), delivery_timestamp=NOW,
                                                            status="requestIsAcceptedBySmev"),
            "reply-1", sender_signature=signature(), smev_signature=signature())),
        "GetRequestResponse-unsigned": codec.answer(version, "GetRequest", codec.request_message(
            version, request_data(version), meta("BROADCAST"), "reply-1")),
        "GetResponseResponse-empty": codec.answer(version, "GetResponse"),
        "GetResponseResponse": codec.answer(version, "GetResponse", codec.response_message(
            version, reply, meta("RESPONSE"), original_message_id=MID, original_transaction_code="TX-1",
            sender_signature=signature(), smev_signature=signature())),
        "GetResponseResponse-rejected": codec.answer(version, "GetResponse", codec.response_message(
            version, codec.sender_provided_response_data(version, message_id=OTHER, to="reply-1",
                                                         rejections=[("UNKNOWN_REQUEST_DESCRIPTION", "?")]),
            meta("RESPONSE"), original_message_id=MID, original_transaction_code="TX-1")),
        "AckResponse": codec.answer(version, "Ack"),
        "SendRequestResponse": codec.accepted(version, "SendRequest", meta(status="requestIsQueued"), signature()),
        "SendResponseResponse": codec.accepted(version, "SendResponse", meta("RESPONSE")),
        "GetStatusResponse-empty": codec.get_status_response(version),
        "GetStatusResponse": codec.get_status_response(version, MID, "requestIsQueued", "queued",
                                                       smev_signature=signature()),
    }
    if version is V12:
        built["GetIncomingQueueStatisticsResponse"] = codec.queue_statistics_response(version, {"diary": 3, "x": 0})
    return built


@BOTH
def test_every_answer_validates_and_is_read_back(version):
    for name, built in answers(version).items():
        codec.validate(built)
        codec.validate(built, version)
        answer = codec.parse_answer(wire(built))
        assert (answer.version, answer.operation) == (version, name.split("-")[0].removesuffix("Response")), name
        assert (answer.message is None) == name.endswith("-empty") or name == "AckResponse", name
        signed = name in ("GetRequestResponse", "GetResponseResponse", "SendRequestResponse", "GetStatusResponse")
        assert (answer.signature is not None) == signed, name
        if signed:
            assert answer.signed.get("Id") == "SIGNED_BY_SMEV", name


@BOTH
def test_request_message_layout_follows_the_official_order(version):
    root = answers(version)["GetRequestResponse"]
    message = root[0][0][0]
    request = message[0]
    assert [etree.QName(node).localname for node in message] == ["Request", "SMEVSignature"]
    assert [etree.QName(node).localname for node in request] == [
        "SenderProvidedRequestData", "MessageMetadata", "ReplyTo", "SenderInformationSystemSignature"]
    assert request.get("Id") == "SIGNED_BY_SMEV" and request[0].get("Id") == "SIGNED_BY_CALLER"
    metadata = [etree.QName(node).localname for node in request[1]]
    if version is V12:
        assert metadata == ["MessageId", "MessageType", "Sender", "SendingTimestamp", "DestinationName", "Recipient",
                            "SupplementaryData", "DeliveryTimestamp", "Status"]
    else:  # 1.3 has no DestinationName nor SupplementaryData
        assert metadata == ["MessageId", "MessageType", "Sender", "SendingTimestamp", "Recipient",
                            "DeliveryTimestamp", "Status"]
    content = request[0].find(f"{{{version.basic}}}MessagePrimaryContent")
    assert canonical(content[0]) == canonical(diary())


@BOTH
def test_the_request_data_is_forwarded_untouched(version):
    data = request_data(version)
    data.append(etree.fromstring(f'<t:TestMessage xmlns:t="{version.types}"/>'.encode()))
    received = codec.parse_request(wire(codec.send(version, data).envelope)).signed
    delivered = wire(codec.answer(version, "GetRequest", codec.request_message(version, received, meta(), "r")))
    forwarded = delivered.find(f".//{{{version.types}}}SenderProvidedRequestData")
    assert canonical(forwarded) == canonical(received)


def test_response_message_1_2_requires_the_transaction_code_1_3_does_not():
    reply = codec.sender_provided_response_data(V13, message_id=OTHER, to="r", content=diary())
    message = codec.response_message(V13, reply, meta("RESPONSE"), original_message_id=MID)
    assert [etree.QName(node).localname for node in message[0]][:2] == ["OriginalMessageId", "SenderProvidedResponseData"]
    codec.validate(codec.answer(V13, "GetResponse", message))
    reply = codec.sender_provided_response_data(V12, message_id=OTHER, to="r", content=diary())
    with pytest.raises(ValueError, match="OriginalTransactionCode"):
        codec.response_message(V12, reply, meta("RESPONSE"), original_message_id=MID)


def test_validate_catches_what_the_schema_forbids():
    broken = codec.answer(V12, "GetRequest", codec.request_message(V12, request_data(V12), meta(), "r"))
    broken.find(f".//{{{V12.types}}}MessageType").text = "CANCEL"  # dropped by ejx: it does not serve Cancel
    with pytest.raises(faults.InvalidContent, match="MessageType"):
        codec.validate(broken)
    with pytest.raises(faults.InvalidContent):
        codec.validate(codec.answer(V12, "Ack", diary()))  # AckResponse is empty
    with pytest.raises(faults.InvalidContent, match="version"):
        codec.validate(envelope("<s:Body/>"))


# ---- faults --------------------------------------------------------------------------------------------------

WIRE = {"Failure": "SMEVFailure", "Fault": "SMEVFailure"}


@BOTH
@pytest.mark.parametrize("kind", list(faults.FAULTS.values()), ids=lambda kind: kind.__name__)
def test_every_fault_validates_and_reads_back_as_itself(version, kind):
    error = kind("nothing\twent\x01right", details={"line": 7, "reason": "CertificateIsExpired"})
    built = codec.fault(version, error)
    codec.validate(built)
    root = wire(built)
    node = root.find(f"{{{SOAP}}}Body/{{{SOAP}}}Fault")
    assert node.findtext("faultcode") == "soap:Server"
    assert node.findtext("faultstring") == "nothing went right"
    detail = node.find("detail")[0]
    assert detail.tag == f"{{{version.faults}}}{WIRE.get(error.code, error.code)}"
    with pytest.raises(faults.Fault) as raised:
        codec.parse_answer(root)
    assert type(raised.value) is (faults.Failure if kind is faults.Fault else kind)
    assert raised.value.description == "nothing went right"


@BOTH
def test_faults_with_content_carry_code_description_and_their_specifics(version):
    b, f = f"{{{version.basic}}}", f"{{{version.faults}}}"
    detail = codec.fault(version, faults.InvalidContent("bad date", details={"line": 4})).find(".//detail")[0]
    assert (detail.findtext(f"{b}Code"), detail.findtext(f"{b}Description")) == ("InvalidContent", "bad date")
    assert detail.find(f"{f}ValidationError").get("errorPosition") == "4"
    detail = codec.fault(version, faults.SignatureVerificationFault("expired",
                                                                    details={"reason": "CertificateIsExpired"}))
    assert detail.find(f".//detail/{f}SignatureVerificationFault/{f}SignatureVerificationFault").text == \
        "CertificateIsExpired"
    detail = codec.fault(version, faults.SignatureVerificationFault("odd")).find(".//detail")[0]
    assert detail.findtext(f"{f}SignatureVerificationFault") == "SignatureIsInvalid"
    detail = codec.fault(version, faults.DestinationOverflow("full", details={"destination": "diary"}))
    assert detail.findtext(f".//{f}DestinationName") == "diary"
    assert len(codec.fault(version, faults.AccessDenied("no")).find(".//detail")[0]) == 0  # Void: no children


# ---- WSDL, and a SOAP client that knows nothing of ejx ------------------------------------------------------

@BOTH
def test_zeep_builds_get_request_and_ack_that_the_codec_reads(version):
    client = zeep.Client(str(codec.schema_dir() / version.value / "smev-message-exchange-service.wsdl"))
    assert client.service._binding_options["address"] == codec.PLACEHOLDER
    message = client.create_message(client.service, "GetRequest", MessageTypeSelector={
        "Id": "SIGNED_BY_CALLER", "NamespaceURI": "urn://ejx/diary/1.0", "RootElementLocalName": "DiaryRequest",
        "Timestamp": NOW})
    call = codec.parse_request(hardened.parse(etree.tostring(message)))
    assert (call.operation, call.version, call.root_local_name, call.timestamp) == ("GetRequest", version,
                                                                                    "DiaryRequest", NOW)
    skip = zeep.xsd.SkipValue  # zeep cannot leave an optional nested sequence out by itself
    message = client.create_message(client.service, "GetResponse", MessageTypeSelector={
        "Id": "S", "NamespaceURI": skip, "RootElementLocalName": skip, "Timestamp": NOW})
    assert codec.parse_request(hardened.parse(etree.tostring(message))).namespace_uri is None
    message = client.create_message(client.service, "Ack",
                                    AckTargetMessage={"_value_1": MID, "Id": "A", "accepted": False})
    call = codec.parse_request(hardened.parse(etree.tostring(message)))
    assert (call.operation, call.message_id, call.accepted, call.signed.get("Id")) == ("Ack", MID, False, "A")


@BOTH
def test_wsdl_lists_the_operations_of_its_version_with_urn_soap_actions(version):
    document = etree.fromstring(codec.wsdl(version, "https://ejx.example/smev3/" + version.value))
    ns = {"w": "http://schemas.xmlsoap.org/wsdl/", "s": "http://schemas.xmlsoap.org/wsdl/soap/"}
    assert document.xpath("//s:address/@location", namespaces=ns) == ["https://ejx.example/smev3/" + version.value]
    assert document.xpath("/w:definitions/w:service/@name", namespaces=ns) == ["SMEVMessageExchangeService"]
    binding = document.xpath("/w:definitions/w:binding", namespaces=ns)[0]
    assert binding.get("name") == "SMEVMessageExchangeSoap11Binding"
    actions = {op.get("name"): op.xpath("s:operation/@soapAction", namespaces=ns)[0]
               for op in binding.xpath("w:operation", namespaces=ns)}
    assert actions == {operation: f"urn:{operation}" for operation in version.operations}
    assert document.get("targetNamespace") == version.service


def test_schemas_compile_offline_from_files_alone():
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    for path in sorted(codec.schema_dir().glob("*/*.xsd")) + [codec.schema_dir() / "soap-envelope-1.1.xsd"]:
        etree.XMLSchema(etree.parse(str(path), parser))
