"""``ejx smev3``: tools for SMEV 3 integrators; the reference client's commands join this group."""

from __future__ import annotations

import click

from broker.app.cli.documents import DOCUMENT, read_document
from broker.xml.smev_transform import transform_bytes


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


commands = [smev3_group]
