"""The performance targets set for this 2-core machine, shown by the benchmark that measures each.

A bench prints a target beside its figures (met or not: a bench measures, it does not fail on a
target) and writes it under ``targets`` with ``--json``, so a run says for itself where ejx stands.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from rich.table import Table

THROUGHPUT_EVENTS_PER_S = 3_000
THROUGHPUT_RATIO = 0.2
ROUTER_RELAY_CPU_MS = 0.5
STEADY_RATE = 1_000
STEADY_P99_MS = 500
INGEST_EVENTS_PER_S = 10_000
INGEST_RATIO = 0.5
ANALYTICS_EVENTS_PER_S = 10_000


@dataclass(frozen=True)
class Target:
    """One target as a run measured it."""

    name: str
    goal: str
    measured: str
    met: bool


def pipeline(figures: dict) -> list[Target]:
    """Throughput under a backlog, ejx's own CPU, and p99 at a steady 1,000/s or more."""
    targets = [Target("router + relay CPU per event", f"≤ {ROUTER_RELAY_CPU_MS} ms",
                      f"{figures['router_relay_cpu_ms_per_event']:.3f} ms",
                      figures["router_relay_cpu_ms_per_event"] <= ROUTER_RELAY_CPU_MS)]
    if figures["offered_rate"] is None:
        targets.insert(0, Target(
            "produce → portal recorded", f"≥ {THROUGHPUT_EVENTS_PER_S:,} events/s, ratio ≥ {THROUGHPUT_RATIO}",
            f"{figures['events_per_s']:,.0f} events/s, ratio {figures['ratio']:.3f}",
            figures["events_per_s"] >= THROUGHPUT_EVENTS_PER_S and figures["ratio"] >= THROUGHPUT_RATIO))
    elif figures["offered_rate"] >= STEADY_RATE:
        p99 = figures["latency_ms"]["p99"]
        targets.append(Target(f"p99 at a steady {STEADY_RATE:,}/s", f"≤ {STEADY_P99_MS} ms", f"{p99:,.0f} ms",
                              p99 <= STEADY_P99_MS and figures["events_per_s"] >= 0.95 * figures["offered_rate"]))
    return targets


def ingest(events_per_s: float, ratio: float) -> list[Target]:
    return [Target("REST ingest, batches of 100", f"≥ {INGEST_EVENTS_PER_S:,} events/s, ratio ≥ {INGEST_RATIO}",
                   f"{events_per_s:,.0f} events/s, ratio {ratio:.2f}",
                   events_per_s >= INGEST_EVENTS_PER_S and ratio >= INGEST_RATIO)]


def analytics(events_per_s: float) -> list[Target]:
    return [Target("analytics projections", f"≥ {ANALYTICS_EVENTS_PER_S:,} events/s", f"{events_per_s:,.0f} events/s",
                   events_per_s >= ANALYTICS_EVENTS_PER_S)]


def table(targets: Iterable[Target]) -> Table:
    shown = Table(title="targets on this machine")
    for column in ("target", "goal", "this run", ""):
        shown.add_column(column)
    for target in targets:
        shown.add_row(target.name, target.goal, target.measured, "[green]met[/]" if target.met else "[red]not met[/]")
    return shown


def as_json(targets: Iterable[Target]) -> list[dict]:
    return [asdict(target) for target in targets]
