"""The chaos report: per destination what was acknowledged, received, lost or doubled; kills by target.

Counted from the reference receivers' durable records, matched by the event id the
signed content carries: *lost* = acknowledged but never received, *doubled* = one
event under two MessageIDs (a receiver's dedup by MessageID cannot catch that),
*repeats* = the same MessageID again (harmless: receivers dedup it). Loss,
doubling, a refused signature or a target of the plan never killed fails the run.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

from rich.console import Console
from rich.table import Table

from broker.devtools.chaos.resources import Sample


@dataclass(frozen=True)
class Receipt:
    """One MessageID a receiver recorded."""

    receiver: str
    event_id: uuid.UUID | None
    message_id: uuid.UUID
    copies: int


@dataclass(frozen=True)
class DestinationFigures:
    acknowledged: int
    received: int
    lost: int
    doubled: int
    repeats: int
    bad_signatures: int
    dead_rows: int
    pending_rows: int
    """Outbox rows still undelivered at the count: a loss with pending rows is a drain cut short, not a row gone."""
    drain_s: float | None
    """Seconds from the end of the load until the last acknowledged event arrived; None if it never did."""


def destination_figures(expected: Mapping[str, set[uuid.UUID]], receipts: Iterable[Receipt], *,
                        bad_signatures: Mapping[str, int], dead_rows: Mapping[str, int],
                        pending_rows: Mapping[str, int],
                        drain_s: Mapping[str, float | None]) -> dict[str, DestinationFigures]:
    """Per destination, from what it had to receive and what its receiver recorded."""
    messages: dict[str, dict[uuid.UUID, set[uuid.UUID]]] = defaultdict(lambda: defaultdict(set))
    repeats: dict[str, int] = defaultdict(int)
    for receipt in receipts:
        if receipt.event_id is not None:
            messages[receipt.receiver][receipt.event_id].add(receipt.message_id)
        repeats[receipt.receiver] += receipt.copies - 1
    out = {}
    for destination, wanted in sorted(expected.items()):
        seen = messages[destination]
        received = sum(1 for event_id in wanted if event_id in seen)
        out[destination] = DestinationFigures(
            acknowledged=len(wanted), received=received, lost=len(wanted) - received,
            doubled=sum(1 for event_id in wanted if len(seen.get(event_id, ())) > 1),
            repeats=repeats[destination], bad_signatures=bad_signatures.get(destination, 0),
            dead_rows=dead_rows.get(destination, 0), pending_rows=pending_rows.get(destination, 0),
            drain_s=drain_s.get(destination))
    return out


@dataclass
class ChaosReport:
    """One run, as printed and as ``--json``."""

    options: dict
    destinations: dict[str, DestinationFigures] = field(default_factory=dict)
    kills: dict[str, int] = field(default_factory=dict)
    faults: list[dict] = field(default_factory=list)
    kafka_nodes_killed: list[dict] = field(default_factory=list)
    """``kafka-broker`` kills: which node and the role it had (leader, controller, follower)."""
    unexpected_exits: dict[str, list[dict]] = field(default_factory=dict)
    """Processes that died without being killed (each one restarted): return code and the log's tail."""
    vendor_retries: dict[str, int] = field(default_factory=dict)
    vendor_posts: int = 0
    dlq_records: int = 0
    load_s: float = 0.0
    elapsed_s: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    """Memory and table sizes at the start, every minute, and at the end."""
    logs: str | None = None
    """Where the processes' logs were kept (a failed run keeps them)."""

    @property
    def problems(self) -> list[str]:
        """Loss, doubling or a refused envelope at any destination, or a target never killed (the run proved
        nothing about it): what makes the run fail."""
        out = [f"{target}: never killed (the run proved nothing about it)"
               for target in self.options.get("targets", []) if not self.kills.get(target)]
        for name, figures in self.destinations.items():
            if figures.lost:
                out.append(f"{name}: {figures.lost} acknowledged event(s) never received"
                           + (f" ({figures.pending_rows} outbox row(s) still pending)" if figures.pending_rows else ""))
            if figures.doubled:
                out.append(f"{name}: {figures.doubled} event(s) received under two MessageIDs")
            if figures.bad_signatures:
                out.append(f"{name}: {figures.bad_signatures} envelope(s) refused (signature or structure)")
        if not self.destinations:
            out.append("nothing was acknowledged")
        return out

    def as_json(self) -> str:
        body = asdict(self)
        body["problems"] = self.problems
        return json.dumps(body, indent=2, ensure_ascii=False)


def render(report: ChaosReport, console: Console) -> None:
    table = Table(title=f"ejx chaos: {report.options.get('events')} events, seed {report.options.get('seed')}, "
                        f"load {report.load_s:.0f} s, total {report.elapsed_s:.0f} s")
    columns = ("destination", "acknowledged", "received", "lost", "doubled", "repeats", "bad signatures",
               "dead rows", "pending rows", "time to drain")
    for column in columns:
        table.add_column(column, justify="left" if column == "destination" else "right")
    for name, f in report.destinations.items():
        drain = f"{f.drain_s:.1f} s" if f.drain_s is not None else "never"
        table.add_row(name, f"{f.acknowledged:,}", f"{f.received:,}", _alarm(f.lost), _alarm(f.doubled),
                      f"{f.repeats:,}", _alarm(f.bad_signatures), _alarm(f.dead_rows), f"{f.pending_rows:,}", drain)
    console.print(table)
    kills = ", ".join(f"{name} {count}" for name, count in sorted(report.kills.items())) or "none"
    console.print(f"kills by target: {kills}")
    if report.kafka_nodes_killed:
        roles = Counter(victim["role"] for victim in report.kafka_nodes_killed)
        console.print("kafka nodes killed by role: " + ", ".join(f"{r} {n}" for r, n in sorted(roles.items())))
    exits = ", ".join(f"{name} {len(found)}" for name, found in sorted(report.unexpected_exits.items()))
    console.print(f"unexpected exits: {exits or 'none'}; DLQ records: {report.dlq_records}; "
                  f"vendor POSTs {report.vendor_posts:,}, retried: "
                  f"{', '.join(f'{k} {v}' for k, v in sorted(report.vendor_retries.items())) or 'none'}")
    if len(report.samples) >= 2:
        _render_resources(report.samples[0], report.samples[-1], console)
    for problem in report.problems:
        console.print(f"[red]{problem}[/]")
    if report.logs:
        console.print(f"logs kept in {report.logs}")


def _render_resources(start: Sample, end: Sample, console: Console) -> None:
    table = Table(title=f"resources: start {start.at} vs end {end.at} (Moscow)")
    for column in ("what", "start", "end"):
        table.add_column(column, justify="left" if column == "what" else "right")
    for name in sorted(set(start.rss_kib) | set(end.rss_kib)):
        table.add_row(f"{name} RssAnon", _mib(start.rss_kib.get(name, 0)), _mib(end.rss_kib.get(name, 0)))
    for name in sorted(set(start.tables) | set(end.tables)):
        before, after = start.tables.get(name, {}), end.tables.get(name, {})
        table.add_row(f"{name} rows / size", f"{before.get('rows', 0):,} / {_mib(before.get('bytes', 0) // 1024)}",
                      f"{after.get('rows', 0):,} / {_mib(after.get('bytes', 0) // 1024)}")
    console.print(table)


def _mib(kib: int) -> str:
    return f"{kib / 1024:,.1f} MiB"


def _alarm(count: int) -> str:
    return f"[red]{count:,}[/]" if count else "0"
