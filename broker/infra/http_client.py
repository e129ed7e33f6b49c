"""An HTTP/1.1 client on kept-alive connections, written on h11 and asyncio streams.

The relay posts every envelope to the portal; httpx spent ~1.5 ms of CPU per
POST and capped the relay near 200/s, this costs ~0.1 ms. A connection the
server closed while it sat idle is retried once on a fresh one; nothing else is
retried here (the relay decides).
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

import h11

from broker.domain.faults import Failure


@dataclass(frozen=True)
class Answer:
    """A receiver's HTTP answer."""

    status: int
    headers: tuple[tuple[str, str], ...]
    """Names in lower case."""
    body: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    def header(self, name: str, default: str = "") -> str:
        name = name.lower()
        return next((value for key, value in self.headers if key == name), default)


class _StaleConnection(Exception):
    """A kept-alive connection the server had closed before it answered a byte: try a fresh one."""


class _Connection:
    """One persistent HTTP/1.1 connection (h11 state machine over asyncio streams)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._h11 = h11.Connection(h11.CLIENT)

    @property
    def usable(self) -> bool:
        return not (self._writer.is_closing() or self._reader.at_eof())

    async def exchange(self, request: h11.Request, body: bytes, *, max_answer_bytes: int) -> tuple[Answer, bool]:
        """Send one request, read its answer: (answer, whether the connection may carry another)."""
        # The body is handed to the transport as it is (a batch of envelopes is hundreds of kB: no copies).
        self._writer.writelines([self._h11.send(request), *self._h11.send_with_data_passthrough(h11.Data(data=body)),
                                 self._h11.send(h11.EndOfMessage())])
        response: h11.Response | None = None
        chunks: list[bytes] = []
        size = 0
        while True:
            event = self._h11.next_event()
            if event is h11.NEED_DATA:
                data = await self._reader.read(65536)
                if not data and response is None and self._h11.their_state is h11.SEND_RESPONSE:
                    raise _StaleConnection()
                self._h11.receive_data(data)
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                if size < max_answer_bytes:
                    chunks.append(bytes(event.data[:max_answer_bytes - size]))
                size += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError("the receiver closed the connection mid-answer")
            # InformationalResponse (100 Continue): keep reading.
        assert response is not None
        headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers)
        reusable = self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE
        if reusable:
            self._h11.start_next_cycle()
        return Answer(response.status_code, headers, b"".join(chunks)), reusable

    def close(self) -> None:
        self._writer.close()


class KeepAliveClient:
    """POSTs to one URL over up to ``max_connections`` persistent HTTP/1.1 connections.

    The relay's hot path: each POST is one write and one read on a kept-alive
    connection, ~0.1 ms of CPU, where an httpx AsyncClient spends ~1.5 ms (its
    pool and anyio layers) and so capped a relay at ~200 deliveries/s on two
    cores. No redirects, no proxies, no cookies: a receiver endpoint needs none.
    """

    def __init__(self, url: str, *, timeout_s: float, max_connections: int, max_answer_bytes: int = 1 << 20) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Failure(f"not an http(s) URL: {url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._authority = parts.netloc.rpartition("@")[2]
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._timeout_s = timeout_s
        self._max_answer_bytes = max_answer_bytes
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []

    async def post(self, body: bytes, *, headers: Sequence[tuple[str, str]] = ()) -> Answer:
        """One POST; raises OSError/ConnectionError, TimeoutError or h11.ProtocolError when it fails."""
        request = h11.Request(method="POST", target=self._target, headers=[
            ("Host", self._authority), ("Content-Length", str(len(body))), *headers])
        async with self._slots, asyncio.timeout(self._timeout_s):
            while self._idle:
                connection = self._idle.pop()
                if not connection.usable:
                    connection.close()
                    continue
                try:
                    return await self._exchange(connection, request, body)
                except (_StaleConnection, ConnectionResetError, BrokenPipeError):
                    continue  # closed by the server while idle; the request never reached it
            connection = _Connection(*await asyncio.open_connection(
                self._host, self._port, ssl=self._ssl, server_hostname=self._host if self._ssl else None))
            try:
                return await self._exchange(connection, request, body)
            except _StaleConnection as error:
                raise ConnectionResetError("the receiver closed a new connection without answering") from error

    async def _exchange(self, connection: _Connection, request: h11.Request, body: bytes) -> Answer:
        try:
            answer, reusable = await connection.exchange(request, body, max_answer_bytes=self._max_answer_bytes)
        except BaseException:
            connection.close()
            raise
        if reusable:
            self._idle.append(connection)
        else:
            connection.close()
        return answer

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


