"""The benches judge their runs against the targets set for this machine."""

from __future__ import annotations

from bench import targets


def _pipeline(**figures: object) -> dict:
    return {"events_per_s": 2500.0, "ratio": 0.05, "router_relay_cpu_ms_per_event": 0.34, "offered_rate": None,
            "latency_ms": {"p50": 90.0, "p99": 220.0, "max": 300.0}, **figures}


def _met(found: list[targets.Target]) -> dict[str, bool]:
    return {target.name: target.met for target in found}


def test_a_backlog_run_is_judged_on_throughput_with_its_ratio_and_on_ejx_s_own_cpu() -> None:
    assert _met(targets.pipeline(_pipeline())) == {"produce → portal recorded": False,
                                                   "router + relay CPU per event": True}
    # 3,000/s alone is not enough: the ratio to raw produce→consume in the same run must be 0.2 too.
    assert _met(targets.pipeline(_pipeline(events_per_s=3100.0)))["produce → portal recorded"] is False
    assert _met(targets.pipeline(_pipeline(events_per_s=3100.0, ratio=0.21)))["produce → portal recorded"] is True
    assert _met(targets.pipeline(_pipeline(router_relay_cpu_ms_per_event=0.51)))["router + relay CPU per event"] is False


def test_p99_is_judged_at_a_steady_1000_per_second_only_and_only_when_the_run_kept_up() -> None:
    steady = _pipeline(offered_rate=1000.0, events_per_s=990.0)
    assert _met(targets.pipeline(steady)) == {"router + relay CPU per event": True, "p99 at a steady 1,000/s": True}
    assert _met(targets.pipeline({**steady, "latency_ms": {"p50": 1.0, "p99": 501.0, "max": 600.0}}))[
        "p99 at a steady 1,000/s"] is False
    assert _met(targets.pipeline({**steady, "events_per_s": 600.0}))["p99 at a steady 1,000/s"] is False  # fell behind
    assert "p99 at a steady 1,000/s" not in _met(targets.pipeline(_pipeline(offered_rate=300.0)))


def test_ingest_needs_both_its_rate_and_half_of_raw_produce_and_analytics_its_rate() -> None:
    assert targets.ingest(10_500, 0.3)[0].met is False
    assert targets.ingest(10_500, 0.5)[0].met is True
    assert targets.analytics(9_000)[0].met is False and targets.analytics(10_000)[0].met is True
