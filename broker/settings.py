"""The one reader of the environment: every option is an ``EJX_*`` variable."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from broker.domain.faults import InvalidContent
from broker.domain.mnemonics import mnemonic

DAY_S = 86_400.0
RETENTION_MINIMUMS_S = {"outbox_retention_s": 3600.0, "inbox_retention_s": 8 * DAY_S,
                        "message_origin_retention_s": 8 * DAY_S, "ingest_key_retention_s": DAY_S,
                        "ingest_record_retention_s": 30 * DAY_S}
"""Shortest retentions production accepts: the inbox and the origins outlive a 7-day topic; a day of vendor retries;
a month of grade corrections."""

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
"""Levels EJX_LOG_LEVEL may name (any case; ``warn`` too)."""

_KAFKA_ADDRESS = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s:\[\],]+)(:\d{1,5})?")
"""One bootstrap server as Kafka clients read it: host, host:port, [IPv6] or [IPv6]:port."""

BROKERS_FILE = "brokers"
"""Under ``<state_dir>/kafka``: how many nodes the local Kafka was set up with."""


class Settings(BaseSettings):
    """Frozen configuration, built once per process by the bootstrap or the CLI."""

    model_config = SettingsConfigDict(env_prefix="EJX_", frozen=True, extra="ignore")

    state_dir: Path = Field(default=Path(".ejx"), description="Where local infra, keys and logs live.")
    kafka_bootstrap: str | None = Field(default=None, description="Existing Kafka; when set nothing is started.")
    database_url: str | None = Field(default=None, description="Existing PostgreSQL DSN; when set nothing is started.")

    kafka_version: str = Field(default="4.3.1", description="Apache Kafka release run locally.")
    kafka_brokers: int = Field(default=1, ge=1, description=(
        "Nodes of the local Kafka; `ejx infra up --brokers N` records N under the state dir for later commands."))
    kafka_port: int = Field(default=19092, description="Local broker's PLAINTEXT port; node i listens on it + 2i.")
    kafka_controller_port: int = Field(default=19093, description=(
        "Local broker's KRaft controller port; node i listens on it + 2i."))
    kafka_heap: str = Field(default="-Xms256m -Xmx512m", description="JVM heap flags of the local broker.")
    postgres_port: int = Field(default=15432, description="Local PostgreSQL port.")

    events_topic: str = Field(default="ejx.events.v1", description="Canonical events, key = school_id.")
    dlq_topic: str = Field(default="ejx.events.dlq.v1", description="Rejected events with fault headers.")
    interagency_topic: str = Field(default="ejx.outbound.interagency.v1", description="Signed envelopes, key = recipient.")
    topic_partitions: int = Field(default=3, description="Partitions of topics ejx creates.")
    topic_replication_factor: int | None = Field(default=None, ge=1, description=(
        "Replication factor of topics ejx creates; default: the Kafka's brokers, at most 3."))
    topic_min_insync_replicas: int | None = Field(default=None, ge=1, description=(
        "min.insync.replicas of topics ejx creates: acks=all sends fail below it; default: one less than RF."))
    instance_id: str | None = Field(default=None, description=(
        "Stable name of this process; fixes Kafka transactional ids so a restart fences its predecessor."))
    db_pool_size: int = Field(default=20, description="PostgreSQL connections per process.")
    db_connect_timeout_s: float = Field(default=10.0, gt=0, description="Seconds to open one PostgreSQL connection.")
    db_statement_timeout_s: float = Field(default=20.0, gt=0, description=(
        "Server-side limit of one statement (PostgreSQL statement_timeout) on the components' pools."))
    db_command_timeout_s: float = Field(default=30.0, gt=0, description=(
        "Client-side limit of one database call; above the statement timeout, so it fires only when the "
        "server cannot answer at all (frozen, or a dead connection)."))
    db_idle_in_transaction_timeout_s: float = Field(default=60.0, gt=0, description=(
        "PostgreSQL ends a session idle this long inside a transaction (a client that hung mid-transaction)."))
    db_maintenance_timeout_s: float = Field(default=3600.0, gt=0, description=(
        "Statement limit of long but legitimate work: migrations, message-log archives and pruning."))
    kafka_timeout_s: float = Field(default=30.0, gt=0, description=(
        "Longest wait for Kafka: a request, a send's acknowledgement, a client's start or stop."))
    startup_fail_fast: bool = Field(default=False, description=(
        "Exit at once when PostgreSQL or Kafka is down at start, instead of waiting with backoff."))
    startup_retry_cap_s: float = Field(default=30.0, gt=0, description="Longest pause between start-up tries.")
    relay_lease_s: float = Field(default=60.0, gt=0, description=(
        "How long the relay (served or `ejx relay`) reserves a claimed outbox row; above the portal's and the "
        "database's timeouts."))
    shutdown_grace_s: float = Field(default=15.0, gt=0, description=(
        "On SIGTERM, seconds the components get to finish their batch; then they are cancelled."))
    outbox_retention_s: float = Field(default=7 * DAY_S, gt=0, description=(
        "Delivered outbox rows and acknowledged SMEV queue envelopes are deleted after this."))
    inbox_retention_s: float = Field(default=30 * DAY_S, gt=0, description=(
        "Consumers' dedup keys are forgotten after this: keep it above the events topic's retention "
        "(Kafka's default: 7 days) and the longest `ejx replay` window, or a re-read event is processed again."))
    ingest_key_retention_s: float = Field(default=7 * DAY_S, gt=0, description=(
        "The ingest dedup window for versions between a record's first and latest: a vendor's retry of one "
        "later than this is a new event (a record's first and latest versions stay for "
        "EJX_INGEST_RECORD_RETENTION_S)."))
    ingest_record_retention_s: float = Field(default=400 * DAY_S, gt=0, description=(
        "A source record's first and latest versions: the OneRoster mapping looks the first up to tell a "
        "correction from a first posting, and full syncs resend the latest; as long as a grade may still be "
        "corrected; at least the ingest dedup window."))
    message_origin_retention_s: float = Field(default=30 * DAY_S, gt=0, description=(
        "First MessageIDs of routed events, named by `ejx replay --redeliver`; at least the inbox's retention."))
    retention_sweep_every_s: float = Field(default=300.0, gt=0, description="Pause between retention sweeps.")
    retention_minimums: bool = Field(default=True, description=(
        "Refuse retentions below the safe minimums; only soaks (`ejx chaos`) turn this off."))
    routing_file: Path | None = Field(default=None, description="Routing rules (TOML); default: the packaged ones.")
    silent_after_days: int = Field(default=3, description="A school with no event for this long is silent.")
    timely_within_days: int = Field(default=1, description="A grade recorded this soon after its lesson is timely.")

    http_host: str = Field(default="127.0.0.1", description="Address the HTTP server binds.")
    http_port: int = Field(default=8080, description="Port the HTTP server binds.")
    http_reuse_port: bool = Field(default=False, description=(
        "Let several `ejx serve` processes listen on one port (SO_REUSEPORT: the kernel spreads new "
        "connections over them), e.g. ingest on every core; off, a second server on the port fails to start."))
    portal_url: str | None = Field(default=None, description="Where the relay POSTs envelopes for the portal.")
    portal_batch_url: str | None = Field(default=None, description=(
        "The portal's batch endpoint (reference receiver: /envelopes/batch): the relay POSTs several envelopes "
        "at once there, each with its own receipt. Unset: one envelope per POST to portal_url."))
    interagency_max_batch: int = Field(default=100, ge=1, description=(
        "Outbox rows the relay hands the SMEV 3 queue at once: signed in one call, enqueued in one transaction "
        "with one message-log append. 1: one row at a time."))
    http_header_timeout_s: float = Field(default=10.0, description="Seconds to complete a request's headers.")
    http_body_timeout_s: float = Field(default=30.0, description="Seconds for a whole request body to arrive.")
    http_body_idle_s: float = Field(default=8.0, description="Longest pause within a request body, in seconds.")
    http_max_connections: int = Field(default=2000, description="Open connections; more are refused (503).")
    http_max_connections_per_client: int = Field(default=256, description="Open connections per address (429).")
    http_max_requests_per_client: int = Field(default=32, description="Requests in flight per address (429).")
    http_bad_tokens_per_minute: int = Field(default=20, description="Bad tokens per address and minute before 429.")
    http_grace_s: int = Field(default=10, description="On SIGTERM, seconds requests in flight get to finish.")
    parse_deadline_s: float = Field(default=15.0, description="Seconds a request's parsing and validation may take.")
    analytics_min_group: int = Field(default=5, ge=1, description=(
        "Fewest distinct pupils a cell of grade statistics needs to be shown (1 turns suppression off)."))

    sender: str = Field(default="EJX", description="Our mnemonic in envelope headers.")
    key_file: Path | None = Field(default=None, description="Signing key (PEM); default <state_dir>/keys/ejx.key.")
    cert_file: Path | None = Field(default=None, description="Signing certificate (PEM); default <state_dir>/keys/ejx.crt.")
    trust_file: Path | None = Field(default=None, description="Trusted certificates (PEM bundle) for verification.")
    smev_key_file: Path | None = Field(default=None, description=(
        "Key (PEM) signing SMEV 3 messages, GOST R 34.10-2012 for real SMEV (`ejx keys init --algorithm gost2012-256 --dir <state_dir>/keys/smev`); default <state_dir>/keys/smev/ejx.key."))
    smev_cert_file: Path | None = Field(default=None, description=(
        "Certificate (PEM) of the SMEV 3 key, what agencies verify; default <state_dir>/keys/smev/ejx.crt."))
    smev_visibility_timeout_s: float = Field(default=60.0, gt=0, description=(
        "A message handed out by GetRequest and not acknowledged within this is handed out again."))
    smev_max_body_bytes: int = Field(default=1_048_576, gt=0, description="Longest SOAP request read.")
    diary_service: str = Field(default="diary", description=(
        "The participants' registration (`ejx participants add … --service diary`) that may request e-diaries."))

    log_level: str = Field(default="info", description="Minimum level of structured logs.")

    @model_validator(mode="before")
    @classmethod
    def _recorded_brokers(cls, data: Any) -> Any:
        """The local Kafka's node count, unless given: as `ejx infra up --brokers N` recorded it."""
        if not isinstance(data, dict) or "kafka_brokers" in data or data.get("kafka_bootstrap"):
            return data
        recorded = Path(data.get("state_dir") or ".ejx") / "kafka" / BROKERS_FILE
        if recorded.is_file():
            data = {**data, "kafka_brokers": recorded.read_text().strip()}
        return data

    @field_validator("sender")
    @classmethod
    def _sender_is_a_mnemonic(cls, value: str) -> str:
        """Every envelope carries it as Sender: one the schema refuses sent every event to the DLQ."""
        try:
            return mnemonic(value)
        except InvalidContent as refused:  # pydantic reports a ValueError under the variable's name
            raise ValueError(refused.description) from None

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        """Checked here: structlog refused an unknown level with a traceback from whichever command ran first."""
        level = value.strip().lower()
        level = "warning" if level == "warn" else level
        if level not in LOG_LEVELS:
            raise ValueError(f"{value!r} is not a log level ({', '.join(LOG_LEVELS)})")
        return level

    @field_validator("database_url")
    @classmethod
    def _postgresql_url(cls, value: str | None) -> str | None:
        """A DSN asyncpg cannot parse was a traceback at the first connection; the password is never echoed."""
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError("not a postgresql:// URL (postgresql://user:password@host:5432/database)")
        for host in parts.netloc.rpartition("@")[2].split(","):  # asyncpg takes several hosts, each with a port
            _, colon, port = host.rpartition("]")[2].partition(":")
            if colon and not port.isdigit():
                raise ValueError(f"port {port!r} is not a number")
        return value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _kafka_addresses(cls, value: str | None) -> str | None:
        """A server aiokafka cannot parse was a traceback at the first client's start, not a named setting."""
        for server in (value.split(",") if value else ()):
            server = server.strip()
            if _KAFKA_ADDRESS.fullmatch(server) is None and not _ipv6(server):
                raise ValueError(f"{server!r} is not host:port (e.g. kafka1:9092,kafka2:9092)")
        return value

    @model_validator(mode="after")
    def _safe_retention(self) -> Settings:
        """A dedup key forgotten while its duplicate can still arrive would let the duplicate through."""
        for longer, shorter in (("message_origin_retention_s", "inbox_retention_s"),
                                ("ingest_record_retention_s", "ingest_key_retention_s")):
            if getattr(self, longer) < getattr(self, shorter):
                raise ValueError(f"{longer} must be at least {shorter}")
        if self.retention_minimums:
            short = {name: floor for name, floor in RETENTION_MINIMUMS_S.items() if getattr(self, name) < floor}
            if short:
                raise ValueError(f"retention below the safe minimum (seconds): {short}; "
                                 "EJX_RETENTION_MINIMUMS=false is for soaks only")
        return self

    @property
    def kafka_address(self) -> str:
        """Bootstrap servers: the configured ones, else every node of the local Kafka."""
        return self.kafka_bootstrap or ",".join(f"127.0.0.1:{port}" for port in self.local_kafka_ports)

    @property
    def local_kafka_ports(self) -> list[int]:
        """The PLAINTEXT port of each local node, node 0 first."""
        return [self.kafka_port + 2 * node for node in range(self.kafka_brokers)]

    @property
    def replication_factor(self) -> int:
        """Replicas of each partition of the topics ejx creates."""
        return self.topic_replication_factor or min(self.kafka_brokers, 3)

    @property
    def min_insync_replicas(self) -> int:
        """Replicas that must have a record before acks=all acknowledges it: a majority of three, one of one."""
        return self.topic_min_insync_replicas or max(1, self.replication_factor - 1)

    @property
    def database_dsn(self) -> str:
        """The configured DSN, else the local cluster's."""
        return self.database_url or f"postgresql://ejx@127.0.0.1:{self.postgres_port}/ejx"

    @property
    def keys_dir(self) -> Path:
        return self.state_dir / "keys"

    @property
    def signing_key_file(self) -> Path:
        return self.key_file or self.keys_dir / "ejx.key"

    @property
    def signing_cert_file(self) -> Path:
        return self.cert_file or self.keys_dir / "ejx.crt"

    @property
    def smev_signing_key_file(self) -> Path:
        return self.smev_key_file or self.keys_dir / "smev" / "ejx.key"

    @property
    def smev_signing_cert_file(self) -> Path:
        return self.smev_cert_file or self.keys_dir / "smev" / "ejx.crt"

    @property
    def trusted_certs_file(self) -> Path:
        return self.trust_file or self.signing_cert_file


def _ipv6(server: str) -> bool:
    """A bare IPv6 literal (no port), which Kafka clients take as it is."""
    try:
        return ipaddress.ip_address(server).version == 6
    except ValueError:
        return False
