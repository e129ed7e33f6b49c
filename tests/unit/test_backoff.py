"""Retry delays grow exponentially, stay within [ceiling/2, ceiling], and are capped."""

from __future__ import annotations

import random

from broker.infra.backoff import Backoff


def test_ceiling_doubles_then_caps():
    backoff = Backoff(base_s=1.0, cap_s=30.0)
    assert [backoff.ceiling(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.ceiling(10_000) == 30


def test_delay_is_jittered_within_half_to_full_ceiling():
    backoff = Backoff(base_s=0.5, cap_s=60.0)
    rng = random.Random(7)
    for attempts in range(1, 12):
        delays = [backoff.delay(attempts, rng=rng) for _ in range(200)]
        ceiling = backoff.ceiling(attempts)
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100, "no jitter"
