"""ejx_events_rejected: one series per fault code, whatever code a caller hands it."""

from __future__ import annotations

from broker.ops import metrics
from tests.delivery_support import metric


def test_a_fault_code_is_its_own_label_and_anything_else_counts_as_failure():
    before = {code: metric("ejx_events_rejected_total", code=code) for code in ("AccessDenied", "Failure")}
    metrics.event_rejected("AccessDenied")
    metrics.event_rejected('=HYPERLINK("http://x")', count=2)
    assert metric("ejx_events_rejected_total", code="AccessDenied") - before["AccessDenied"] == 1
    assert metric("ejx_events_rejected_total", code="Failure") - before["Failure"] == 2
    assert metric("ejx_events_rejected_total", code='=HYPERLINK("http://x")') == 0
