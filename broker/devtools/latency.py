"""Latency percentiles as the demo and every benchmark report them: by nearest rank, one rule for all."""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest rank: the smallest value with at least ``q`` (0..1) of them at or below it (p99 of 100 is the
    99th); NaN for no values."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else float("nan")
