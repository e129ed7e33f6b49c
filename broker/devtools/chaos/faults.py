"""The fault schedule: every ``every_s`` seconds one target is SIGKILLed and started again 1–5 s later.

The order is random but seeded, and drawn as shuffled rounds in which every
target comes once, so even a short run kills each kind of target (a plain
``choice`` could miss one for long). One fault at a time: the next wait starts
once the victim is back.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import structlog

from broker.devtools.chaos.cluster import Target

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class FaultPlan:
    """Which targets, how often, which random sequence."""

    targets: tuple[str, ...]
    every_s: float = 20.0
    seed: int = 1
    down_s: tuple[float, float] = (1.0, 5.0)
    """How long a killed target stays down, drawn uniformly."""


@dataclass
class FaultLog:
    """What the schedule did."""

    kills: Counter[str] = field(default_factory=Counter)
    faults: list[dict] = field(default_factory=list)
    """One entry per kill: target, seconds from the start, seconds down, seconds its restart took."""


class FaultSchedule:
    """Kills and restarts ``targets`` by ``plan`` until stopped; always leaves every target running."""

    def __init__(self, targets: dict[str, Target], plan: FaultPlan) -> None:
        unknown = sorted(set(plan.targets) - set(targets))
        if unknown:
            raise ValueError(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(targets)}")
        self._targets = targets
        self._plan = plan
        self._rng = random.Random(plan.seed)
        self._round: list[str] = []
        self.log = FaultLog()
        self.every_target_hit = asyncio.Event()
        """Set once each target of the plan has been killed and started again: a load that ends sooner waits
        for it, so a short run still proves something of every target."""

    def next_target(self) -> str:
        if not self._round:
            self._round = list(self._plan.targets)
            self._rng.shuffle(self._round)
        return self._round.pop()

    async def run(self, stop: asyncio.Event) -> None:
        """Fault after fault until ``stop``; a fault under way finishes (its target restarted) first."""
        started = time.monotonic()
        while not await _stopped_within(stop, self._plan.every_s):
            name = self.next_target()
            down_s = self._rng.uniform(*self._plan.down_s)
            killed_at = time.monotonic()
            await self._targets[name].kill()
            self.log.kills[name] += 1
            log.info("chaos.killed", target=name, down_s=round(down_s, 1))
            await asyncio.sleep(down_s)
            restart_began = time.monotonic()
            await self._targets[name].restart()
            self.log.faults.append({"target": name, "at_s": round(killed_at - started, 1),
                                    "down_s": round(down_s, 1),
                                    "restart_s": round(time.monotonic() - restart_began, 1)})
            if all(self.log.kills[target] for target in self._plan.targets):
                self.every_target_hit.set()


async def _stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True
