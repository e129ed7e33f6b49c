"""The demo's own world: a database, topics, keys and child processes of its own."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from broker.access.participants import CertificateFacts, Participants
from broker.app.bootstrap import COMPONENTS
from broker.devtools.scratch import drop_database
from broker.infra import kafka
from broker.settings import Settings
from broker.xml.signing.keys import CERT_FILE, KEY_FILE, KeyAlgorithm, write_dev_pair

INTERAGENCY_PARTICIPANT = "RSMEV"
"""The agency the demo's interagency receiver stands in for (routing.toml's interagency recipient)."""
PORTAL_PARTICIPANT = "EPGU"
"""The public-services portal, which asks for pupils' e-diaries over SMEV 3."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def demo_settings(settings: Settings, run_id: str, database_url: str) -> Settings:
    """The run's own topics, database and ports; everything else as configured."""
    suffix = f".demo-{run_id}"
    portal = f"http://127.0.0.1:{free_port()}"
    return settings.model_copy(update={
        "database_url": database_url,
        "events_topic": settings.events_topic + suffix,
        "dlq_topic": settings.dlq_topic + suffix,
        "interagency_topic": settings.interagency_topic + suffix,
        "http_port": free_port(),
        "portal_url": f"{portal}/envelopes",
        "portal_batch_url": f"{portal}/envelopes/batch",
    })


async def remove_run_data(base: Settings, run: Settings, database: str) -> None:
    """Drop a run's database (``run``'s, named ``database``, from ``base``'s) and delete its topics."""
    await kafka.delete_topics(run, [run.events_topic, run.dlq_topic, run.interagency_topic])
    await drop_database(base, database)


def ensure_keys(settings: Settings) -> None:
    """Development key pairs on first use: ejx's envelope key (ECDSA), ejx's SMEV key, the demo agency's and
    the demo portal's (GOST R 34.10-2012); an operator's own keys are never touched."""
    if not settings.signing_key_file.exists() and not settings.signing_cert_file.exists():
        write_dev_pair(settings.signing_key_file.parent)
    _ensure_gost_pair(settings.smev_signing_key_file, settings.smev_signing_cert_file)
    _ensure_gost_pair(*agency_pair(settings))
    _ensure_gost_pair(*portal_pair(settings))


def agency_pair(settings: Settings) -> tuple[Path, Path]:
    """Key and certificate of the demo's agency, the SMEV 3 client that pulls as RSMEV."""
    directory = settings.keys_dir / INTERAGENCY_PARTICIPANT.lower()
    return directory / KEY_FILE, directory / CERT_FILE


def portal_pair(settings: Settings) -> tuple[Path, Path]:
    """Key and certificate of the demo's portal, the e-diary requester that signs as EPGU."""
    directory = settings.keys_dir / PORTAL_PARTICIPANT.lower()
    return directory / KEY_FILE, directory / CERT_FILE


def _ensure_gost_pair(key_file: Path, cert_file: Path) -> None:
    if not key_file.exists() and not cert_file.exists():
        write_dev_pair(key_file.parent, algorithm=KeyAlgorithm.GOST2012_256)


async def register_agency(settings: Settings, pool: asyncpg.Pool) -> None:
    """The demo's agency as an SMEV 3 participant, by its certificate."""
    facts = CertificateFacts.from_pem(agency_pair(settings)[1].read_bytes())
    await Participants(pool).add(INTERAGENCY_PARTICIPANT, facts, service="demo interagency receiver")


async def register_portal(settings: Settings, pool: asyncpg.Pool) -> None:
    """The demo's portal as an SMEV 3 participant registered for the e-diary service, by its certificate."""
    facts = CertificateFacts.from_pem(portal_pair(settings)[1].read_bytes())
    await Participants(pool).add(PORTAL_PARTICIPANT, facts, service=settings.diary_service)


def settings_env(settings: Settings) -> dict[str, str]:
    """The run's settings as the ``EJX_*`` variables a child process reads."""
    overrides = {
        "EJX_KAFKA_BOOTSTRAP": settings.kafka_address, "EJX_DATABASE_URL": settings.database_dsn,
        "EJX_EVENTS_TOPIC": settings.events_topic, "EJX_DLQ_TOPIC": settings.dlq_topic,
        "EJX_INTERAGENCY_TOPIC": settings.interagency_topic, "EJX_HTTP_PORT": str(settings.http_port),
        "EJX_PORTAL_URL": settings.portal_url or "", "EJX_PORTAL_BATCH_URL": settings.portal_batch_url or "",
        "EJX_STATE_DIR": str(settings.state_dir),
        "EJX_KEY_FILE": str(settings.signing_key_file), "EJX_CERT_FILE": str(settings.signing_cert_file),
        "EJX_TRUST_FILE": str(settings.trusted_certs_file),
        "EJX_SMEV_KEY_FILE": str(settings.smev_signing_key_file),
        "EJX_SMEV_CERT_FILE": str(settings.smev_signing_cert_file),
    }
    return overrides


def stop_processes(processes: list[subprocess.Popen]) -> None:
    """SIGTERM (each finishes its batch in flight), then wait; SIGKILL only if one hangs."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_processes(settings: Settings, logs: Path) -> list[subprocess.Popen]:
    """ejx as two processes (the router, and every other component), the reference portal receiver and the
    interagency SMEV 3 client, each a process of its own as in production; their logs go to ``logs``
    (``<name>.log``).

    The router has a process of its own because it is the CPU-heavy stage: on one GIL with the HTTP faces
    its signing thread delayed every request and every other component's round trip (demo p50 latency
    484-898 ms with one process, 395-536 ms with two, alternated runs).
    """
    logs.mkdir(parents=True, exist_ok=True)
    ejx = str(Path(sys.executable).with_name("ejx"))
    commands = {
        "serve": [ejx, "serve", "--components", ",".join(c for c in COMPONENTS if c != "router")],
        "router": [ejx, "serve", "--components", "router"],
        "portal-receiver": [ejx, "receiver", "portal", "--port", str(urlsplit(settings.portal_url).port)],
        "interagency-receiver": [ejx, "receiver", "interagency"],
    }
    env = {**os.environ, **settings_env(settings)}
    processes = []
    for name, command in commands.items():
        with (logs / f"{name}.log").open("wb") as log_file:
            processes.append(subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL))
    return processes
