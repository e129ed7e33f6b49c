"""The local Kafka: ``settings.kafka_brokers`` KRaft nodes (1 by default, 3 for replication), one quorum.

Node 1 keeps the single-node layout, ``<state_dir>/kafka``; node ``i`` > 1 lives in
``<state_dir>/kafka/node-<i>``. All are formatted into one cluster id (``cluster.id``)
and the node count is recorded (``brokers``), so later commands' settings find it.
Besides ``up``/``down``, the cluster can lose and regain a node (``kill``, ``start``)
and tell who leads a partition or the controller quorum: what the fault tests and
the chaos runs need.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import structlog
from aiokafka.errors import InvalidReplicationFactorError

from broker.devtools.infra.kafka import KafkaNode, KafkaRelease, new_cluster_id
from broker.domain.faults import Failure
from broker.infra import kafka
from broker.settings import BROKERS_FILE, Settings

log = structlog.get_logger(__name__)

READY_TIMEOUT = 90.0
"""From spawning the JVMs to a topic replicated on every node; three JVMs on two cores take a while."""


class LocalKafka:
    """Owns ``<state_dir>/kafka``: one :class:`KafkaNode` per broker, the cluster id, the node count."""

    def __init__(self, settings: Settings, *, advertised: Sequence[str] | None = None) -> None:
        """``advertised``: per node, the address clients are told instead of its own port (a fault proxy)."""
        if advertised is not None and len(advertised) != settings.kafka_brokers:
            raise ValueError(f"advertised needs one address per node, {settings.kafka_brokers}")
        self._settings = settings
        self.release = KafkaRelease(settings)
        self.root = settings.state_dir.resolve() / "kafka"
        self.nodes = [KafkaNode(settings, self.release, node_id=node_id,
                                root=self.root if node_id == 1 else self.root / f"node-{node_id}",
                                advertised=advertised[node_id - 1] if advertised else None)
                      for node_id in range(1, settings.kafka_brokers + 1)]
        self.version_file = self.root / "kafka.version"
        self._cluster_id_file = self.root / "cluster.id"
        self._brokers_file = self.root / BROKERS_FILE

    @property
    def address(self) -> str:
        """Bootstrap servers: every node."""
        return ",".join(node.address for node in self.nodes)

    def node(self, node_id: int) -> KafkaNode:
        if not 1 <= node_id <= len(self.nodes):
            raise ValueError(f"no node {node_id}: the cluster has nodes 1..{len(self.nodes)}")
        return self.nodes[node_id - 1]

    def up(self) -> str:
        """Fetch, format on first use, start the nodes not running, wait until a replicated topic can be made."""
        down = [node for node in self.nodes if node.pid() is None]
        if not down:
            asyncio.run(kafka.wait_ready(self.address, timeout=READY_TIMEOUT))
            return self.address
        for node in down:
            node.refuse_busy_ports()
        self.release.fetch_jars()
        cluster_id = self._prepare_cluster()
        started = time.monotonic()
        for node in down:
            node.prepare(cluster_id=cluster_id)
        for node in down:
            node.spawn()
        try:
            asyncio.run(self._until_usable(time.monotonic() + READY_TIMEOUT))
        except Failure as failure:
            for node in down:
                node.stop(patience=0)
            tails = "\n".join(node.log_tail() for node in down)
            raise Failure(f"{failure.description}\n--- broker log ---\n{tails}") from failure
        log.info("kafka.ready", nodes=len(self.nodes), bootstrap=self.address,
                 seconds=round(time.monotonic() - started, 1))
        return self.address

    def down(self) -> None:
        """Stop every node (controlled shutdown, SIGKILL after a timeout); idempotent."""
        for node in reversed(self.nodes):
            node.stop()

    def is_up(self) -> bool:
        """Every node's process runs and the cluster answers a metadata request."""
        if any(node.pid() is None for node in self.nodes):
            return False
        try:
            asyncio.run(kafka.wait_ready(self.address, timeout=5))
        except Failure:
            return False
        return True

    def kill(self, node_id: int) -> None:
        """SIGKILL one node: a crash, no controlled shutdown; the others elect new leaders."""
        self.node(node_id).stop(patience=0)

    def start(self, node_id: int, *, timeout: float = READY_TIMEOUT) -> None:
        """Start one node again (formatted already) and wait until it accepts connections."""
        node = self.node(node_id)
        if node.pid() is not None:
            return
        node.spawn()
        deadline = time.monotonic() + timeout
        while not _accepts(node.port):
            if node.pid() is None:
                raise Failure(f"Kafka node {node_id} exited during start\n{node.log_tail()}")
            if time.monotonic() > deadline:
                raise Failure(f"Kafka node {node_id} did not listen within {timeout:g} s\n{node.log_tail()}")
            time.sleep(0.1)

    async def leader(self, topic: str, partition: int = 0) -> int:
        """Node id leading ``topic``'s ``partition`` now (-1: none, an election is under way)."""
        return (await self._partition(topic, partition)).leader

    async def in_sync(self, topic: str, partition: int = 0) -> tuple[int, ...]:
        """Node ids of the partition's in-sync replicas, as the controller last recorded them."""
        return tuple(sorted((await self._partition(topic, partition)).in_sync))

    def active_controller(self) -> int:
        """Node id of the KRaft quorum's leader, the active controller (-1 while it is being elected).

        Read from the quorum state each running node persists at every election (the answer of
        DescribeQuorum, which aiokafka does not speak); the newest epoch wins."""
        states = [node.quorum_state() for node in self.nodes if node.pid() is not None]
        newest = max(states, key=lambda state: state["leaderEpoch"], default={"leaderId": -1})
        return newest["leaderId"]

    def _prepare_cluster(self) -> str:
        """The cluster id all nodes are formatted with; refuses a state dir made for another count or version."""
        self.root.mkdir(parents=True, exist_ok=True)
        recorded = self._brokers_file.read_text().strip() if self._brokers_file.exists() else None
        formatted = (self.root / "data" / "meta.properties").exists()
        if formatted and (recorded or "1") != str(len(self.nodes)):
            raise Failure(f"{self.root} holds a {recorded or 1}-node Kafka, settings ask for {len(self.nodes)}: "
                          f"`ejx infra down`, delete {self.root}, or use --brokers {recorded or 1}")
        formatted_with = self.version_file.read_text().strip() if self.version_file.exists() else None
        if formatted_with not in (None, self.release.version):
            raise Failure(f"{self.root} holds Kafka {formatted_with} data, settings ask for {self.release.version}: "
                          f"delete {self.root} or set EJX_KAFKA_VERSION={formatted_with}")
        if not self._cluster_id_file.exists():
            self._cluster_id_file.write_text((_formatted_cluster_id(self.root / "data") or new_cluster_id()) + "\n")
        self.version_file.write_text(self.release.version + "\n")
        self._brokers_file.write_text(f"{len(self.nodes)}\n")
        return self._cluster_id_file.read_text().strip()

    async def _until_usable(self, deadline: float) -> None:
        """Metadata answered, then a probe topic on every node created and deleted; fail fast if a JVM died."""
        probe = self._settings.model_copy(update={"kafka_bootstrap": self.address})
        name = f"ejx.probe.{uuid.uuid4().hex[:12]}"
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if dead := [node.node_id for node in self.nodes if node.pid() is None]:
                raise Failure(f"Kafka node(s) {dead} exited during start (see {self.root})")
            try:
                await kafka.wait_ready(self.address, timeout=2)
                await kafka.ensure_topics(probe, [name], partitions=1, replication_factor=len(self.nodes))
                await kafka.delete_topics(probe, [name])
                return
            except (Failure, InvalidReplicationFactorError) as error:  # the latter: not every node registered yet
                last_error = error
                await asyncio.sleep(0.5)
        raise Failure(f"Kafka at {self.address} was not usable within {READY_TIMEOUT:g} s: {last_error}")

    async def _partition(self, topic: str, partition: int) -> kafka.PartitionState:
        here = self._settings.model_copy(update={"kafka_bootstrap": self.address})
        found = (await kafka.describe_topic(here, topic)).get(partition)
        if found is None:
            raise Failure(f"topic {topic} has no partition {partition}")
        return found


def _formatted_cluster_id(data_dir: Path) -> str | None:
    """The cluster id a node's storage was formatted with (a single-node state dir from before ``cluster.id``)."""
    meta = data_dir / "meta.properties"
    if not meta.exists():
        return None
    pairs = (line.split("=", 1) for line in meta.read_text().splitlines() if "=" in line)
    return dict(pairs).get("cluster.id")


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0
