"""XML commands: validation, building and signing envelopes, verifying envelopes and SMEV 3 messages.

Every document goes through :func:`broker.xml.hardened.parse`, so hostile input is
refused before any schema or signature work; every failure is a Fault, which
the root group prints as one ``<code>: <description>`` line.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import click
from cryptography.hazmat.primitives import serialization
from lxml import etree

from broker.app.cli.moments import parse_moment
from broker.domain.faults import Failure, SignatureVerificationFault
from broker.settings import Settings
from broker.xml import hardened
from broker.xml.envelope import ENVELOPE, ENVELOPE_NS, build_envelope, read_envelope
from broker.xml.schemas import Schemas
from broker.xml.signing import (
    Verifier,
    XmlDsigSigner,
    find_signatures,
    keys,
    verify_reference,
)

DOCUMENT = click.argument("file", metavar="FILE", type=str)


@click.command("validate")
@DOCUMENT
def validate(file: str) -> None:
    """Check an envelope against its schemas, or any other document as an event document.

    Event documents get exactly the checks of :meth:`Schemas.check_events`,
    the way in for event bytes (parser, schema, then the model's own rules),
    so the verdict and the fault are the ones ejx gives when it receives them.
    """
    data = read_document(file)
    root = hardened.parse(data)
    schemas = Schemas.load()
    if etree.QName(root).namespace == ENVELOPE_NS:
        _validate_envelope(schemas, root)
    else:
        schemas.check_events(data)
    click.echo(f"{file}: valid {etree.QName(root).localname}")


@click.group("envelope")
def envelope_group() -> None:
    """SMEV-style envelopes."""


@envelope_group.command("build")
@click.argument("event_file", metavar="EVENT.xml", type=str)
@click.option("--recipient", required=True, metavar="MNEMONIC", help="Receiving system, e.g. EPGU.")
@click.option("--test", is_flag=True, help="Mark as a test message: the receiver must not change data.")
@click.pass_obj
def envelope_build(settings: Settings, event_file: str, recipient: str, test: bool) -> None:
    """Print an unsigned envelope around one event."""
    schemas = Schemas.load()
    event = _parse(event_file)
    schemas.validate_event(event)
    envelope = build_envelope(event, recipient=recipient, sender=settings.sender, test=test)
    schemas.validate_envelope(envelope)
    _emit(etree.tostring(envelope, xml_declaration=True, encoding="UTF-8", pretty_print=True))


@envelope_group.command("sign")
@click.argument("envelope_file", metavar="ENVELOPE.xml", type=str)
@click.option("--key", "key_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PEM private key [default: settings' signing key].")
@click.option("--cert", "cert_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PEM certificate [default: settings' signing certificate].")
@click.pass_obj
def envelope_sign(settings: Settings, envelope_file: str, key_file: Path | None, cert_file: Path | None) -> None:
    """Print the envelope signed; the output bytes are exactly the signed ones, never re-indented."""
    envelope = _parse(envelope_file)
    _validate_envelope(Schemas.load(), envelope)
    signer = XmlDsigSigner.from_pem_files(key_file or settings.signing_key_file,
                                          cert_file or settings.signing_cert_file)
    _emit(etree.tostring(signer.sign(envelope), xml_declaration=True, encoding="UTF-8"))


@click.command("verify")
@DOCUMENT
@click.option("--trust", "trust_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PEM certificate(s) to trust [envelopes: default settings' trusted certificates; "
                   "SMEV 3 messages: every signer must be one of them].")
@click.option("--at", "at", metavar="TIME", callback=lambda _ctx, _param, value: parse_moment(value), default=None,
              help="SMEV 3: check certificates' validity at this ISO 8601 time (an archived message), "
                   "not now; without a zone, Moscow time.")
@click.pass_obj
def verify(settings: Settings, file: str, trust_file: Path | None, at: datetime | None) -> None:
    """Check an ejx envelope (print its MessageID) or every signature of an SMEV 3 message.

    For SMEV 3 (a SOAP envelope or any element of one) each ds:Signature is checked by its
    Reference URI, and one line says what it covers (Id and element), its algorithm and signer.
    """
    document = _parse(file)
    if document.tag != ENVELOPE:
        _verify_signatures(document, trust_file, at)
        return
    if at is not None:
        raise click.UsageError("--at applies to SMEV 3 messages; an ejx envelope is checked as of now")
    verifier = Verifier.from_pem_files([trust_file or settings.trusted_certs_file])
    verified = verifier.verify(document)
    schemas = Schemas.load()
    _validate_envelope(schemas, document)
    schemas.validate_event(verified.content)
    click.echo(str(verified.header.message_id))


def _verify_signatures(document: etree._Element, trust_file: Path | None, at: datetime | None) -> None:
    trusted = None if trust_file is None else {
        c.public_bytes(serialization.Encoding.DER) for c in keys.load_certificates(trust_file)}
    signatures = find_signatures(document)
    if not signatures:
        raise SignatureVerificationFault("the document holds no ds:Signature")
    for number, signature in enumerate(signatures, 1):
        where = f"signature {number} of {len(signatures)} (in {etree.QName(signature.getparent()).localname})"
        try:
            verified = verify_reference(signature, at=at)
        except SignatureVerificationFault as fault:
            raise SignatureVerificationFault(f"{where}: {fault.description}") from None
        if trusted is not None and verified.certificate_der not in trusted:
            raise SignatureVerificationFault(f"{where}: signer {verified.subject} (serial "
                                             f"{verified.serial_number:x}) is not in {trust_file}")
        click.echo(f"#{verified.reference_id} {etree.QName(verified.covered).localname}: {verified.algorithm} "
                   f"by {verified.subject} (serial {verified.serial_number:x}, valid "
                   f"{verified.not_before:%Y-%m-%d} .. {verified.not_after:%Y-%m-%d})")




def _validate_envelope(schemas: Schemas, envelope: etree._Element) -> None:
    """Envelope schema, with an unknown event type reported as such rather than as a schema error."""
    _, content = read_envelope(envelope)
    schemas.validate_event(content)
    schemas.validate_envelope(envelope)


def _parse(file: str) -> etree._Element:
    return hardened.parse(read_document(file))


def read_document(file: str) -> bytes:
    """The bytes of FILE (``-``: stdin), at most one byte past the size limit, so that the parser refuses it."""
    limit = hardened.XmlLimits().max_bytes + 1
    try:
        if file == "-":
            data = sys.stdin.buffer.read(limit)
        else:
            with open(file, "rb") as stream:
                data = stream.read(limit)
    except OSError as error:
        raise Failure(f"cannot read {file}: {error.strerror or error}") from None
    return data


def _emit(document: bytes) -> None:
    """Write the bytes as they are: a signed document must not be re-encoded on the way out."""
    click.echo(document, nl=False)


commands = [validate, envelope_group, verify]
