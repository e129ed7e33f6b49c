"""The pure model's wire forms on one core: ``python -m bench.model_bench [--repeat N] [--number N]``.

For the GradePosted example (schemas/examples/events/valid/GradePosted.xml) it
times ``Event.to_xml()``, ``event_from_xml()`` on an element parsed by
:func:`broker.xml.hardened.parse` (parsing is outside the clock), ``event_from_dict()``
and ``event_to_dict()``. Each operation runs ``--repeat`` rounds of ``--number``
calls; a round's mean is one sample, and the median sample is reported, so a
machine loaded by others skews the numbers less than a mean would.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import click

from broker.domain.model import event_from_dict, event_from_xml, event_to_dict
from broker.xml import hardened

EVENT = Path(__file__).resolve().parent.parent / "schemas" / "examples" / "events" / "valid" / "GradePosted.xml"


def median_us(operation: Callable[[], object], *, repeat: int, number: int) -> tuple[float, float]:
    """Median and best of ``repeat`` rounds, in µs per call."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter_ns()
        for _ in range(number):
            operation()
        samples.append((time.perf_counter_ns() - started) / number / 1000)
    return statistics.median(samples), min(samples)


@click.command()
@click.option("--repeat", default=21, show_default=True, help="Rounds per operation.")
@click.option("--number", default=2000, show_default=True, help="Calls per round.")
def main(repeat: int, number: int) -> None:
    """Print µs per call and calls per second for each wire-form operation."""
    element = hardened.parse(EVENT.read_bytes())
    event = event_from_xml(element)
    data = event_to_dict(event)
    operations: dict[str, Callable[[], object]] = {
        "to_xml": event.to_xml,
        "event_from_xml": lambda: event_from_xml(element),
        "event_from_dict": lambda: event_from_dict(data),
        "event_to_dict": lambda: event_to_dict(event),
    }
    click.echo(f"{'GradePosted':<16} {'median µs':>10} {'best µs':>9} {'median /s':>11}")
    for name, operation in operations.items():
        operation()  # warm caches
        median, best = median_us(operation, repeat=repeat, number=number)
        click.echo(f"{name:<16} {median:>10.1f} {best:>9.1f} {1e6 / median:>11,.0f}")


if __name__ == "__main__":
    main()
