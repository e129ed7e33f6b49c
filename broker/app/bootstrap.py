"""All wiring: one place builds every component from one Settings object, inside the running loop.

``ejx serve`` runs any subset of the components in one process (one component
per process gives the separate-process shape); every CLI command builds what it
needs with the same functions (:func:`router`, :func:`destinations`,
:func:`ingest_service`, …), so a command and a served component can never be
wired differently. On stop (SIGTERM/SIGINT, installed by :func:`stop_on_signals`)
each loop finishes its batch in flight, commits and closes; the HTTP server stops
taking requests first. A component that has not finished within
``shutdown_grace_s`` (PostgreSQL frozen under its last commit) is cancelled and
its connections dropped: the outbox leases and the inbox make that safe. Kafka or
PostgreSQL gone while the clients start is waited out like a dependency down at
start (unless ``--fail-fast``), not an exit.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path

import asyncpg
import structlog
import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from adapters.ingest import IngestService, ParseOptions
from adapters.ledger import IngestLedger
from adapters.publisher import KafkaPublisher, PublisherOptions
from adapters.rest import ingest_router
from broker.access.credentials import Credentials
from broker.access.gate import Gate, GateOptions
from broker.access.participants import Participants
from broker.access.registry import Registry
from broker.analytics.api import MonitoringOptions, monitoring_router
from broker.analytics.dashboard import dashboard_router
from broker.analytics.projections.school_activity import ActivityOptions
from broker.app.startup import until_started, wait_for_dependencies
from broker.delivery.destinations import (
    Destination,
    InteragencyDestination,
    PortalDestination,
)
from broker.delivery.relay import Relay, RelayOptions
from broker.delivery.retention import RetentionOptions
from broker.domain.faults import Failure
from broker.domain.routing import RoutingTable
from broker.infra import kafka
from broker.infra.http_guard import (
    ConnectionGuard,
    GuardOptions,
    SlowClientMiddleware,
    accept_error_handler,
)
from broker.infra.http_server import install_fault_answers
from broker.infra.postgres import close_pool, connected, create_pool
from broker.ops.metrics import health_router, kafka_probe, postgres_probe
from broker.settings import Settings
from broker.smev3.diary import DiaryOptions, DiaryService
from broker.smev3.exchange import ExchangeOptions, MessageExchange
from broker.smev3.outgoing import RequestMessages, SenderIdentity
from broker.smev3.queue import QueueOptions, SmevQueue
from broker.smev3.service import smev3_router, soap_refusals
from broker.xml.schemas import Schemas
from broker.xml.signing import SigningKey, XmlDsigSigner
from consumers.analytics import AnalyticsConsumer
from consumers.router import Router, RouterOptions

log = structlog.get_logger(__name__)

COMPONENTS = ("ingest", "router", "relay", "analytics", "smev", "dashboard")
"""Everything ``ejx serve`` can run; all of them by default."""
HTTP_COMPONENTS = frozenset({"ingest", "smev", "dashboard"})
POOL_CLOSE_S = 2.0
"""An idle pool closes in milliseconds; one that takes longer is on a server that no longer answers."""
CANCEL_WAIT_S = 1.0
"""After the grace period, how long cancelled components get to unwind before their pool is dropped,
and at the very end how long tasks still running get before they are abandoned."""


def parse_components(text: str | None) -> tuple[str, ...]:
    """``"ingest,relay"`` → ("ingest", "relay"); unknown names are refused at once."""
    if not text:
        return COMPONENTS
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [name for name in names if name not in COMPONENTS]
    if unknown:
        raise ValueError(f"unknown component(s) {', '.join(unknown)}; choose from {', '.join(COMPONENTS)}")
    return names


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop``: in-flight work finishes, then everything closes."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread: the caller owns ``stop``
            return


def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(stop)`` in a new event loop, with SIGTERM/SIGINT setting ``stop`` (CLI commands)."""
    async def runner() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await main(stop)
    asyncio.run(runner())


def signer(settings: Settings) -> XmlDsigSigner:
    """ejx's signer, from the configured key and certificate."""
    return XmlDsigSigner.from_pem_files(settings.signing_key_file, settings.signing_cert_file)


def smev_queue(settings: Settings, pool: asyncpg.Pool) -> SmevQueue:
    """The SMEV 3 queues, with the configured visibility timeout."""
    return SmevQueue(pool, options=QueueOptions(visibility_timeout_s=settings.smev_visibility_timeout_s))


def smev_key(settings: Settings) -> SigningKey:
    """ejx's SMEV key: signs what agencies pull and what e-diary requesters get."""
    return SigningKey.from_pem_files(settings.smev_signing_key_file, settings.smev_signing_cert_file)


def request_messages(settings: Settings) -> RequestMessages:
    """What signs the RequestMessages agencies pull: ejx's SMEV key (its algorithm is the key's)."""
    return RequestMessages(smev_key(settings), sender=SenderIdentity(mnemonic=settings.sender))


def message_exchange(settings: Settings, *, pool: asyncpg.Pool, schemas: Schemas) -> MessageExchange:
    """The SMEV 3 operations, the e-diary service among them."""
    diary = DiaryService(pool=pool, schemas=schemas, key=smev_key(settings),
                         sender=SenderIdentity(mnemonic=settings.sender),
                         options=DiaryOptions(service=settings.diary_service))
    return MessageExchange(queue=smev_queue(settings, pool), participants=Participants(pool), diary=diary,
                           options=ExchangeOptions(max_body_bytes=settings.smev_max_body_bytes))


def router(settings: Settings, *, pool: asyncpg.Pool, producer: AIOKafkaProducer, schemas: Schemas,
           routing_file: Path | None = None, options: RouterOptions = RouterOptions()) -> Router:
    """The router: events → signed envelopes in the outbox (served, and used by ``ejx replay``)."""
    return Router(settings, pool=pool, producer=producer, signer=signer(settings), schemas=schemas,
                  routing=RoutingTable.load(routing_file or settings.routing_file), options=options)


@asynccontextmanager
async def destinations(settings: Settings, *, pool: asyncpg.Pool, producer: AIOKafkaProducer
                       ) -> AsyncIterator[dict[str, Destination]]:
    """Where the relay delivers, by outbox destination; closed on exit."""
    found: dict[str, Destination] = {"interagency": InteragencyDestination(
        producer=producer, topic=settings.interagency_topic, queue=smev_queue(settings, pool),
        messages=request_messages(settings), max_batch=settings.interagency_max_batch)}
    if settings.portal_url:
        found["portal"] = PortalDestination(settings.portal_url, batch_url=settings.portal_batch_url)
    else:
        log.warning("relay.portal_disabled", reason="EJX_PORTAL_URL is not set; portal rows stay pending")
    try:
        yield found
    finally:
        for destination in found.values():
            await destination.close()


@asynccontextmanager
async def ingest_service(settings: Settings, *, pool: asyncpg.Pool | None = None, schemas: Schemas | None = None,
                         publisher_options: PublisherOptions | None = None) -> AsyncIterator[IngestService]:
    """The ingest service over Kafka and PostgreSQL (REST, CSV and OneRoster imports); closed on exit.

    Its transactional ids are random unless ``publisher_options`` fix them: only the served ingest takes the
    instance's stable ones (:func:`served_publisher`). An import on the same host with those ids would fence
    the live server's producers, and the server's next request would fence the import in turn.
    """
    async with AsyncExitStack() as stack:
        await kafka.ensure_topics(settings, [settings.events_topic])
        if pool is None:
            pool = await stack.enter_async_context(connected(settings, max_size=4))
        publisher = KafkaPublisher(settings, options=publisher_options or PublisherOptions())
        stack.push_async_callback(publisher.stop)
        service = IngestService(registry=Registry(pool), ledger=IngestLedger(pool), sink=publisher,
                                schemas=schemas or Schemas.load(),
                                parsing=ParseOptions(deadline_s=settings.parse_deadline_s))
        stack.callback(service.close)
        yield service


def served_publisher(settings: Settings) -> PublisherOptions:
    """The served ingest's producers: transactional ids fixed by EJX_INSTANCE_ID when it is set, so a restarted
    instance fences its predecessor and aborts what it left open."""
    prefix = f"ejx-ingest-{settings.instance_id}" if settings.instance_id else None
    return PublisherOptions(transactional_id_prefix=prefix)


@dataclass
class Runtime:
    """The shared resources of one process; built by :func:`runtime`, closed with it."""

    settings: Settings
    pool: asyncpg.Pool
    schemas: Schemas
    producer: AIOKafkaProducer
    loops: list = field(default_factory=list)
    """Objects with ``async run(stop)``: consumers and the relay."""
    app: FastAPI | None = None


@asynccontextmanager
async def runtime(settings: Settings, components: Iterable[str]) -> AsyncIterator[Runtime]:
    """Connect once, build the chosen components, close everything on exit (in reverse order)."""
    wanted = set(components)
    async with AsyncExitStack() as stack:
        await kafka.ensure_topics(settings, [settings.events_topic, settings.dlq_topic, settings.interagency_topic])
        pool = await create_pool(settings, max_size=settings.db_pool_size)
        stack.push_async_callback(close_pool, pool, timeout=POOL_CLOSE_S)
        producer = await stack.enter_async_context(kafka.running(kafka.producer(settings),
                                                                 timeout_s=settings.kafka_timeout_s))
        built = Runtime(settings=settings, pool=pool, schemas=Schemas.load(), producer=producer)
        if "router" in wanted:
            built.loops.append(router(settings, pool=pool, producer=producer, schemas=built.schemas))
        if "relay" in wanted:
            found = await stack.enter_async_context(destinations(settings, pool=pool, producer=producer))
            built.loops.append(relay(pool, found, options=relay_options(settings)))
        if "analytics" in wanted:
            built.loops.append(AnalyticsConsumer(settings=settings, pool=pool, schemas=built.schemas))
        if wanted & HTTP_COMPONENTS:
            built.app = await http_app(settings, built, wanted, stack)
        yield built


def retention(settings: Settings) -> RetentionOptions:
    """What the relay's retention sweep keeps, from settings."""
    return RetentionOptions(outbox=timedelta(seconds=settings.outbox_retention_s),
                            inbox=timedelta(seconds=settings.inbox_retention_s),
                            ingest_keys=timedelta(seconds=settings.ingest_key_retention_s),
                            ingest_records=timedelta(seconds=settings.ingest_record_retention_s),
                            message_origin=timedelta(seconds=settings.message_origin_retention_s),
                            every_s=settings.retention_sweep_every_s)


def relay_options(settings: Settings, *, batch_size: int = RelayOptions.batch_size,
                  max_attempts: int = RelayOptions.max_attempts) -> RelayOptions:
    """The relay's lease and retention sweep from settings, for ``ejx serve`` and ``ejx relay`` alike
    (``ejx relay`` also sets its batch size and attempts)."""
    return RelayOptions(batch_size=batch_size, max_attempts=max_attempts, lease_s=settings.relay_lease_s,
                        retention=retention(settings))


def relay(pool: asyncpg.Pool, found: dict[str, Destination], *, options: RelayOptions) -> Relay:
    """The relay over ``found`` destinations, served or ``ejx relay``'s (options: :func:`relay_options`)."""
    return Relay(pool, found, options=options)


def guard_options(settings: Settings) -> GuardOptions:
    """The HTTP server's deadlines and caps, from settings."""
    return GuardOptions(header_timeout_s=settings.http_header_timeout_s, body_idle_s=settings.http_body_idle_s,
                        body_timeout_s=settings.http_body_timeout_s, max_connections=settings.http_max_connections,
                        max_connections_per_client=settings.http_max_connections_per_client,
                        max_requests_per_client=settings.http_max_requests_per_client, answers=soap_refusals)


async def http_app(settings: Settings, built: Runtime, wanted: set[str], stack: AsyncExitStack) -> FastAPI:
    """The HTTP faces of the chosen components in one FastAPI app, every route behind the gate.

    The API docs (``/docs``) are served with their assets from ejx itself (fastapi-offline),
    so they work on a network without internet.
    """
    app = FastAPIOffline(title="ejx", version="1", redoc_url=None, description=(
        "Exchange broker for school e-journals: vendors publish canonical events; "
        "the portal receives signed envelopes, agencies pull GOST-signed SMEV 3 messages; "
        "authorities monitor schools and read suppressed aggregates."))
    install_fault_answers(app)
    gate = Gate(Credentials(built.pool), GateOptions(bad_tokens_per_window=settings.http_bad_tokens_per_minute))
    app.include_router(health_router(pool=built.pool, gate=gate, probes={
        "postgresql": postgres_probe(built.pool), "kafka": kafka_probe(settings.kafka_address)}))
    if "ingest" in wanted:
        service = await stack.enter_async_context(ingest_service(settings, pool=built.pool, schemas=built.schemas,
                                                                 publisher_options=served_publisher(settings)))
        app.include_router(ingest_router(service, gate))
    if "smev" in wanted:
        app.include_router(smev3_router(message_exchange(settings, pool=built.pool, schemas=built.schemas)))
    if "dashboard" in wanted:
        activity = ActivityOptions(silent_after_days=settings.silent_after_days,
                                   timely_within_days=settings.timely_within_days)
        app.include_router(monitoring_router(pool=built.pool, gate=gate, options=MonitoringOptions(
            activity=activity, min_group=settings.analytics_min_group)))
        app.include_router(dashboard_router(gate))
    app.add_middleware(SlowClientMiddleware, options=guard_options(settings))
    return app


def listeners(settings: Settings) -> list[socket.socket]:
    """The HTTP server's listening sockets, bound before any component starts: a port in use is then a Failure
    (one line, exit 1), where uvicorn, binding by itself, would ``sys.exit`` from its task, past every
    component's stop. One socket per address the host resolves to, as asyncio's own server binds (``localhost``
    on both loopbacks, an empty host on every interface, IPv6 sockets IPv6 only). With ``http_reuse_port``
    other processes may listen on the port too (SO_REUSEPORT)."""
    where = f"{settings.http_host}:{settings.http_port}"
    try:
        found = socket.getaddrinfo(settings.http_host or None, settings.http_port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except OSError as error:
        raise Failure(f"cannot listen on {where} ({error.strerror})") from error
    bound: list[socket.socket] = []
    try:
        for family, kind, protocol, _, address in dict.fromkeys(found):
            try:
                listening = socket.socket(family, kind, protocol)
            except OSError:  # a family the kernel does not offer (IPv6 switched off): skipped, as asyncio does
                continue
            bound.append(listening)
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if settings.http_reuse_port:
                listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                listening.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            where = f"{address[0]}:{address[1]}" if family == socket.AF_INET else f"[{address[0]}]:{address[1]}"
            listening.bind(address)
            listening.listen(2048)
    except OSError as error:
        for listening in bound:
            listening.close()
        hint = "; is a server without EJX_HTTP_REUSE_PORT on that port?" if settings.http_reuse_port else ""
        raise Failure(f"cannot listen on {where} ({error.strerror}){hint}") from error
    if not bound:
        raise Failure(f"cannot listen on {where}: no address family of it is available")
    return bound


def http_server(settings: Settings, app: FastAPI) -> uvicorn.Server:
    """uvicorn with ejx's connection guard (caps, header deadline) and a bounded graceful stop."""
    return uvicorn.Server(uvicorn.Config(
        app, host=settings.http_host, port=settings.http_port, log_config=None, access_log=False, lifespan="off",
        http=ConnectionGuard(guard_options(settings)).protocol(), timeout_keep_alive=5,
        timeout_graceful_shutdown=settings.http_grace_s, h11_max_incomplete_event_size=16 * 1024))


async def serve(settings: Settings, components: Iterable[str], *, stop: asyncio.Event | None = None,
                ready: asyncio.Event | None = None) -> None:
    """Run the chosen components until ``stop`` (or SIGTERM/SIGINT) and shut down gracefully."""
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    names = tuple(components)
    if not await wait_for_dependencies(settings, stop=stop):
        log.info("serve.stopped", components=list(names), reason="stopped while waiting for dependencies")
        return
    async with AsyncExitStack() as stack:
        built = await until_started(settings, lambda: stack.enter_async_context(runtime(settings, names)),
                                    stop=stop, what="runtime")
        if built is None:
            log.info("serve.stopped", components=list(names), reason="stopped while starting")
            return
        sockets = listeners(settings) if built.app is not None else None
        # A loop's own Kafka clients start in its run(), which raises Failure only if they could not.
        tasks = [asyncio.create_task(until_started(settings, partial(component.run, stop), stop=stop,
                                                   what=type(component).__name__), name=type(component).__name__)
                 for component in built.loops]
        server = None
        if built.app is not None:
            asyncio.get_running_loop().set_exception_handler(accept_error_handler())
            server = http_server(settings, built.app)
            tasks.append(asyncio.create_task(server.serve(sockets=sockets), name="http"))
        log.info("serve.started", components=list(names), http=f"{settings.http_host}:{settings.http_port}"
                 if server else None)
        if ready is not None:
            ready.set()
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        if server is not None:
            server.should_exit = True
        stopper.cancel()
        await _finish(tasks, grace_s=settings.shutdown_grace_s)
        log.info("serve.stopped", components=list(names))
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()


def run_serve(settings: Settings, components: Iterable[str]) -> None:
    """:func:`serve` in a new event loop. Unlike ``asyncio.run``, tasks still running once it returned
    (a Kafka client whose stop waits on its own cancelled work) get :data:`CANCEL_WAIT_S`, then are
    abandoned: a SIGTERM ends the process within its grace period whatever a library does."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(serve(settings, components))
    finally:
        leftovers = asyncio.all_tasks(loop)
        for task in leftovers:
            task.cancel()
        if leftovers:
            loop.run_until_complete(asyncio.wait(leftovers, timeout=CANCEL_WAIT_S))
            abandoned = sorted(task.get_name() for task in leftovers if not task.done())
            if abandoned:
                log.warning("serve.tasks_abandoned", tasks=abandoned)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _finish(tasks: list[asyncio.Task], *, grace_s: float) -> None:
    """Let ``tasks`` finish within ``grace_s``, then cancel the rest; one stuck in a dead connection's
    clean-up is left to the pool's close, which drops that connection."""
    _, pending = await asyncio.wait(tasks, timeout=grace_s)
    if not pending:
        return
    log.warning("serve.grace_expired", components=sorted(task.get_name() for task in pending), grace_s=grace_s)
    for task in pending:
        task.cancel()
    await asyncio.wait(pending, timeout=CANCEL_WAIT_S)
