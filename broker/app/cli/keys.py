"""``ejx keys``: development signing keys (ECDSA, RSA or GOST R 34.10-2012) and their self-signed certificates."""

from __future__ import annotations

from pathlib import Path

import click

from broker.domain.faults import Failure
from broker.settings import Settings
from broker.xml.signing import keys


@click.group("keys")
def keys_group() -> None:
    """Signing keys."""


@keys_group.command("init")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write ejx.key and ejx.crt [default: <state dir>/keys].")
@click.option("--algorithm", type=click.Choice([a.value for a in keys.KeyAlgorithm]), default="ecdsa",
              show_default=True, help="gost2012-256 for SMEV 3 peers (needs OpenSSL's gost engine).")
@click.pass_obj
def keys_init(settings: Settings, directory: Path | None, algorithm: str) -> None:
    """Mint a development key and self-signed certificate; never overwrites."""
    target = directory or settings.keys_dir
    try:
        key_path, cert_path = keys.write_dev_pair(target, algorithm=keys.KeyAlgorithm(algorithm))
    except OSError as error:  # a directory ejx may not create or write (permissions, a file in the path)
        raise Failure(f"cannot write a key pair into {target}: {error.strerror or error}") from None
    click.echo(f"{key_path}\n{cert_path}")


commands = [keys_group]
