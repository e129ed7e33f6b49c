"""Retry delays: exponential in the attempt number, capped, with jitter; and waiting them out.

Jitter spreads the retries of many rows that failed together (a receiver outage)
so they do not hit the recovering receiver in one wave. "Equal jitter" keeps at
least half the exponential delay, so a failing receiver is never hammered.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delay before the next attempt after ``attempts`` failed ones."""

    base_s: float = 1.0
    """Delay ceiling after the first failure."""
    cap_s: float = 300.0
    """No delay is longer than this."""

    def ceiling(self, attempts: int) -> float:
        """The un-jittered delay: base * 2^(attempts-1), capped."""
        exponent = min(max(attempts, 1) - 1, 60)
        return min(self.cap_s, self.base_s * 2.0 ** exponent)

    def delay(self, attempts: int, *, rng: random.Random | None = None) -> float:
        """A random delay in [ceiling/2, ceiling]."""
        ceiling = self.ceiling(attempts)
        return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile: loops wait without delaying shutdown."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        pass
