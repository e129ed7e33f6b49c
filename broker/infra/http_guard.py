"""No client can stall the HTTP server for others: deadlines, connection caps, per-client limits.

uvicorn bounds idle keep-alive connections and incomplete header *sizes*, but
not how long headers or a body may take to arrive, and its concurrency limit
answers in a shape of its own. So, wired by the bootstrap:

* :class:`ConnectionGuard` makes uvicorn's HTTP protocol refuse a connection
  over the global or per-client cap at once (503 / 429 + Retry-After, fault
  body, closed; a refusal is logged once per interval with a count, never per
  attempt) and close one whose request headers are not complete in time (408).
* :class:`SlowClientMiddleware` (ASGI) gives the request body an idle and a
  total deadline (408, connection closed), caps the requests one client has
  in flight (429), and closes a connection whose body was left unread, so a
  trickle of body bytes cannot hold it open after the answer.
* :func:`accept_error_handler` turns asyncio's per-attempt "accept() out of
  system resource" errors into one log line per interval.

A refusal of a request under a path given in ``GuardOptions.answers`` takes that
path's own shape: the SMEV 3 endpoints (``/smev3/1.2``, ``/smev3/1.3`` and below)
answer a soap:Fault, as their own faults are, since their callers (zeep, CXF)
parse SOAP and would take JSON for a transport error. Every other path gets ejx's
JSON fault. Connection caps refuse before any request, so with no path to go by,
they answer JSON.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import structlog
from starlette.responses import Response
from uvicorn.protocols.http.h11_impl import H11Protocol

from broker.domain.faults import Failure, Fault, InvalidContent, TooManyRequests
from broker.infra.http_server import RETRY_AFTER_S, fault_response

log = structlog.get_logger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class GuardOptions:
    """Deadlines and caps of the HTTP server."""

    header_timeout_s: float = 10.0
    """Seconds from connection (or the previous answer) until the request headers are complete."""
    body_idle_s: float = 8.0
    """Longest pause between two pieces of a request body."""
    body_timeout_s: float = 30.0
    """Seconds the whole body may take to arrive."""
    max_connections: int = 2000
    """Open connections of the server; more are refused with 503."""
    max_connections_per_client: int = 256
    """Open connections from one address; more are refused with 429."""
    max_requests_per_client: int = 32
    """Requests of one address in flight at once; more are answered 429."""
    log_interval_s: float = 10.0
    """Refusals are logged at most once per interval, with how many there were."""
    answers: Callable[[Fault], Mapping[str, tuple[str, bytes]]] | None = None
    """A refusal in the shape of the endpoint refused: endpoint path → (media type, body) of a fault, e.g.
    the SMEV 3 endpoints' soap:Fault (the bootstrap wires :func:`broker.smev3.service.soap_refusals`);
    rendered once, when the guard is built. Other paths get ejx's JSON fault."""


class SlowRequest(InvalidContent):
    """The request did not arrive in time."""

    http_status = 408


class RefusalLog:
    """Counts refusals and logs them at most once per interval, so a flood cannot flood the log."""

    def __init__(self, event: str, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._event = event
        self._interval = interval_s
        self._clock = clock
        self._last = -interval_s
        self._pending: dict[str, int] = {}

    def refused(self, reason: str) -> None:
        self._pending[reason] = self._pending.get(reason, 0) + 1
        now = self._clock()
        if now - self._last >= self._interval:
            log.warning(self._event, refused=dict(self._pending), interval_s=self._interval)
            self._pending.clear()
            self._last = now


def raw_fault(fault: Fault, shaped: tuple[str, bytes] | None = None) -> bytes:
    """A complete HTTP/1.1 answer carrying ``fault`` (as the ``shaped`` (media type, body) if given), for
    refusing on the connection itself, before or instead of a request."""
    media, body = ("application/json", json.dumps(fault.as_dict()).encode()) if shaped is None else shaped
    reason = {408: b"Request Timeout", 429: b"Too Many Requests", 503: b"Service Unavailable"}[fault.http_status]
    retry = f"Retry-After: {RETRY_AFTER_S}\r\n".encode() if fault.retriable else b""
    return (b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%sConnection: close\r\n\r\n"
            % (fault.http_status, reason, media.encode(), len(body), retry) + body)


class Refusal:
    """One refusal the guard makes, in the shape of the endpoint refused (:attr:`GuardOptions.answers`)."""

    def __init__(self, fault: Fault, options: GuardOptions) -> None:
        self.fault = fault
        self._shaped = dict(options.answers(fault)) if options.answers is not None else {}

    def shaped(self, path: str | None) -> tuple[str, bytes] | None:
        """(media type, body) for a request to ``path``; None for ejx's JSON fault (or an unknown path)."""
        for prefix, answer in self._shaped.items():
            if path is not None and (path == prefix or path.startswith(prefix + "/")):
                return answer
        return None

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI answer to ``scope``: same status and Retry-After whichever the shape."""
        shaped = self.shaped(scope.get("path"))
        response = fault_response(self.fault)
        if shaped is not None:
            response = Response(shaped[1], status_code=self.fault.http_status, media_type=shaped[0],
                                headers={k: v for k, v in response.headers.items() if k == "retry-after"})
        await response(scope, receive, send)


def _request_path(head: bytes) -> str | None:
    """The path of the request line ``head`` begins (``POST /smev3/1.3?wsdl HTTP/1.1``), once it is complete."""
    parts = head.lstrip(b"\r\n").split(b" ", 2)
    return parts[1].split(b"?", 1)[0].decode("latin-1") if len(parts) == 3 else None


class ConnectionGuard:
    """Caps connections (globally and per address) and bounds the time to complete request headers."""

    def __init__(self, options: GuardOptions = GuardOptions()) -> None:
        self.options = options
        self.per_client: dict[str, int] = {}
        self.open = 0
        self.refusals = RefusalLog("http.connections_refused", options.log_interval_s)
        self.slow_headers = Refusal(SlowRequest(
            f"the request headers were not complete within {options.header_timeout_s:g} s"), options)

    def protocol(self) -> type[H11Protocol]:
        """uvicorn's h11 protocol with this guard's caps and header deadline (``uvicorn.Config(http=…)``)."""
        guard = self

        class GuardedH11Protocol(H11Protocol):
            _counted: str | None = None
            _header_timer: asyncio.TimerHandle | None = None
            _answered: object = None
            _head = b""  # the current request's first bytes: its path decides the shape of a refusal

            def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
                super().connection_made(transport)
                client = self.client[0] if self.client else "unknown"
                refusal = guard.admit(client)
                if refusal is not None:
                    transport.write(raw_fault(refusal))
                    transport.close()
                    return
                self._counted = client
                self._arm()

            def connection_lost(self, exc: Exception | None) -> None:
                if self._header_timer is not None:
                    self._header_timer.cancel()
                if self._counted is not None:
                    guard.release(self._counted)
                    self._counted = None
                super().connection_lost(exc)

            def data_received(self, data: bytes) -> None:
                if len(self._head) < 512:
                    self._head += data
                super().data_received(data)

            def handle_events(self) -> None:
                super().handle_events()
                if self.cycle is not None and self.cycle is not self._answered and self._header_timer is not None:
                    self._header_timer.cancel()  # headers complete: the body has deadlines of its own
                    self._header_timer = None

            def on_response_complete(self) -> None:
                self._answered = self.cycle
                self._head = b""
                self._arm()  # the next request's headers get the same deadline
                super().on_response_complete()

            def _arm(self) -> None:
                if self._header_timer is not None:
                    self._header_timer.cancel()
                self._header_timer = self.loop.call_later(guard.options.header_timeout_s, self._headers_late)

            def _headers_late(self) -> None:
                self._header_timer = None
                if self.transport.is_closing() or (self.cycle is not None and self.cycle is not self._answered):
                    return
                guard.refusals.refused("headers_too_slow")
                refusal = guard.slow_headers
                self.transport.write(raw_fault(refusal.fault, refusal.shaped(_request_path(self._head))))
                self.transport.close()

        return GuardedH11Protocol

    def admit(self, client: str) -> Fault | None:
        """None (and the connection is counted) or the fault refusing it."""
        if self.open >= self.options.max_connections:
            self.refusals.refused("server_full")
            return Failure("the server has too many connections; try again later")
        if self.per_client.get(client, 0) >= self.options.max_connections_per_client:
            self.refusals.refused("client_full")
            return TooManyRequests("too many connections from this client; close some and retry")
        self.open += 1
        self.per_client[client] = self.per_client.get(client, 0) + 1
        return None

    def release(self, client: str) -> None:
        self.open -= 1
        left = self.per_client.get(client, 1) - 1
        if left > 0:
            self.per_client[client] = left
        else:
            self.per_client.pop(client, None)


class SlowClientMiddleware:
    """Body deadlines, a per-client cap on requests in flight, and no connection held by an unread body."""

    def __init__(self, app: ASGIApp, options: GuardOptions = GuardOptions()) -> None:
        self.app = app
        self.options = options
        self.in_flight: dict[str, int] = {}
        self.refusals = RefusalLog("http.requests_refused", options.log_interval_s)
        self.busy = Refusal(TooManyRequests("too many requests in flight from this client"), options)
        self.slow_body = Refusal(SlowRequest(f"the request body did not arrive within {options.body_timeout_s:g} s "
                                             f"(or paused over {options.body_idle_s:g} s)"), options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope["client"][0] if scope.get("client") else "unknown"
        if self.in_flight.get(client, 0) >= self.options.max_requests_per_client:
            self.refusals.refused("client_busy")
            await self.busy.answer(scope, receive, send)
            return
        self.in_flight[client] = self.in_flight.get(client, 0) + 1
        try:
            await self._guarded(scope, receive, send)
        finally:
            left = self.in_flight[client] - 1
            if left:
                self.in_flight[client] = left
            else:
                del self.in_flight[client]

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.body_timeout_s
        headers = dict(scope.get("headers") or ())
        body_done = headers.get(b"content-length", b"0") in (b"", b"0") and b"transfer-encoding" not in headers
        started = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            wait = min(self.options.body_idle_s, deadline - loop.time())
            try:
                message = await asyncio.wait_for(receive(), max(wait, 0.0))
            except TimeoutError:
                self.refusals.refused("body_too_slow")
                raise SlowRequest(self.slow_body.fault.description) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def closing_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if not body_done:
                    message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, timed_receive, closing_send)
        except SlowRequest:
            if started or self.slow_body.shaped(scope.get("path")) is None:
                raise  # ejx's REST routes answer it themselves, as JSON
            await self.slow_body.answer(scope, receive, closing_send)  # the SMEV 3 endpoint lets it through


def accept_error_handler(interval_s: float = 10.0) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """A loop exception handler logging accept() failures (e.g. out of file descriptors) once per
    interval; everything else goes to the default handler."""
    refusals = RefusalLog("http.accept_failed", interval_s)

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if "accept" in str(context.get("message", "")):
            refusals.refused(type(context.get("exception")).__name__)
            return
        loop.default_exception_handler(context)

    return handler
