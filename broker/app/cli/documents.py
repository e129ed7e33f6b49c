"""XML commands: dev keys, validation, building, signing and verifying envelopes.

Every document goes through :func:`broker.xml.hardened.parse`, so hostile input is
refused before any schema or signature work; every failure is a Fault, which
the root group prints as one ``<code>: <description>`` line.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from lxml import etree

from broker.domain.faults import Failure
from broker.settings import Settings
from broker.xml import hardened
from broker.xml.envelope import ENVELOPE_NS, build_envelope, read_envelope
from broker.xml.schemas import Schemas
from broker.xml.signing import Verifier, XmlDsigSigner, keys

DOCUMENT = click.argument("file", metavar="FILE", type=str)


@click.group("keys")
def keys_group() -> None:
    """Signing keys."""


@keys_group.command("init")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write ejx.key and ejx.crt [default: <state dir>/keys].")
@click.option("--algorithm", type=click.Choice([a.value for a in keys.KeyAlgorithm]), default="ecdsa",
              show_default=True)
@click.pass_obj
def keys_init(settings: Settings, directory: Path | None, algorithm: str) -> None:
    """Mint a development key and self-signed certificate; never overwrites."""
    key_path, cert_path = keys.write_dev_pair(directory or settings.keys_dir,
                                              algorithm=keys.KeyAlgorithm(algorithm))
    click.echo(f"{key_path}\n{cert_path}")


@click.command("validate")
@DOCUMENT
def validate(file: str) -> None:
    """Check an envelope against its schemas, or any other document as an event document.

    Event documents get exactly the checks of :meth:`Schemas.check_events`,
    the way in for event bytes (parser, schema, then the model's own rules),
    so the verdict and the fault are the ones ejx gives when it receives them.
    """
    data = _read(file)
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
              help="PEM certificate(s) to trust [default: settings' trusted certificates].")
@click.pass_obj
def verify(settings: Settings, file: str, trust_file: Path | None) -> None:
    """Check an envelope's signature, then its schemas; print its MessageID."""
    verifier = Verifier.from_pem_files([trust_file or settings.trusted_certs_file])
    envelope = _parse(file)
    verified = verifier.verify(envelope)
    schemas = Schemas.load()
    _validate_envelope(schemas, envelope)
    schemas.validate_event(verified.content)
    click.echo(str(verified.header.message_id))


def _validate_envelope(schemas: Schemas, envelope: etree._Element) -> None:
    """Envelope schema, with an unknown event type reported as such rather than as a schema error."""
    _, content = read_envelope(envelope)
    schemas.validate_event(content)
    schemas.validate_envelope(envelope)


def _parse(file: str) -> etree._Element:
    return hardened.parse(_read(file))


def _read(file: str) -> bytes:
    """Read at most one byte past the size limit, so that the hardened parser refuses it."""
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


commands = [keys_group, validate, envelope_group, verify]
