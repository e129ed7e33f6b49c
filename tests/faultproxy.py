"""A fault-injecting TCP proxy for the tests: loopback only, in the test's own event loop.

Put it between a component and one dependency (PostgreSQL, Kafka, the portal)
and the component sees that dependency misbehave the way networks do, while
the dependency itself — shared with other engineers — is never touched:

- ``delay_s``: every chunk is held this long before it is forwarded;
- ``refusing``: new connections are closed as soon as they are accepted;
- :meth:`drop`: every open connection is reset;
- :meth:`freeze` / :meth:`thaw`: nothing is forwarded either way, not even a
  close (a SIGSTOPped server, seen from the client); ``thaw(existing=False)`` lets only new
  connections through, so the old ones stay black holes, as sockets to a server
  that died without a reset do;
- :meth:`freeze_on`: once, when a client sends ``trigger``, freeze before it is
  forwarded (a server that stopped just as a given statement was sent);
- :meth:`cut_answer`: once, when a client sends ``trigger``, forward it, then cut
  that connection after ``after_bytes`` of the upstream's answer (a COMMIT whose
  outcome the client never learns, a 2xx lost on the way back).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

CHUNK = 64 * 1024


@dataclass
class _Cut:
    trigger: bytes
    after_bytes: int
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class _Link:
    """One client connection and its upstream connection."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    flowing: asyncio.Event
    cut: _Cut | None = None
    """Armed on this link once its client sent the trigger."""
    answer_budget: int | None = None

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            writer.transport.abort()


class FaultProxy:
    """``async with FaultProxy(host, port) as proxy:`` — clients connect to ``proxy.port``."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.delay_s = 0.0
        self.refusing = False
        self.accepted = 0
        """Connections accepted so far (refused ones included)."""
        self._links: set[_Link] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._cut: _Cut | None = None
        self._freeze_on: tuple[bytes, asyncio.Event] | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def port(self) -> int:
        assert self._server is not None, "start the proxy first"
        return self._server.sockets[0].getsockname()[1]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        self.drop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def drop(self) -> None:
        """Reset every open connection (clients see ECONNRESET or EOF)."""
        for link in list(self._links):
            link.abort()
        self._links.clear()

    def freeze(self) -> None:
        """Stop forwarding on every connection, open and new, both ways."""
        self._flowing.clear()
        for link in self._links:
            link.flowing.clear()

    def upstream_ports(self) -> list[int]:
        """Local ports of the connections to the upstream (PostgreSQL's ``client_port`` of those sessions)."""
        return [link.upstream.get_extra_info("sockname")[1] for link in self._links]

    def thaw(self, *, existing: bool = True) -> None:
        """Forward again: on every connection, or (``existing=False``) only on connections opened from now on."""
        self._flowing.set()
        if existing:
            for link in self._links:
                link.flowing.set()

    def freeze_on(self, trigger: bytes) -> asyncio.Event:
        """Once: freeze as a client sends ``trigger`` (which is held, not forwarded); the returned event is
        set when that happened."""
        frozen = asyncio.Event()
        self._freeze_on = (trigger, frozen)
        return frozen

    def cut_answer(self, trigger: bytes, *, after_bytes: int = 0) -> asyncio.Event:
        """Once: the first connection whose client sends ``trigger`` is cut after ``after_bytes`` of the
        answer that follows; the returned event is set when the cut happened."""
        self._cut = _Cut(trigger, after_bytes)
        return self._cut.done

    @contextlib.asynccontextmanager
    async def unreachable(self) -> AsyncIterator[None]:
        """Within the block the upstream is gone: open connections reset, new ones refused."""
        self.refusing = True
        self.drop()
        try:
            yield
        finally:
            self.refusing = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(client=writer, upstream=up_writer, flowing=asyncio.Event())
        if self._flowing.is_set():
            link.flowing.set()
        self._links.add(link)
        for task in (self._pump(link, reader, up_writer, answer=False),
                     self._pump(link, up_reader, writer, answer=True)):
            started = asyncio.create_task(task)
            self._tasks.add(started)
            started.add_done_callback(self._tasks.discard)

    async def _pump(self, link: _Link, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *,
                    answer: bool) -> None:
        try:
            while data := await source.read(CHUNK):
                if not answer and self._freeze_on is not None and self._freeze_on[0] in data:
                    _, frozen = self._freeze_on
                    self._freeze_on = None
                    self.freeze()
                    frozen.set()
                await link.flowing.wait()
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                    await link.flowing.wait()
                if answer and link.answer_budget is not None:
                    if len(data) >= link.answer_budget:
                        sink.write(data[:link.answer_budget])
                        await sink.drain()
                        self._cut_link(link)
                        return
                    link.answer_budget -= len(data)
                if not answer and self._cut is not None and self._cut.trigger in data:
                    # Armed before the request goes on: its answer cannot overtake the arming.
                    link.cut, self._cut = self._cut, None
                    link.answer_budget = link.cut.after_bytes
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if link.flowing.is_set():  # a frozen link keeps even its close to itself, until drop()
                link.abort()
                self._links.discard(link)

    def _cut_link(self, link: _Link) -> None:
        link.abort()
        self._links.discard(link)
        assert link.cut is not None
        link.cut.done.set()
