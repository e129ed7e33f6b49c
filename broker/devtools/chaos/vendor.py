"""A vendor as the chaos run plays it: REST batches, each repeated with the same events until ejx says 202.

Only a 202 acknowledges: on 429, 503, 5xx or a broken connection the vendor waits
(``Retry-After`` when given) and posts the very same body again, so a batch whose
first answer was lost comes back with the same idempotency keys and ejx's ledger
answers with the same event ids. Anything else (a 400, a 403) is a bug of ours and
ends the run.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx

from adapters import examples
from broker.domain.faults import Failure
from broker.domain.routing import RoutingTable

RETRIED = frozenset({429, 500, 502, 503, 504})
REQUEST_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class LoadPlan:
    """How much the vendor sends and how fast."""

    events: int
    rate: float | None = None
    """Events per second offered; None sends as fast as ``in_flight`` posts allow."""
    batch: int = 100
    """Events per POST."""
    in_flight: int = 4
    """POSTs at once."""
    term_grade_every: int = 5
    """Every n-th event is a TermGradeFinalized (routed to the portal AND the interagency queue)."""


@dataclass
class Acknowledged:
    """What ejx confirmed, and what it took."""

    destinations: dict[uuid.UUID, tuple[str, ...]] = field(default_factory=dict)
    """Acknowledged event id → the destinations its routes name."""
    retries: Counter[str] = field(default_factory=Counter)
    """Repeated POSTs by cause (HTTP status or the connection error's class)."""
    posts: int = 0

    def expected(self) -> dict[str, set[uuid.UUID]]:
        """Per destination, the acknowledged events it must receive."""
        out: dict[str, set[uuid.UUID]] = {}
        for event_id, destinations in self.destinations.items():
            for destination in destinations:
                out.setdefault(destination, set()).add(event_id)
        return out


class Vendor:
    """One vendor's token, schools and run id (its events' ``source_record_id`` prefix)."""

    def __init__(self, url: str, token: str, *, schools: tuple[str, ...], source_system: str,
                 routing: RoutingTable, run_id: str) -> None:
        self._url = url
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._schools = schools
        self._source_system = source_system
        self._routing = routing
        self._run_id = run_id
        self.acknowledged = Acknowledged()

    def event(self, n: int, plan: LoadPlan) -> dict:
        """The n-th event of the run: a GradePosted, or every ``term_grade_every``-th a TermGradeFinalized."""
        kind = "TermGradeFinalized" if n % plan.term_grade_every == plan.term_grade_every - 1 else "GradePosted"
        school = self._schools[n % len(self._schools)]
        return {**examples.EVENTS[kind], "source_system": self._source_system, "school_id": school,
                "source_record_id": f"{self._run_id}-{n}", "student_id": f"st-{n:07d}c"}

    def _destinations(self, event: dict) -> tuple[str, ...]:
        routes = self._routing.route(event_type=event["type"], school_id=event["school_id"], district="chaos")
        return tuple(sorted({route.channel for route in routes}))

    async def send(self, plan: LoadPlan, *, advance: Callable[[int], None]) -> Acknowledged:
        """Every batch of the plan posted until acknowledged, paced by ``plan.rate``."""
        limit = asyncio.Semaphore(plan.in_flight)
        limits = httpx.Limits(max_connections=plan.in_flight, max_keepalive_connections=plan.in_flight)
        async with httpx.AsyncClient(base_url=self._url, timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
            async def post(start: int, count: int) -> None:
                async with limit:
                    await self._until_acknowledged(client, [self.event(n, plan) for n in range(start, start + count)])
                advance(count)

            begin, posts = time.monotonic(), []
            for start, count, at in _batches(plan):
                if (delay := begin + at - time.monotonic()) > 0:
                    await asyncio.sleep(delay)
                posts.append(asyncio.create_task(post(start, count)))
            await asyncio.gather(*posts)
        return self.acknowledged

    async def _until_acknowledged(self, client: httpx.AsyncClient, events: list[dict]) -> None:
        body = json.dumps(events).encode()
        while True:
            self.acknowledged.posts += 1
            try:
                answer = await client.post("/v1/events", content=body, headers=self._headers)
            except httpx.TransportError as error:
                self.acknowledged.retries[type(error).__name__] += 1
                await asyncio.sleep(1.0)
                continue
            if answer.status_code == 202:
                for event, event_id in zip(events, map(uuid.UUID, answer.json()["event_ids"]), strict=True):
                    if event_id in self.acknowledged.destinations:  # the expected set would hold one for two
                        raise Failure(f"ejx acknowledged two of our events as one, event id {event_id}")
                    self.acknowledged.destinations[event_id] = self._destinations(event)
                return
            if answer.status_code not in RETRIED:
                raise Failure(f"ejx refused a valid batch: {answer.status_code} {answer.text[:500]}")
            self.acknowledged.retries[str(answer.status_code)] += 1
            await asyncio.sleep(_retry_after(answer))


def _retry_after(answer: httpx.Response) -> float:
    try:
        return min(30.0, max(0.1, float(answer.headers.get("Retry-After", "1"))))
    except ValueError:
        return 1.0


def _batches(plan: LoadPlan) -> Iterator[tuple[int, int, float]]:
    """(first event, count, when in seconds from the start) of each POST."""
    for n, start in enumerate(range(0, plan.events, plan.batch)):
        yield start, min(plan.batch, plan.events - start), (n * plan.batch / plan.rate if plan.rate else 0.0)
