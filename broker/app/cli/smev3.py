"""``ejx smev3``: tools for SMEV 3 integrators, and ``pull``, the reference client an agency can run as it is."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import click
import structlog

from broker.app import bootstrap
from broker.app.cli.documents import DOCUMENT, read_document
from broker.infra.backoff import pause
from broker.smev3.client import (
    ClientOptions,
    ReceivedMessage,
    Smev3Client,
    pinned_certificates,
)
from broker.smev3.wire import Version
from broker.xml.signing import SigningKey
from broker.xml.smev_transform import transform_bytes

log = structlog.get_logger(__name__)


@click.group("smev3")
def smev3_group() -> None:
    """SMEV 3 message exchange."""


@smev3_group.command("transform")
@DOCUMENT
def transform(file: str) -> None:
    """Print exc-c14n + the SMEV transform of the document's root, as raw bytes.

    These are exactly the octets a GOST DigestValue is computed over: diff them
    with what your own client digests to find why a digest does not match.
    """
    click.echo(transform_bytes(read_document(file)), nl=False)  # bytes: written as they are, never re-encoded



@smev3_group.command("pull")
@click.option("--url", required=True, help="The SMEV 3 endpoint, e.g. https://ejx.example/smev3/1.2 (or …/1.3).")
@click.option("--key", "key_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Your information system's signing key (PEM; GOST R 34.10-2012 or not).")
@click.option("--cert", "cert_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Its certificate, the one registered with `ejx participants add`.")
@click.option("--trust", "trust_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The exchange's certificate(s) (PEM): only signatures by these are accepted.")
@click.option("--type", "message_type", metavar="NS:ROOT", default=None,
              help="Only messages of this business root, e.g. urn://ejx/events/1:TermGradeFinalized.")
@click.option("--ack", is_flag=True, help="Acknowledge each message once it is written to --out.")
@click.option("--once", is_flag=True, help="Take at most one message, then stop.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("smev3-inbox"),
              show_default=True, help="Where each verified message is written, as <MessageID>.xml.")
@click.option("--idle", default=1.0, show_default=True, help="Seconds to wait after an empty queue.")
def pull(url: str, key_file: Path, cert_file: Path, trust_file: Path | None, message_type: str | None, ack: bool,
         once: bool, out: Path, idle: float) -> None:
    """GetRequest signed with your key; verify every signature; write the message durably; then Ack."""
    namespace, root = _selector(message_type)
    version = Version.V1_3 if url.rstrip("/").endswith("1.3") else Version.V1_2
    client = Smev3Client(url, SigningKey.from_pem_files(key_file, cert_file),
                         trusted=pinned_certificates(trust_file) if trust_file else None,
                         options=ClientOptions(version=version, namespace_uri=namespace, root_local_name=root))
    out.mkdir(parents=True, exist_ok=True)

    async def main(stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                pulled = await client.get_request()
                if pulled is None:
                    if once:
                        click.echo("the queue is empty", err=True)
                        return
                    await pause(stop, idle)
                    continue
                if pulled.message is None:
                    click.echo(f"{pulled.message_id}\trefused\t{pulled.refusal.description}", err=True)
                else:
                    first = _record(out, pulled.message)
                    click.echo(f"{pulled.message_id}\t{'received' if first else 'duplicate'}\t"
                               f"{out / f'{pulled.message_id}.xml'}")
                if ack:
                    await client.ack(pulled.message_id, accepted=pulled.message is not None)
                if once:
                    return
        finally:
            await client.aclose()

    bootstrap.run_until_signalled(main)


def _selector(message_type: str | None) -> tuple[str | None, str | None]:
    """``NS:ROOT`` split at its last colon (namespaces hold colons themselves)."""
    if message_type is None:
        return None, None
    namespace, _, root = message_type.rpartition(":")
    if not namespace or not root:
        raise click.BadParameter("give the business root as NAMESPACE:LOCALNAME", param_hint="--type")
    return namespace, root


def _record(out: Path, message: ReceivedMessage) -> bool:
    """Write the whole answer as received (its signatures still verify) and make it durable before any Ack:
    a temporary file, fsync, rename, fsync of the directory. False when the MessageID was recorded before."""
    final = out / f"{message.message_id}.xml"
    if final.exists():
        log.info("smev3_pull.duplicate", message_id=str(message.message_id))
        return False
    scratch = out / f".{message.message_id}.{os.getpid()}.tmp"
    with scratch.open("wb") as file:
        file.write(message.document)
        file.flush()
        os.fsync(file.fileno())
    os.replace(scratch, final)
    directory = os.open(out, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    log.info("smev3_pull.received", message_id=str(message.message_id), test=message.test,
             sender=message.sender, path=str(final))
    return True


commands = [smev3_group]
