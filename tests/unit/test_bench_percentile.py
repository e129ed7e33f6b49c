"""The benches' latency percentiles are nearest-rank: p99 of 100 samples is the 99th, not the maximum."""

from __future__ import annotations

import math

from broker.devtools.latency import percentile


def test_a_percentile_is_the_smallest_value_with_that_share_at_or_below_it() -> None:
    hundred = [float(n) for n in range(100, 0, -1)]  # 1..100, unsorted
    assert percentile(hundred, 0.99) == 99.0 and percentile(hundred, 0.5) == 50.0
    assert percentile([3.0, 1.0], 0.5) == 1.0 and percentile([7.0], 0.99) == 7.0
    assert percentile([float(n) for n in range(1, 3001)], 0.99) == 2970.0
    assert math.isnan(percentile([], 0.5))
