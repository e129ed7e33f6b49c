"""One node of a local Apache Kafka (KRaft, combined mode), run from Maven Central's jars.

No Docker and no tarball download: Maven fetches ``kafka_2.13`` and its runtime
dependencies once into ``~/.cache/ejx/kafka-<version>/libs`` (shared by every
clone and state dir), and the JDK runs ``kafka.Kafka`` detached, each node with
its data, config, pid file and logs in a directory of its own. Small heap and
one-partition internal topics, because the machines have 2 cores. The cluster of
such nodes is :mod:`broker.devtools.infra.cluster`.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from importlib import resources
from pathlib import Path

import structlog

from broker.domain.faults import Failure
from broker.settings import Settings

log = structlog.get_logger(__name__)

POM = "kafka-pom.xml"
STOP_TIMEOUT = 30.0
LIBS_MARKER = "libs.complete"


def major_version(version: str) -> int:
    """3 or 4: what decides the logging backend; anything else is refused early."""
    parts = version.split(".")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        raise Failure(f"Kafka version {version!r} is not of the form X.Y.Z")
    major = int(parts[0])
    if major not in (3, 4):
        raise Failure(f"Kafka {version} is not supported locally: use a 3.9.x or 4.x release")
    return major


def server_properties(settings: Settings, *, node_id: int, data_dir: Path,
                      advertised: str | None = None) -> dict[str, str]:
    """Node ``node_id`` (1-based) of ``settings.kafka_brokers``: broker and KRaft controller on loopback,
    one controller quorum of every node; clients are told ``advertised`` (default: its own port)."""
    port, controller_port = node_ports(settings, node_id)
    voters = ",".join(f"{node}@127.0.0.1:{node_ports(settings, node)[1]}"
                      for node in range(1, settings.kafka_brokers + 1))
    # A record is acknowledged once on a majority of three replicas: one node may die, none is lost.
    replicas = min(settings.kafka_brokers, 3)
    insync = max(1, replicas - 1)
    return {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{advertised or f'127.0.0.1:{port}'}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        "default.replication.factor": str(replicas),
        "min.insync.replicas": str(insync),
        "offsets.topic.replication.factor": str(replicas),
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(insync),
        "unclean.leader.election.enable": "false",
        # 50 partitions each by default: seconds of work on 2 cores before the first group join or transaction.
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Topics exist because ejx created them (`ejx infra up`, components at start), never by a typo.
        "auto.create.topics.enable": "false",
        "num.partitions": str(settings.topic_partitions),
        "num.network.threads": "2",
        "num.io.threads": "4",
    }


def node_ports(settings: Settings, node_id: int) -> tuple[int, int]:
    """(PLAINTEXT, CONTROLLER) ports of node ``node_id``: the configured pair, shifted by two per node."""
    shift = 2 * (node_id - 1)
    return settings.kafka_port + shift, settings.kafka_controller_port + shift


def render_properties(properties: dict[str, str]) -> str:
    """Java properties text; values here never need escaping beyond backslashes."""
    lines = ["# Written by ejx (broker/devtools/infra/kafka.py) at every start; edits are overwritten."]
    lines += [f"{key}={value.replace(chr(92), chr(92) * 2)}" for key, value in properties.items()]
    return "\n".join(lines) + "\n"


def new_cluster_id() -> str:
    """A Kafka cluster id: a random UUID, base64url without padding, not starting with '-'."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


class KafkaRelease:
    """One Kafka version's jars in the shared cache, and the java command line that runs them."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.version = settings.kafka_version
        self.major = major_version(self.version)
        self.cache_dir = Path.home() / ".cache" / "ejx" / f"kafka-{self.version}"
        self.libs_dir = self.cache_dir / "libs"

    def fetch_jars(self) -> Path:
        """Broker jars plus a logging backend, from Maven Central into the shared cache; once per version."""
        with self._cache_lock():
            if self._libs_complete():
                return self.libs_dir
            mvn = shutil.which("mvn")
            if mvn is None:
                raise Failure("Maven (mvn) not found: run `apt-get install -y maven` "
                              "or set EJX_KAFKA_BOOTSTRAP to an existing Kafka")
            pom = self.cache_dir / "pom.xml"
            pom.write_bytes(_pom_bytes())
            # Fetched beside, then swapped in: a broker running from the old jars keeps finding its classes.
            staging = self.cache_dir / "libs.partial"
            shutil.rmtree(staging, ignore_errors=True)
            log.info("kafka.fetching_jars", version=self.version, libs=str(self.libs_dir))
            started = time.monotonic()
            done = subprocess.run(
                [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
                 f"-DoutputDirectory={staging}", "-DincludeScope=runtime", f"-Dkafka.version={self.version}",
                 f"-Dejx.logging={'reload4j' if self.major == 3 else 'log4j2'}"],
                capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=self.cache_dir)
            jars = sorted(path.name for path in staging.glob("*.jar"))
            if done.returncode != 0 or f"kafka_2.13-{self.version}.jar" not in jars:
                output = (done.stdout + done.stderr).strip()[-1500:]
                raise Failure(f"Maven could not fetch Kafka {self.version}: {output}")
            retired = self.cache_dir / "libs.retired"
            shutil.rmtree(retired, ignore_errors=True)
            if self.libs_dir.exists():
                self.libs_dir.rename(retired)
            staging.rename(self.libs_dir)
            shutil.rmtree(retired, ignore_errors=True)
            (self.cache_dir / LIBS_MARKER).write_text("\n".join([_pom_digest(), *jars]) + "\n")
            log.info("kafka.jars_ready", jars=len(jars), seconds=round(time.monotonic() - started, 1))
            return self.libs_dir

    def java(self, *, logs_dir: Path, logging_config: Path) -> list[str]:
        """``java … -cp <libs>/*`` with the settings' heap; the main class is the caller's."""
        java = shutil.which("java")
        if java is None:
            raise Failure("java not found: run `apt-get install -y openjdk-17-jre-headless` "
                          "or set EJX_KAFKA_BOOTSTRAP to an existing Kafka")
        logging_option = ("-Dlog4j.configuration=file:" if self.major == 3 else "-Dlog4j2.configurationFile=")
        return [java, *self._settings.kafka_heap.split(),
                "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:+ExitOnOutOfMemoryError",
                "-Djava.awt.headless=true", f"-Dkafka.logs.dir={logs_dir}", f"{logging_option}{logging_config}",
                "-cp", f"{self.libs_dir}/*"]

    @property
    def logging_config_name(self) -> str:
        return "kafka-log4j.properties" if self.major == 3 else "kafka-log4j2.properties"

    def _libs_complete(self) -> bool:
        """Fetched by this very pom (a changed pom refetches) and no jar deleted since."""
        marker = self.cache_dir / LIBS_MARKER
        if not marker.exists():
            return False
        digest, *jars = marker.read_text().split() or [""]
        return digest == _pom_digest() and all((self.libs_dir / name).exists() for name in jars)

    @contextmanager
    def _cache_lock(self) -> Iterator[None]:
        """Two clones starting at once must not fetch into the same directory together."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with (self.cache_dir / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


class KafkaNode:
    """One JVM of the cluster: owns ``root`` (server.properties, data, logs, pid file)."""

    def __init__(self, settings: Settings, release: KafkaRelease, *, node_id: int, root: Path,
                 advertised: str | None = None) -> None:
        self._settings = settings
        self._release = release
        self.node_id = node_id
        self.port, self.controller_port = node_ports(settings, node_id)
        self.address = advertised or f"127.0.0.1:{self.port}"
        """Where clients reach this node: its own port, or what it advertises (a proxy in the fault tests)."""
        self._advertised = advertised
        self.root = root
        self.data_dir = root / "data"
        self.logs_dir = root / "logs"
        self.config_file = root / "server.properties"
        self.pid_file = root / "kafka.pid"
        self.console_file = self.logs_dir / "console.out"

    def prepare(self, *, cluster_id: str) -> None:
        """Config and logging files at every start; storage formatted once, into ``cluster_id``."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        properties = server_properties(self._settings, node_id=self.node_id, data_dir=self.data_dir,
                                       advertised=self._advertised)
        self.config_file.write_text(render_properties(properties))
        logging_config = self.root / self._release.logging_config_name
        logging_config.write_bytes(resources.files(__package__).joinpath(logging_config.name).read_bytes())
        if (self.data_dir / "meta.properties").exists():
            return
        done = subprocess.run(
            [*self._java(), "kafka.tools.StorageTool", "format", "-t", cluster_id,
             "-c", str(self.config_file), "--ignore-formatted"],
            capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise Failure(f"formatting Kafka storage failed: {(done.stdout + done.stderr).strip()[-1500:]}")
        log.info("kafka.formatted", node=self.node_id, data_dir=str(self.data_dir))

    def spawn(self) -> int:
        """Start the JVM detached, in a session of its own; its pid."""
        with self.console_file.open("ab") as console:
            process = subprocess.Popen(
                [*self._java(), "kafka.Kafka", str(self.config_file)],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.root)
        self.pid_file.write_text(f"{process.pid}\n")
        # Popen can return before the child's command line shows kafka.Kafka; until it does,
        # _alive() would take our own broker for a stranger.
        deadline = time.monotonic() + 10
        while not self._alive(process.pid) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        log.info("kafka.started", node=self.node_id, pid=process.pid, address=self.address)
        return process.pid

    def pid(self) -> int | None:
        """Pid of this node's running broker: from the pid file, checked against the process's command line."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if self._alive(pid) else None

    def stop(self, *, patience: float = STOP_TIMEOUT) -> None:
        """SIGTERM (controlled shutdown), SIGKILL after ``patience`` seconds (0: at once, a crash); idempotent."""
        pid = self.pid()
        if pid is not None:
            steps = [(signal.SIGTERM, patience)] if patience else []
            for sig, wait in [*steps, (signal.SIGKILL, 10.0)]:
                # The broker leads a session of its own: signal all of it.
                with suppress(ProcessLookupError):
                    os.killpg(pid, sig)
                deadline = time.monotonic() + wait
                while _running(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if not _running(pid):
                    log.info("kafka.stopped", node=self.node_id, pid=pid, signal=sig.name)
                    break
                log.warning("kafka.not_stopping", node=self.node_id, pid=pid, signal=sig.name, waited_seconds=wait)
            else:
                raise Failure(f"Kafka node {self.node_id} (pid {pid}) survived SIGKILL")
        self.pid_file.unlink(missing_ok=True)

    def refuse_busy_ports(self) -> None:
        for port in (self.port, self.controller_port):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    raise Failure(f"port {port} is taken by another process: stop it, or set "
                                  "EJX_KAFKA_PORT / EJX_KAFKA_CONTROLLER_PORT to free ports")

    def quorum_state(self) -> dict[str, int]:
        """What this node last recorded of the KRaft quorum: ``leaderId`` (-1 while electing), ``leaderEpoch``."""
        try:
            state = json.loads((self.data_dir / "__cluster_metadata-0" / "quorum-state").read_text())
        except (FileNotFoundError, ValueError):
            return {"leaderId": -1, "leaderEpoch": -1}
        return {"leaderId": int(state.get("leaderId", -1)), "leaderEpoch": int(state.get("leaderEpoch", -1))}

    def log_tail(self, chars: int = 3000) -> str:
        parts = []
        for path in (self.logs_dir / "server.log", self.console_file):
            if path.exists():
                parts.append(f"[node {self.node_id} {path.name}]\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts) or f"(no log under {self.logs_dir})"

    def _java(self) -> list[str]:
        return self._release.java(logs_dir=self.logs_dir, logging_config=self.root / self._release.logging_config_name)

    def _alive(self, pid: int) -> bool:
        """Running, and it is kafka.Kafka with our config, not a recycled pid."""
        if not _running(pid):
            return False
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            return False
        return b"kafka.Kafka" in argv and str(self.config_file).encode() in argv


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (a child of ours that exited is reaped here)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _pom_bytes() -> bytes:
    return resources.files(__package__).joinpath(POM).read_bytes()


def _pom_digest() -> str:
    return hashlib.sha256(_pom_bytes()).hexdigest()
