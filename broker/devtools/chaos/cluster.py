"""The chaos run's world: a Kafka and a PostgreSQL of its own (it kills them), ejx's components and the
reference receivers, each a separate process that can be killed and started again.

A target is a name, ``kill()`` (SIGKILL, as a crash) and ``restart()``; the fault
schedule knows nothing else. ``kafka`` kills every Kafka node at once; with three
nodes, ``kafka-broker`` kills one at a time, in turn the events topic's partition
leader, the active controller and a follower.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

import asyncpg
import httpx
import structlog

from broker.access.registry import Registry, School
from broker.devtools.demo.setup import ensure_keys, register_agency, settings_env, stop_processes
from broker.devtools.infra.cluster import LocalKafka
from broker.devtools.infra.commands import topics
from broker.devtools.infra.postgres import LocalPostgres
from broker.devtools.migrations import RECEIVER_TABLES
from broker.domain.faults import Failure
from broker.infra import kafka
from broker.infra.migrations import PRODUCTION, migrate
from broker.settings import Settings

log = structlog.get_logger(__name__)

PORTS = range(31000, 32000)
"""Below the kernel's ephemeral range: no outgoing connection takes the port a killed Kafka must get back."""
VENDOR = "chaos-vendor"
SCHOOLS = tuple(f"sch-chaos-{n:02d}" for n in range(20))
KILLABLE = ("ingest", "router", "relay", "smev", "kafka", "postgres")
"""The default targets."""
TARGETS = (*KILLABLE, "kafka-broker")
"""Every target; ``kafka-broker`` needs three Kafka nodes."""
READY_S = 120.0
EXIT_TAIL_CHARS = 3000


class Target(Protocol):
    """What the fault schedule kills and brings back."""

    name: str

    async def kill(self) -> None: ...

    async def restart(self) -> None: ...


def free_ports(count: int) -> list[int]:
    """``count`` consecutive ports of :data:`PORTS` nobody listens on, from a random start (runs side by side
    differ); consecutive because Kafka node i takes the configured ports + 2i."""
    span = len(PORTS) - count
    start = random.SystemRandom().randrange(span)
    for offset in range(span):
        block = range(PORTS.start + (start + offset) % span, PORTS.start + (start + offset) % span + count)
        if all(_bindable(port) for port in block):
            return list(block)
    raise Failure(f"no {count} consecutive free ports in {PORTS.start}-{PORTS.stop - 1}")


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Process:
    """One ejx process (a component or a reference receiver), started again after a kill."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self._argv = [str(Path(sys.executable).with_name("ejx")), *argv]
        self._env = env
        self.log_file = log_dir / f"{name}.log"
        self.popen: subprocess.Popen | None = None
        self.killed = False
        """Down on purpose, until :meth:`restart`."""
        self.unexpected_exits: list[dict] = []
        """Exits nobody caused (return code, the log's last lines): each is a finding; the process is started
        again."""

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen and self.popen.poll() is None else None

    def start(self) -> None:
        with self.log_file.open("ab") as out:
            self.popen = subprocess.Popen(self._argv, env=self._env, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL)

    async def kill(self) -> None:
        """SIGKILL; one that exited on its own is recorded and started first, so the exit is not taken for the
        kill and the kill hits a running process."""
        self.revive_if_exited()
        self.killed = True
        if self.popen and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait()

    async def restart(self) -> None:
        self.killed = False
        self.start()

    def revive_if_exited(self) -> bool:
        """Start again a process that exited on its own; True if it had."""
        if self.killed or self.popen is None or self.popen.poll() is None:
            return False
        tail = self.log_file.read_text(errors="replace")[-EXIT_TAIL_CHARS:]
        self.unexpected_exits.append({"returncode": self.popen.returncode, "log_tail": tail})
        log.warning("chaos.unexpected_exit", process=self.name, returncode=self.popen.returncode,
                    log_file=str(self.log_file))
        self.start()
        return True


class KafkaTarget:
    """Every Kafka node at once: SIGKILL, then the same ``LocalKafka.up`` as ``ejx infra up``."""

    name = "kafka"

    def __init__(self, local: LocalKafka) -> None:
        self.local = local

    def pids(self) -> list[int]:
        return [pid for node in self.local.nodes if (pid := node.pid()) is not None]

    async def kill(self) -> None:
        for node in self.local.nodes:
            self.local.kill(node.node_id)

    async def restart(self) -> None:
        await asyncio.to_thread(self.local.up)


class KafkaBrokerTarget:
    """One node of three at a time, in turn the partition leader of ``topic``, the active controller and a
    follower: the others carry on (replication factor 3, two in sync) with no component restarted."""

    name = "kafka-broker"
    ROLES = ("leader", "controller", "follower")

    def __init__(self, local: LocalKafka, topic: str) -> None:
        self.local = local
        self._topic = topic
        self._down: int | None = None
        self.victims: list[dict] = []
        """Per kill: the node and the role it had."""

    async def kill(self) -> None:
        role = self.ROLES[len(self.victims) % len(self.ROLES)]
        leader, controller = await self.local.leader(self._topic), self.local.active_controller()
        followers = [n.node_id for n in self.local.nodes if n.node_id not in (leader, controller)]
        node_id = {"leader": leader, "controller": controller}.get(role, followers[0] if followers else -1)
        if node_id < 1:  # an election under way, or no follower apart: the next node in turn
            node_id = self.local.nodes[len(self.victims) % len(self.local.nodes)].node_id
        self.local.kill(node_id)
        self._down = node_id
        self.victims.append({"node": node_id, "role": role})
        log.info("chaos.kafka_node_killed", node=node_id, role=role, leader=leader, controller=controller)

    async def restart(self) -> None:
        if self._down is not None:
            await asyncio.to_thread(self.local.start, self._down)
            self._down = None


class PostgresTarget:
    """The postmaster: SIGKILL, then ``LocalPostgres.up``, which ends the orphaned backends first."""

    name = "postgres"

    def __init__(self, settings: Settings) -> None:
        self.local = LocalPostgres(settings)

    def pids(self) -> list[int]:
        return self.local.orphaned_backends()  # every process working in our data directory

    async def kill(self) -> None:
        self.local.kill()

    async def restart(self) -> None:
        await asyncio.to_thread(self.local.up)


SOAK_RETENTION_S = 300.0
"""A soak's retention unless ``--retention``: a 30-minute soak sees six retentions go by."""


def short_retention_env(retention_s: float | None) -> dict[str, str]:
    """Every retention ``retention_s`` (a soak's minutes, below production's minimums), swept five times
    per retention; nothing when None."""
    if retention_s is None:
        return {}
    names = ("OUTBOX_RETENTION_S", "INBOX_RETENTION_S", "INGEST_KEY_RETENTION_S", "INGEST_RECORD_RETENTION_S",
             "MESSAGE_ORIGIN_RETENTION_S")
    return {**{f"EJX_{name}": str(retention_s) for name in names}, "EJX_RETENTION_MINIMUMS": "false",
            "EJX_RETENTION_SWEEP_EVERY_S": str(max(1.0, retention_s / 5))}


class Cluster:
    """Everything one chaos run starts, under ``root``; :meth:`stop` ends all of it."""

    def __init__(self, base: Settings, root: Path, *, brokers: int = 1, retention_s: float | None = None) -> None:
        self.root = root
        kafka_port, controller_port, *_, postgres_port, ingest_port, smev_port, portal_port = free_ports(
            2 * brokers + 4)
        self.settings = base.model_copy(update={
            "state_dir": root / "state", "kafka_bootstrap": None, "database_url": None, "kafka_brokers": brokers,
            "topic_replication_factor": None, "topic_min_insync_replicas": None,
            "kafka_port": kafka_port, "kafka_controller_port": controller_port, "postgres_port": postgres_port,
            "http_host": "127.0.0.1", "http_port": ingest_port,
            "portal_url": f"http://127.0.0.1:{portal_port}/envelopes",
            "portal_batch_url": f"http://127.0.0.1:{portal_port}/envelopes/batch",
            "key_file": None, "cert_file": None, "trust_file": None, "smev_key_file": None, "smev_cert_file": None})
        self.ingest_url = f"http://127.0.0.1:{ingest_port}"
        local_kafka = LocalKafka(self.settings)
        self.kafka = KafkaTarget(local_kafka)
        self.kafka_broker = KafkaBrokerTarget(local_kafka, self.settings.events_topic) if brokers >= 3 else None
        self.postgres = PostgresTarget(self.settings)
        self.logs = root / "logs"
        env = {**os.environ, **settings_env(self.settings), **short_retention_env(retention_s), "EJX_LOG_LEVEL": "warning"}
        smev_url = f"http://127.0.0.1:{smev_port}/smev3/1.2"
        commands = {
            "ingest": ["serve", "--components", "ingest"],
            "router": ["serve", "--components", "router"],
            "relay": ["serve", "--components", "relay"],
            "smev": ["serve", "--components", "smev"],
            "portal-receiver": ["receiver", "portal", "--port", str(portal_port)],
            "interagency-receiver": ["receiver", "interagency", "--url", smev_url],
        }
        own_port = {"smev": {"EJX_HTTP_PORT": str(smev_port)}}
        self.processes = {name: Process(name, argv, {**env, **own_port.get(name, {})}, self.logs)
                          for name, argv in commands.items()}
        self.token = ""

    @property
    def targets(self) -> dict[str, Target]:
        """Everything that may be killed, by the name ``--targets`` uses."""
        found: dict[str, Target] = {name: self.processes[name] for name in KILLABLE if name in self.processes}
        found = {**found, "kafka": self.kafka, "postgres": self.postgres}
        return {**found, "kafka-broker": self.kafka_broker} if self.kafka_broker else found

    def pids(self) -> dict[str, list[int]]:
        """Live pids by process name (PostgreSQL: the postmaster and its backends)."""
        found = {name: [p.pid] for name, p in self.processes.items() if p.pid is not None}
        if pids := self.kafka.pids():
            found["kafka"] = pids
        found["postgres"] = self.postgres.pids()
        return found

    async def start(self) -> None:
        """Infra up, database migrated, keys, vendor and agency registered, every process started and ready."""
        self.logs.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.kafka.local.up)
        await kafka.ensure_topics(self.settings, topics(self.settings))
        await asyncio.to_thread(self.postgres.local.up)
        conn = await asyncpg.connect(self.settings.database_dsn)
        try:
            await migrate(conn, PRODUCTION, RECEIVER_TABLES)
        finally:
            await conn.close()
        ensure_keys(self.settings)
        pool = await asyncpg.create_pool(self.settings.database_dsn, min_size=1, max_size=2)
        try:
            registry = Registry(pool)
            self.token = await registry.add_vendor(VENDOR)
            await registry.import_schools([School(s, s, "chaos", VENDOR) for s in SCHOOLS])
            await register_agency(self.settings, pool)
        finally:
            await pool.close()
        for process in self.processes.values():
            process.start()
        await self._until_ready()

    async def _until_ready(self) -> None:
        deadline = time.monotonic() + READY_S
        async with httpx.AsyncClient(base_url=self.ingest_url, timeout=5) as client:
            while time.monotonic() < deadline:
                exited = [p.name for p in self.processes.values() if p.popen and p.popen.poll() is not None]
                if exited:
                    raise Failure(f"{', '.join(exited)} exited during start; see the logs in {self.logs}")
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.3)
        raise Failure(f"ingest was not ready within {READY_S:g} s; see {self.logs}/ingest.log")

    def revive_exited(self) -> None:
        """Processes that exited without being killed are started again (and counted)."""
        for process in self.processes.values():
            process.revive_if_exited()

    def stop(self, *, keep: bool) -> None:
        """Every process (SIGTERM, then SIGKILL), Kafka and PostgreSQL down; the directory removed unless
        ``keep`` (its logs are what a failed run leaves to read)."""
        stop_processes([p.popen for p in self.processes.values() if p.popen is not None])
        self.kafka.local.down()
        self.postgres.local.down()
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)
