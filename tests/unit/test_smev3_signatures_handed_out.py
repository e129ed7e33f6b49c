"""A queued SMEV 3 message's signatures still verify once it is handed out inside an answer, whatever the key.

The stored RequestMessage is parsed again and placed into the GetRequestResponse
envelope, where lxml may rename its namespace prefixes. Only the SMEV transform makes
the digest independent of prefixes, so every SMEV 3 signature uses that chain, also
with an RSA or ECDSA key (the key's own chain broke both signatures of every message).
"""

from __future__ import annotations

import uuid

import pytest

from broker.delivery.outbox import OutboxMessage
from broker.smev3 import codec
from broker.smev3.messages import answer
from broker.smev3.outgoing import RequestMessages
from broker.xml import hardened
from broker.xml.envelope import build_envelope, read_envelope
from broker.xml.signing import SMEV_TRANSFORMS, find_signatures, verify_reference
from tests.delivery_support import term_grade_xml
from tests.smev3_support import ecdsa_pair, gost_pair


def outbox_row() -> OutboxMessage:
    envelope = build_envelope(term_grade_xml("record-1"), recipient="RSMEV")
    header, _ = read_envelope(envelope)
    return OutboxMessage(id=1, message_id=header.message_id, destination="interagency", partition_key="record-1",
                         payload=hardened.to_bytes(envelope), recipient="RSMEV", message_type="TermGradeFinalized",
                         attempts=1, lease_id=uuid.uuid4())


@pytest.mark.parametrize("pair", [gost_pair, ecdsa_pair], ids=["gost", "ecdsa"])
@pytest.mark.parametrize("version", list(codec.Version), ids=lambda v: v.value)
def test_both_signatures_verify_as_handed_out(pair, version: codec.Version) -> None:  # noqa: ANN001
    built = RequestMessages(pair("ejx").key).build(outbox_row())
    handed_out = hardened.parse(codec.to_bytes(answer(version, "GetRequest",
                                                      hardened.parse_trusted(built.messages[version]))))
    signatures = find_signatures(handed_out)
    assert len(signatures) == 2
    for signature in signatures:
        verify_reference(signature)  # raises SignatureVerificationFault on a digest or value mismatch
        transforms = [t.get("Algorithm") for t in signature.iter("{http://www.w3.org/2000/09/xmldsig#}Transform")]
        assert tuple(transforms) == SMEV_TRANSFORMS
