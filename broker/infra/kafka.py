"""Kafka I/O: every producer, consumer and admin call of ejx is built here, from Settings.

The delivery guarantees of DESIGN.md are fixed in one place rather than at each
call site: producers are idempotent with acks=all, consumers never auto-commit
and read only committed transactions. Unreachable brokers surface as a
retriable :class:`~broker.domain.faults.Failure` so callers decide with the same rule
as for any other dependency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
    for_code,
)

from broker.domain.faults import Failure
from broker.settings import Settings

log = structlog.get_logger(__name__)

# Options a caller may not override: they are the guarantees this module exists for.
_FIXED_CONSUMER_OPTIONS = frozenset({"bootstrap_servers", "enable_auto_commit", "group_id"})

Client = TypeVar("Client", AIOKafkaProducer, AIOKafkaConsumer)


def producer(settings: Settings, *, transactional_id: str | None = None) -> AIOKafkaProducer:
    """An idempotent producer (acks=all); transactional when ``transactional_id`` is given.

    Not started: use ``async with running(producer(...)) as p``. Must be called
    inside the running event loop.
    """
    if transactional_id is not None and not transactional_id.strip():
        raise ValueError("transactional_id must be a non-empty string or None")
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_address,
        enable_idempotence=True,
        acks="all",
        transactional_id=transactional_id,
        # Bounds every send's wait for its acknowledgement (and so flush()): Kafka down is a timeout, not a hang.
        request_timeout_ms=int(settings.kafka_timeout_s * 1000),
        # A few ms of batching multiplies throughput of per-record sends; latency stays low.
        linger_ms=5,
        max_batch_size=64 * 1024,
    )


def consumer(settings: Settings, *topics: str, group_id: str | None, **overrides: object) -> AIOKafkaConsumer:
    """A consumer that commits only when told to and never sees aborted transactions.

    ``group_id=None`` is for ``assign()``-based readers (replay, inspection), which
    cannot commit. ``overrides`` are further aiokafka options, e.g. ``max_poll_records``.
    """
    if group_id is not None and not group_id.strip():
        raise ValueError("group_id must be a non-empty string or None")
    fixed = _FIXED_CONSUMER_OPTIONS & overrides.keys()
    if fixed:
        raise ValueError(f"options fixed by broker.infra.kafka cannot be overridden: {sorted(fixed)}")
    options: dict[str, object] = {"auto_offset_reset": "earliest", "isolation_level": "read_committed",
                                  "request_timeout_ms": int(settings.kafka_timeout_s * 1000), **overrides}
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_address,
        group_id=group_id,
        enable_auto_commit=False,
        **options,
    )


CLIENT_TIMEOUT_S = 30.0
"""Default bound on a client's start and stop (``Settings.kafka_timeout_s`` where settings are at hand)."""


@asynccontextmanager
async def running(client: Client, *, timeout_s: float = CLIENT_TIMEOUT_S) -> AsyncIterator[Client]:
    """Start a producer or consumer, stop it on exit, each within ``timeout_s``; an unreachable
    cluster is a Failure."""
    try:
        await asyncio.wait_for(client.start(), timeout_s)
    except (KafkaError, asyncio.TimeoutError) as error:
        await _stop(client, timeout_s)
        if not is_transient(error):
            raise
        raise Failure(f"Kafka is unreachable: {error!r}") from error
    try:
        yield client
    finally:
        await _stop(client, timeout_s)


async def _stop(client: Client, timeout_s: float) -> None:
    """Stop, but never wait longer than ``timeout_s``: a stop that hangs (an unreachable cluster,
    an aiokafka corner case) must not keep a process from exiting."""
    try:
        await asyncio.wait_for(client.stop(), timeout_s)
    except asyncio.TimeoutError:
        log.warning("kafka.stop_timed_out", client=type(client).__name__, timeout_s=timeout_s)


@asynccontextmanager
async def _admin(bootstrap: str, *, request_timeout_ms: int = 30_000) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=request_timeout_ms)
    try:
        await admin.start()
        yield admin
    except (KafkaError, asyncio.TimeoutError) as error:
        if not is_transient(error):
            raise
        raise Failure(f"Kafka at {bootstrap} is unreachable: {error!r}") from error
    finally:
        await admin.close()


def is_transient(error: Exception) -> bool:
    """Connection trouble and timeouts: worth another try later, unlike a refused request."""
    return isinstance(error, (KafkaTimeoutError, asyncio.TimeoutError)) or getattr(error, "retriable", False)


@contextmanager
def outage_as_failure(action: str) -> Iterator[None]:
    """Turn a transient Kafka error (or timeout) inside the block into a retriable :class:`Failure`;
    a refusal stays aiokafka's own error, for the caller to stop on."""
    try:
        yield
    except (KafkaError, asyncio.TimeoutError) as error:
        if not is_transient(error):
            raise
        raise Failure(f"Kafka {action} failed: {error!r}") from error


async def ensure_topics(
    settings: Settings,
    names: Iterable[str],
    *,
    partitions: int | None = None,
    replication_factor: int | None = None,
) -> None:
    """Create the topics that do not exist yet; existing ones are left exactly as they are.

    Each gets ``min.insync.replicas`` of its own, so acks=all means "on a majority of the replicas"
    whatever the broker's default, and unclean leader election stays off: a lagging replica never
    becomes leader and drops acknowledged records."""
    names = list(names)
    count = settings.topic_partitions if partitions is None else partitions
    replication_factor = replication_factor or settings.replication_factor
    if count < 1 or replication_factor < 1:
        raise ValueError("partitions and replication_factor must be at least 1")
    if not names:
        return
    min_insync = min(settings.min_insync_replicas, replication_factor)
    configs = {"min.insync.replicas": str(min_insync), "unclean.leader.election.enable": "false"}
    async with _admin(settings.kafka_address) as admin:
        response = await admin.create_topics([NewTopic(name, count, replication_factor, topic_configs=configs)
                                              for name in names])
    for name, code, *message in response.topic_errors:
        if code == 0:
            log.info("kafka.topic_created", topic=name, partitions=count, replication_factor=replication_factor,
                     min_insync_replicas=min_insync)
        elif for_code(code) is not TopicAlreadyExistsError:
            _raise_for(code, f"creating topic {name}", message[0] if message else None)


async def topic_exists(settings: Settings, topic: str) -> bool:
    """Asked before subscribing: a consumer subscribed to a missing topic waits at start for it to be created,
    until the start times out and a mistyped or not yet created topic reads as "Kafka is unreachable"."""
    probe = consumer(settings, group_id=None)
    async with running(probe):
        return topic in await probe.topics()


async def delete_topics(settings: Settings, names: Iterable[str]) -> None:
    """Delete topics; ones already gone are not an error (tests and readiness probes clean up with it)."""
    names = list(names)
    if not names:
        return
    async with _admin(settings.kafka_address) as admin:
        response = await admin.delete_topics(names)
    for name, code in response.topic_error_codes:
        if code != 0 and for_code(code) is not UnknownTopicOrPartitionError:
            _raise_for(code, f"deleting topic {name}", None)


DESCRIBE_TRIES = 12
"""Each try asks one broker at random: with one of three dead, twelve all failing is one chance in half a million."""


@dataclass(frozen=True)
class PartitionState:
    """Who holds one partition, as the cluster's metadata says now."""

    leader: int
    """Node id of the leader; -1 while none is elected."""
    replicas: tuple[int, ...]
    in_sync: tuple[int, ...]
    """Replicas caught up with the leader: an acks=all send needs min.insync.replicas of them."""


async def describe_topic(settings: Settings, topic: str) -> dict[int, PartitionState]:
    """Each partition of ``topic`` with its leader and replicas; Failure if the topic is unknown.

    Metadata names a crashed broker until the controller fences it, and the admin client asks a random
    one: a few tries, so one dead node of three is no outage of this question. A retriable answer is
    tried again too: a topic created a moment ago is unknown to a broker its metadata has not reached."""
    for attempt in range(1, DESCRIBE_TRIES + 1):
        try:
            async with _admin(settings.kafka_address,
                              request_timeout_ms=int(settings.kafka_timeout_s * 1000)) as admin:
                (described,) = await admin.describe_topics([topic])
            if described["error_code"] != 0:
                _raise_for(described["error_code"], f"describing topic {topic}", None)
            break
        except Failure:
            if attempt == DESCRIBE_TRIES:
                raise
            await asyncio.sleep(min(0.1 * attempt, 0.5))
    return {found["partition"]: PartitionState(found["leader"], tuple(found["replicas"]), tuple(found["isr"]))
            for found in described["partitions"]}


def _raise_for(code: int, action: str, message: str | None) -> None:
    """A retriable broker error becomes a Failure; a refusal stays aiokafka's own error class."""
    error = for_code(code)
    detail = f"{action} failed: {message or error.__name__}"
    if error.retriable:
        raise Failure(detail)
    raise error(detail)


async def wait_ready(bootstrap: str, *, timeout: float) -> None:
    """Return once the cluster answers a metadata request; Failure after ``timeout`` seconds."""
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Failure(f"Kafka at {bootstrap} did not answer within {timeout:g} s: {last_error!r}")
        try:
            async with asyncio.timeout(remaining):
                # A closed port is the common case while a broker starts: ask the socket, not
                # aiokafka, which would log an error for each refused attempt.
                await _any_port_open(bootstrap)
                async with _admin(bootstrap, request_timeout_ms=max(1000, int(remaining * 1000))) as admin:
                    await admin.describe_cluster()
            return
        except (Failure, KafkaError, OSError, TimeoutError) as error:
            last_error = error
        await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


async def _any_port_open(bootstrap: str) -> None:
    """Return if one bootstrap server accepts a TCP connection; raise OSError otherwise."""
    last_error: OSError = OSError(f"no server in {bootstrap!r}")
    for server in filter(None, (part.strip() for part in bootstrap.split(","))):
        host, _, port = server.rpartition(":")
        try:
            _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except OSError as error:
            last_error = error
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise last_error


def encode_headers(headers: Mapping[str, str]) -> list[tuple[str, bytes]]:
    """String headers in the form aiokafka sends (UTF-8 values)."""
    return [(key, value.encode()) for key, value in headers.items()]


def decode_headers(headers: Iterable[tuple[str, bytes | None]]) -> dict[str, str]:
    """Headers of a consumed record as strings; for a repeated key the last value wins. Bytes that are not
    UTF-8 are replaced: any producer may set headers, and one that raised here stopped the consumer."""
    return {key: (value or b"").decode(errors="replace") for key, value in headers}


Batches = Mapping[TopicPartition, list[ConsumerRecord]]
"""Records of one poll, by partition, in offset order."""


def rewind(consumer: AIOKafkaConsumer, batches: Batches) -> None:
    """Back to the batch's first records, so a retry reads them again; a partition that moved to
    another member meanwhile is re-read there, from its last commit."""
    assigned = consumer.assignment()
    for tp, records in batches.items():
        if records and tp in assigned:
            consumer.seek(tp, records[0].offset)


async def commit_processed(consumer: AIOKafkaConsumer, batches: Batches, *,
                           timeout_s: float = CLIENT_TIMEOUT_S) -> bool:
    """Commit past the processed records of the partitions still ours; False if a rebalance took
    them first. Call only after the records are durable: the new owner re-reads from the last
    commit and the inbox turns what was done into skips, so nothing is lost or doubled.
    A commit unanswered within ``timeout_s`` raises TimeoutError (an outage, like a lost coordinator)."""
    assigned = consumer.assignment()
    offsets = {tp: records[-1].offset + 1 for tp, records in batches.items() if records and tp in assigned}
    try:
        if offsets:
            await asyncio.wait_for(consumer.commit(offsets), timeout_s)
    except (CommitFailedError, IllegalStateError) as error:
        log.warning("kafka.commit_lost_to_rebalance", error=repr(error))
        return False
    return len(offsets) == sum(1 for records in batches.values() if records)
