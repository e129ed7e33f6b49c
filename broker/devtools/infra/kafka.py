"""A single-node Apache Kafka (KRaft, combined mode) of our own, run from Maven Central's jars.

No Docker and no tarball download: Maven fetches ``kafka_2.13`` and its runtime
dependencies once into ``~/.cache/ejx/kafka-<version>/libs`` (shared by every
clone and state dir), and the JDK runs ``kafka.Kafka`` detached, with its data,
config, pid file and logs under ``<state_dir>/kafka``. Small heap and
one-partition internal topics, because the machines have 2 cores.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import structlog

from broker.domain.faults import Failure
from broker.infra import kafka
from broker.settings import Settings

log = structlog.get_logger(__name__)

POM = "kafka-pom.xml"
READY_TIMEOUT = 60.0
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


def server_properties(settings: Settings, *, data_dir: Path) -> dict[str, str]:
    """The broker's configuration: one node that is both broker and KRaft controller on loopback."""
    port, controller_port = settings.kafka_port, settings.kafka_controller_port
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        # One replica is all a single node has.
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
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


def render_properties(properties: dict[str, str]) -> str:
    """Java properties text; values here never need escaping beyond backslashes."""
    lines = ["# Written by ejx (broker/localinfra/kafka.py) at every start; edits are overwritten."]
    lines += [f"{key}={value.replace(chr(92), chr(92) * 2)}" for key, value in properties.items()]
    return "\n".join(lines) + "\n"


def new_cluster_id() -> str:
    """A Kafka cluster id: a random UUID, base64url without padding, not starting with '-'."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


class LocalKafka:
    """Owns ``<state_dir>/kafka``: server.properties, data, logs, pid file."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._major = major_version(settings.kafka_version)
        self.cache_dir = Path.home() / ".cache" / "ejx" / f"kafka-{settings.kafka_version}"
        self.libs_dir = self.cache_dir / "libs"
        self.root = settings.state_dir.resolve() / "kafka"
        self.data_dir = self.root / "data"
        self.logs_dir = self.root / "logs"
        self.config_file = self.root / "server.properties"
        self.pid_file = self.root / "kafka.pid"
        self.version_file = self.root / "kafka.version"
        self.console_file = self.logs_dir / "console.out"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._settings.kafka_port}"

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
            log.info("kafka.fetching_jars", version=self._settings.kafka_version, libs=str(self.libs_dir))
            started = time.monotonic()
            done = subprocess.run(
                [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
                 f"-DoutputDirectory={staging}", "-DincludeScope=runtime",
                 f"-Dkafka.version={self._settings.kafka_version}",
                 f"-Dejx.logging={'reload4j' if self._major == 3 else 'log4j2'}"],
                capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=self.cache_dir)
            jars = sorted(path.name for path in staging.glob("*.jar"))
            if done.returncode != 0 or f"kafka_2.13-{self._settings.kafka_version}.jar" not in jars:
                output = (done.stdout + done.stderr).strip()[-1500:]
                raise Failure(f"Maven could not fetch Kafka {self._settings.kafka_version}: {output}")
            retired = self.cache_dir / "libs.retired"
            shutil.rmtree(retired, ignore_errors=True)
            if self.libs_dir.exists():
                self.libs_dir.rename(retired)
            staging.rename(self.libs_dir)
            shutil.rmtree(retired, ignore_errors=True)
            (self.cache_dir / LIBS_MARKER).write_text("\n".join([_pom_digest(), *jars]) + "\n")
            log.info("kafka.jars_ready", jars=len(jars), seconds=round(time.monotonic() - started, 1))
            return self.libs_dir

    def up(self) -> str:
        """Fetch, format on first use, start unless running, wait until a topic can be created."""
        if self._pid() is not None:
            asyncio.run(kafka.wait_ready(self.address, timeout=READY_TIMEOUT))
            return self.address
        self._refuse_busy_ports()
        libs = self.fetch_jars()
        self._prepare(libs)
        started = time.monotonic()
        pid = self._spawn(libs)
        log.info("kafka.started", pid=pid, bootstrap=self.address, version=self._settings.kafka_version)
        try:
            asyncio.run(self._until_usable(time.monotonic() + READY_TIMEOUT))
        except Failure as failure:
            self._stop(pid)
            self.pid_file.unlink(missing_ok=True)
            raise Failure(f"{failure.description}\n--- broker log ---\n{self._log_tail()}") from failure
        log.info("kafka.ready", pid=pid, bootstrap=self.address, seconds=round(time.monotonic() - started, 1))
        return self.address

    def down(self) -> None:
        """SIGTERM (controlled shutdown), SIGKILL after a timeout; idempotent."""
        pid = self._pid()
        if pid is not None:
            self._stop(pid)
        self.pid_file.unlink(missing_ok=True)

    @property
    def pid(self) -> int | None:
        """Our running broker's pid, or None."""
        return self._pid()

    def kill(self) -> None:
        """SIGKILL the broker's session at once, as a crash would (the chaos suite); ``up`` recovers it."""
        pid = self._pid()
        if pid is None:
            return
        os.killpg(pid, signal.SIGKILL)
        while _running(pid):
            time.sleep(0.02)
        log.warning("kafka.killed", pid=pid)

    def is_up(self) -> bool:
        """Our broker process runs and answers a metadata request."""
        if self._pid() is None:
            return False
        try:
            asyncio.run(kafka.wait_ready(self.address, timeout=5))
        except Failure:
            return False
        return True

    def _prepare(self, libs: Path) -> None:
        """Config and logging files at every start; storage formatted once, with the same jars."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        formatted_with = self.version_file.read_text().strip() if self.version_file.exists() else None
        if formatted_with not in (None, self._settings.kafka_version):
            raise Failure(f"{self.root} holds Kafka {formatted_with} data, settings ask for "
                          f"{self._settings.kafka_version}: delete {self.root} or set EJX_KAFKA_VERSION={formatted_with}")
        self.config_file.write_text(render_properties(server_properties(self._settings, data_dir=self.data_dir)))
        logging_config = self._logging_config()
        logging_config.write_bytes(resources.files(__package__).joinpath(logging_config.name).read_bytes())
        if (self.data_dir / "meta.properties").exists():
            return
        done = subprocess.run(
            [*self._java(libs), "kafka.tools.StorageTool", "format", "-t", new_cluster_id(),
             "-c", str(self.config_file), "--ignore-formatted"],
            capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise Failure(f"formatting Kafka storage failed: {(done.stdout + done.stderr).strip()[-1500:]}")
        self.version_file.write_text(self._settings.kafka_version + "\n")
        log.info("kafka.formatted", data_dir=str(self.data_dir))

    def _spawn(self, libs: Path) -> int:
        with self.console_file.open("ab") as console:
            process = subprocess.Popen(
                [*self._java(libs), "kafka.Kafka", str(self.config_file)],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.root)
        self.pid_file.write_text(f"{process.pid}\n")
        # Popen can return before the child's command line shows kafka.Kafka; until it does,
        # _alive() would take our own broker for a stranger.
        deadline = time.monotonic() + 10
        while not self._alive(process.pid) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return process.pid

    async def _until_usable(self, deadline: float) -> None:
        """Metadata answered, then a probe topic created and deleted; fail fast if the JVM died."""
        probe = self._settings.model_copy(update={"kafka_bootstrap": self.address})
        name = f"ejx.probe.{uuid.uuid4().hex[:12]}"
        last_error: Failure | None = None
        while time.monotonic() < deadline:
            if self._pid() is None:
                raise Failure(f"Kafka exited during start (see {self.logs_dir})")
            try:
                await kafka.wait_ready(self.address, timeout=2)
                await kafka.ensure_topics(probe, [name], partitions=1)
                await kafka.delete_topics(probe, [name])
                return
            except Failure as error:
                last_error = error
                await asyncio.sleep(0.5)
        raise Failure(f"Kafka at {self.address} was not usable within {READY_TIMEOUT:g} s: {last_error}")

    def _java(self, libs: Path) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise Failure("java not found: run `apt-get install -y openjdk-17-jre-headless` "
                          "or set EJX_KAFKA_BOOTSTRAP to an existing Kafka")
        logging_option = ("-Dlog4j.configuration=file:" if self._major == 3 else "-Dlog4j2.configurationFile=")
        return [java, *self._settings.kafka_heap.split(),
                "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:+ExitOnOutOfMemoryError",
                "-Djava.awt.headless=true",
                f"-Dkafka.logs.dir={self.logs_dir}",
                f"{logging_option}{self._logging_config()}",
                "-cp", f"{libs}/*"]

    def _logging_config(self) -> Path:
        return self.root / ("kafka-log4j.properties" if self._major == 3 else "kafka-log4j2.properties")

    def _pid(self) -> int | None:
        """Pid of our running broker: from the pid file, checked against the process's command line."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if self._alive(pid) else None

    def _alive(self, pid: int) -> bool:
        """Running, and it is kafka.Kafka with our config, not a recycled pid."""
        if not _running(pid):
            return False
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            return False
        return b"kafka.Kafka" in argv and str(self.config_file).encode() in argv

    def _stop(self, pid: int) -> None:
        """Signal the broker's whole session (it leads one), escalating to SIGKILL."""
        for sig, patience in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + patience
            while _running(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not _running(pid):
                break
            log.warning("kafka.not_stopping", pid=pid, signal=sig.name, waited_seconds=patience)
        if _running(pid):
            raise Failure(f"Kafka (pid {pid}) survived SIGKILL")
        log.info("kafka.stopped", pid=pid)

    def _refuse_busy_ports(self) -> None:
        for port in (self._settings.kafka_port, self._settings.kafka_controller_port):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    raise Failure(f"port {port} is taken by another process: stop it, or set "
                                  "EJX_KAFKA_PORT / EJX_KAFKA_CONTROLLER_PORT to free ports")

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

    def _log_tail(self, chars: int = 3000) -> str:
        parts = []
        for path in (self.logs_dir / "server.log", self.console_file):
            if path.exists():
                parts.append(f"[{path.name}]\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts) or f"(no log under {self.logs_dir})"


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
