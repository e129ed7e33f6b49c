"""``ejx smev3``: tools for SMEV 3 integrators; ``pull``, the reference client an agency can run as it is, and
``request``, the reference e-diary requester a portal can run as it is."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import date
from pathlib import Path

import click
import structlog
from rich.console import Console
from rich.table import Table

from broker.app import bootstrap
from broker.app.cli.documents import DOCUMENT, read_document
from broker.app.cli.moments import MOSCOW
from broker.domain.faults import Failure
from broker.infra.backoff import pause
from broker.smev3.client import (
    ClientOptions,
    ReceivedMessage,
    Smev3Client,
    pinned_certificates,
)
from broker.smev3.diary_documents import DiaryQuery
from broker.smev3.requester import DiaryAnswer, RequesterOptions, request_diary
from broker.smev3.wire import Version
from broker.xml.schemas import Schemas
from broker.xml.signing import SigningKey
from broker.xml.smev_transform import transform_bytes

log = structlog.get_logger(__name__)


REJECTED_EXIT = 3
"""Exit status of ``request`` when the request was rejected (NO_DATA, ACCESS_DENIED, FAILURE…)."""


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
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a file in the path, permissions: before anything is pulled
        raise Failure(f"cannot write messages into {out}: {error.strerror or error}") from None

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
                    held = "" if pulled.refuse_for_good else " (not acknowledged: it comes back)"
                    click.echo(f"{pulled.message_id}\trefused{held}\t{pulled.refusal.description}", err=True)
                else:
                    first = _record(out, pulled.message)
                    click.echo(f"{pulled.message_id}\t{'received' if first else 'duplicate'}\t"
                               f"{out / f'{pulled.message_id}.xml'}")
                if ack and (pulled.message is not None or pulled.refuse_for_good):
                    await client.ack(pulled.message_id, accepted=pulled.message is not None)
                if once:
                    return
        finally:
            await client.aclose()

    bootstrap.run_until_signalled(main)


@smev3_group.command("request")
@click.option("--url", required=True, help="The SMEV 3 endpoint, e.g. https://ejx.example/smev3/1.3 (or …/1.2).")
@click.option("--key", "key_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Your information system's signing key (PEM).")
@click.option("--cert", "cert_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Its certificate, registered with `ejx participants add … --service diary`.")
@click.option("--trust", "trust_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The exchange's certificate(s) (PEM): only signatures by these are accepted.")
@click.option("--pupil", required=True, help="The pupil's pseudonymous id, e.g. st-77k3f9q2m (never a name or SNILS).")
@click.option("--from", "date_from", type=click.DateTime(["%Y-%m-%d"]), help="First day (YYYY-MM-DD).")
@click.option("--to", "date_to", type=click.DateTime(["%Y-%m-%d"]), help="Last day (YYYY-MM-DD).")
@click.option("--subject", help="Only this subject, e.g. MATH.")
@click.option("--version", "version_text", type=click.Choice(["1.2", "1.3"]),
              help="Protocol version; default: the URL's (…/1.2 or …/1.3).")
@click.option("--wait", "wait_s", default=30.0, show_default=True, help="Seconds to wait for the response.")
@click.option("--test", is_flag=True, help="Send a TestMessage: answered, not audited as a real read.")
def request(url: str, key_file: Path, cert_file: Path, trust_file: Path | None, pupil: str, date_from, date_to,
            subject: str | None, version_text: str | None, wait_s: float, test: bool) -> None:
    """SendRequest of a DiaryRequest; GetResponse until it is answered; verify every signature; Ack; print it.

    Exits 3 when the request was rejected (NO_DATA, ACCESS_DENIED, FAILURE), 1 on a fault or when no
    response came within --wait.
    """
    version = Version(version_text) if version_text else (
        Version.V1_3 if url.rstrip("/").endswith("1.3") else Version.V1_2)
    query = DiaryQuery(pupil_id=pupil, date_from=date_from and date_from.date(), date_to=date_to and date_to.date(),
                       subject_code=subject)
    client = Smev3Client(url, SigningKey.from_pem_files(key_file, cert_file),
                         trusted=pinned_certificates(trust_file) if trust_file else None,
                         options=ClientOptions(version=version))

    answers: list[DiaryAnswer] = []

    async def main(stop: asyncio.Event) -> None:
        try:
            answers.append(await request_diary(client, query, version=version, schemas=Schemas.load(),
                                               options=RequesterOptions(wait_s=wait_s, test=test)))
        finally:
            await client.aclose()

    bootstrap.run_until_signalled(main)
    answer = answers[0]
    console = Console()
    if answer.rejection is not None:
        code, description = answer.rejection
        console.print(f"{answer.message_id}: rejected [bold]{code}[/]: {description}")
        sys.exit(REJECTED_EXIT)
    for table in diary_tables(answer):
        console.print(table)


def diary_tables(answer: DiaryAnswer) -> list[Table]:
    """The diary as tables a person reads: marks, attendance, homework, term grades (times in Moscow time)."""
    diary = answer.diary or {}
    span = f"{diary.get('from') or '…'} – {diary.get('to') or '…'}"
    answered = answer.response.sending_timestamp.astimezone(MOSCOW)
    marks = _table(f"E-diary of {diary.get('student_id')}, {span}"
                   f"{', ' + diary['subject_code'] if diary.get('subject_code') else ''} "
                   f"(answered {answered:%Y-%m-%d %H:%M:%S} MSK, MessageID {answer.message_id})",
                   "date", "subject", "work type", "weight", "mark", "corrected")
    for g in diary.get("grades", []):
        marks.add_row(_shown(g["lesson_date"]), g["subject_code"], g["work_type"], f"{g['weight']:g}",
                      g["mark"]["value"], (g["correction_reason"] or "yes") if g["corrected"] else "")
    attendance = _table("Attendance", "date", "lesson", "status", "minutes late")
    for a in diary.get("attendance", []):
        attendance.add_row(_shown(a["date"]), a["lesson_id"], a["status"], str(a["minutes_late"] or ""))
    homework = _table("Homework", "set", "due", "subject", "task")
    for h in diary.get("homework", []):
        homework.add_row(_shown(h["lesson_date"]), _shown(h["due_date"]), h["subject_code"], h["text"])
    terms = _table("Term grades", "year", "term", "period", "subject", "mark")
    for t in diary.get("term_grades", []):
        terms.add_row(t["academic_year"], t["term_id"], t["period"], t["subject_code"], t["mark"]["value"])
    return [marks, attendance, homework, terms]


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    return table


def _shown(day: str) -> str:
    """A calendar day as Russians read it (the journal's days are Moscow days already)."""
    return f"{date.fromisoformat(day):%d.%m.%Y}"


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
