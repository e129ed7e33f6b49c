"""The reference receiver's sampled signature check: every envelope by default, a share only when asked."""

from __future__ import annotations

import copy

import pytest

from broker.devtools.receivers import SampledVerifier
from broker.domain.faults import Failure, SignatureVerificationFault
from broker.xml import hardened
from broker.xml.envelope import SENDER_PROVIDED_DATA
from tests.delivery_support import signed_message, signing_pair

TRUSTED, UNTRUSTED = signing_pair(), signing_pair()


def _forged():
    """Signed by a key the receiver does not trust."""
    message = signed_message(UNTRUSTED[0])
    return message, hardened.parse(message.payload)


def test_by_default_every_signature_is_checked() -> None:
    sampled = SampledVerifier(TRUSTED[1], draw=lambda: 0.999)
    good = signed_message(TRUSTED[0])
    assert sampled.take(hardened.parse(good.payload)).header.message_id == good.message_id
    with pytest.raises(SignatureVerificationFault):
        sampled.take(_forged()[1])
    assert (sampled.checked, sampled.unchecked) == (2, 0)


def test_a_drawn_envelope_is_verified_and_an_undrawn_one_is_read_unchecked() -> None:
    drawn = iter([0.001, 0.5])
    sampled = SampledVerifier(TRUSTED[1], share=0.01, draw=lambda: next(drawn))
    with pytest.raises(SignatureVerificationFault):
        sampled.take(_forged()[1])
    message, envelope = _forged()
    taken = sampled.take(envelope)  # not drawn: no cryptography, so even an untrusted signer's envelope passes
    assert taken.header.message_id == message.message_id
    assert (sampled.checked, sampled.unchecked) == (1, 1)


def test_an_unchecked_envelope_still_meets_the_shape_rules_against_wrapping() -> None:
    sampled = SampledVerifier(TRUSTED[1], share=0.01, draw=lambda: 0.5)
    envelope = hardened.parse(signed_message(TRUSTED[0]).payload)
    envelope.append(copy.deepcopy(envelope.find(SENDER_PROVIDED_DATA)))
    with pytest.raises(SignatureVerificationFault, match="exactly one SenderProvidedData"):
        sampled.take(envelope)
    assert sampled.unchecked == 0


@pytest.mark.parametrize("share", [0.0, 0.005, 1.5])
def test_a_share_outside_one_percent_to_all_is_refused(share: float) -> None:
    with pytest.raises(Failure, match="verified share"):
        SampledVerifier(TRUSTED[1], share=share)
