"""The demo's report: what the run generated, what ejx did with it, what the receivers saw."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from rich.console import Console
from rich.table import Table

P50_TARGET_MS = 300
"""The demo's latency goal (accept → received, the whole school day offered at once) on the 2-core machine."""


@dataclass
class DemoReport:
    """What the run generated, what ejx did with it, and what the receivers saw."""

    run_id: str
    generated_valid: int = 0
    accepted: int = 0
    accepted_by_channel: dict[str, int] = field(default_factory=dict)
    expected_rejections: dict[str, int] = field(default_factory=dict)
    rejected_by_code: dict[str, int] = field(default_factory=dict)
    envelopes_signed: int = 0
    expected_deliveries: dict[str, int] = field(default_factory=dict)
    delivered: dict[str, int] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    bad_signatures: dict[str, int] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    events_per_s: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    school_statuses: dict[str, int] = field(default_factory=dict)
    diary_expected: dict[str, int] = field(default_factory=dict)
    """E-diary requests over SMEV 3 the demo makes, by the outcome they must get."""
    diary_requests: dict[str, int] = field(default_factory=dict)
    """Their outcomes as the requester saw them (answered, NO_DATA…)."""
    message_log_checked: int = 0
    message_log_broken: str | None = None
    message_log_verdict: str = ""
    """``ejx log verify``'s line over the run's database."""
    dashboard_url: str = ""
    elapsed_s: float = 0.0

    @property
    def problems(self) -> list[str]:
        """Every way the run broke the contract; empty means the demo passed."""
        found = []
        if self.accepted != self.generated_valid:
            found.append(f"accepted {self.accepted} of {self.generated_valid} valid events")
        if self.rejected_by_code != self.expected_rejections:
            found.append(f"rejections {self.rejected_by_code} differ from the expected {self.expected_rejections}")
        for name, count in self.lost.items():
            if count:
                found.append(f"{count} event(s) lost on the way to {name}")
        for name, count in self.duplicates.items():
            if count:
                found.append(f"{count} duplicate(s) seen by the {name} receiver")
        for name, count in self.bad_signatures.items():
            if count:
                found.append(f"{count} bad signature(s) at the {name} receiver")
        if self.diary_requests != self.diary_expected:
            found.append(f"e-diary requests {self.diary_requests} differ from the expected {self.diary_expected}")
        if self.message_log_broken is not None or not self.message_log_checked:
            found.append(f"message log: {self.message_log_broken or 'no record checked'}")
        return found

    def as_json(self) -> str:
        return json.dumps({**asdict(self), "problems": self.problems}, ensure_ascii=False, indent=2)


def render(report: DemoReport, console: Console) -> None:
    """The report as a table a person reads at a glance."""
    table = Table(title=f"ejx demo {report.run_id}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    rows: Iterator[tuple[str, object]] = iter([
        ("events generated (valid)", report.generated_valid),
        ("events accepted", f"{report.accepted}  {report.accepted_by_channel}"),
        ("rejected, by fault code", f"{report.rejected_by_code}  (expected {report.expected_rejections})"),
        ("envelopes signed", report.envelopes_signed),
        ("delivered (outbox)", report.delivered),
        ("expected deliveries", report.expected_deliveries),
        ("received by receivers", report.received),
        ("duplicates seen by receivers", report.duplicates),
        ("bad signatures", report.bad_signatures),
        ("events lost", report.lost),
        ("throughput", f"{report.events_per_s} events/s (accept → all delivered)"),
        ("latency accept → received", (f"p50 {report.latency_p50_ms} ms, p99 {report.latency_p99_ms} ms  "
                                       f"(target p50 ≤ {P50_TARGET_MS} ms on a 2-core machine: "
                                       f"{'met' if report.latency_p50_ms <= P50_TARGET_MS else 'not met'})")),
        ("school statuses", report.school_statuses),
        ("e-diary requests (SMEV 3)", f"{report.diary_requests}  (expected {report.diary_expected})"),
        ("message log (ejx log verify)", f"{report.message_log_checked} record(s) checked, broken: "
                                         f"{report.message_log_broken or 'none'}"),
        ("dashboard", report.dashboard_url),
        ("elapsed", f"{report.elapsed_s} s"),
    ])
    for label, value in rows:
        table.add_row(label, str(value))
    console.print(table)
    if report.problems:
        console.print("[bold red]FAILED[/]: " + "; ".join(report.problems))
    else:
        console.print("[bold green]OK[/]: nothing lost, nothing doubled, every signature verified")
