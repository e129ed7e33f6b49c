"""The demo's e-diary part: the portal asks for a few pupils' diaries over SMEV 3, then the message log is
verified with ``ejx log verify``, as an auditor would, over the run's own database.

The requests go through :func:`broker.smev3.requester.request_diary`, the code path of
``ejx smev3 request``, signed with the demo portal's GOST key; ejx's answers are only
accepted when signed with ejx's SMEV certificate.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import asyncpg

from broker.devtools.demo.report import DemoReport
from broker.devtools.demo.setup import portal_pair, register_portal, settings_env
from broker.devtools.simulation import SchoolDay
from broker.domain.model import GradePosted
from broker.settings import Settings
from broker.smev3.client import ClientOptions, Smev3Client, pinned_certificates
from broker.smev3.diary_documents import DiaryQuery
from broker.smev3.requester import RequesterOptions, request_diary
from broker.smev3.wire import Version
from broker.xml.schemas import Schemas
from broker.xml.signing import SigningKey

UNKNOWN_PUPIL = "st-unknown0"
"""A pupil no school ever sent: the portal must hear NO_DATA."""
_VERDICT = re.compile(r"ok: (\d+) record\(s\) verified|BROKEN (.*?); (\d+) record\(s\) before it verified")


def pupils_to_ask(day: SchoolDay, known: int) -> list[str]:
    """The first ``known`` pupils with a grade in the simulated journal, then one nobody knows."""
    graded = sorted({e.student_id for events in day.events.values() for e in events if isinstance(e, GradePosted)})
    return graded[:known] + [UNKNOWN_PUPIL]


async def ask_diaries(settings: Settings, pupils: list[str]) -> Counter[str]:
    """Each pupil's diary over SMEV 1.3, as ``ejx smev3 request`` asks; the outcomes counted."""
    client = Smev3Client(f"http://127.0.0.1:{settings.http_port}/smev3/1.3",
                         SigningKey.from_pem_files(*portal_pair(settings)),
                         trusted=pinned_certificates(settings.smev_signing_cert_file),
                         options=ClientOptions(version=Version.V1_3))
    schemas, outcomes = Schemas.load(), Counter()
    try:
        for pupil in pupils:
            answer = await request_diary(client, DiaryQuery(pupil), version=Version.V1_3, schemas=schemas,
                                         options=RequesterOptions(wait_s=20))
            outcomes[answer.outcome] += 1
    finally:
        await client.aclose()
    return outcomes


def verify_message_log(settings: Settings) -> tuple[int, str | None, str]:
    """``ejx log verify`` over the run's database: (records checked, the first break or None, its line)."""
    done = subprocess.run([str(Path(sys.executable).with_name("ejx")), "log", "verify"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **settings_env(settings),
                                                       "EJX_LOG_LEVEL": "warning"})
    line = (done.stdout.strip().splitlines() or [done.stderr.strip()])[-1]
    found = _VERDICT.search(line)
    if found is None:
        return 0, f"ejx log verify did not run: {line}", line
    if found.group(1) is not None:
        return int(found.group(1)), None, line
    return int(found.group(3)), found.group(2), line


async def diary_round(settings: Settings, pool: asyncpg.Pool, day: SchoolDay, report: DemoReport, *,
                      known: int = 3) -> None:
    """Register the portal for the e-diary service, ask for ``known`` pupils' diaries and an unknown one's,
    then verify the message log; the results go into ``report``."""
    await register_portal(settings, pool)
    report.diary_expected = {"answered": known, "NO_DATA": 1}
    report.diary_requests = dict(sorted((await ask_diaries(settings, pupils_to_ask(day, known))).items()))
    report.message_log_checked, report.message_log_broken, report.message_log_verdict = verify_message_log(settings)
