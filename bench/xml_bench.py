"""XML pipeline throughput on one core: ``python -m bench.xml_bench [--seconds N] [--profile]``.

For a one-event envelope and each algorithm it measures parse+validate,
build+validate+sign, sign alone, verify, and raw ``cryptography`` signing of a
SHA-256 digest with the same key. "sign / raw" says how much of a signature's
cost is XML work: 100 % would be none at all.

Each operation is timed on its own (its set-up, such as copying an unsigned
envelope, is outside the clock), so op/s is 1 / mean latency of one process.
"""

from __future__ import annotations

import copy
import cProfile
import hashlib
import pstats
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
from lxml import etree
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from broker.devtools.latency import percentile
from broker.ops import logs
from broker.xml import hardened
from broker.xml.envelope import build_envelope, envelope_document, signed_block
from broker.xml.schemas import Schemas
from broker.xml.signing import Verifier, XmlDsigSigner, keys

EVENT = Path(__file__).resolve().parent.parent / "schemas" / "examples" / "events" / "valid" / "GradePosted.xml"


@dataclass(frozen=True)
class Operation:
    """One measured step: ``setup()`` makes its input off the clock, ``run(input)`` is timed."""

    name: str
    setup: Callable[[], object]
    run: Callable[[object], object]


@dataclass(frozen=True)
class Result:
    algorithm: str
    name: str
    latencies_ns: list[int]

    @property
    def per_second(self) -> float:
        return 1e9 / statistics.fmean(self.latencies_ns)

    def percentile_us(self, q: float) -> float:
        return percentile(self.latencies_ns, q) / 1000


def operations(algorithm: keys.KeyAlgorithm, event: etree._Element, schemas: Schemas) -> list[Operation]:
    key = keys.generate_key(algorithm)
    certificate = keys.self_signed_certificate(key)
    signer = XmlDsigSigner(key, certificate)
    verifier = Verifier([certificate])
    unsigned = build_envelope(event, recipient="EPGU")
    signed = signer.sign(copy.deepcopy(unsigned))
    signed_bytes = hardened.to_bytes(signed)
    digest = hashlib.sha256(signed_bytes).digest()

    def build_validate_sign(_: object) -> etree._Element:
        envelope = build_envelope(event, recipient="EPGU")
        schemas.validate_envelope(envelope)
        return signer.sign(envelope)

    def write_sign(_: object) -> bytes:
        block = signed_block(event, recipient="EPGU")
        return envelope_document(block, signer.signature(block))

    def parse_validate(_: object) -> None:
        schemas.validate_envelope(hardened.parse(signed_bytes))

    if isinstance(key, ec.EllipticCurvePrivateKey):
        def raw_sign(_: object) -> bytes:
            return key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    else:
        def raw_sign(_: object) -> bytes:
            return key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))

    return [
        Operation("parse+validate", lambda: None, parse_validate),
        Operation("build+validate+sign", lambda: None, build_validate_sign),
        Operation("write+sign as bytes (router)", lambda: None, write_sign),
        Operation("sign", lambda: copy.deepcopy(unsigned), signer.sign),
        Operation("verify", lambda: signed, verifier.verify),
        Operation("raw sign", lambda: None, raw_sign),
    ]


def measure(ops: list[Operation], seconds: float, tick: Callable[[int, float], None]) -> list[list[int]]:
    """Latencies of each operation over about ``seconds`` of its own time.

    The operations take turns in short slices, so a neighbour's load on a
    shared machine weighs on all of them alike and the sign / raw ratio stays
    honest even when absolute figures drift.
    """
    for operation in ops:
        for _ in range(50):
            operation.run(operation.setup())
    latencies: list[list[int]] = [[] for _ in ops]
    spent = [0] * len(ops)
    budget, turn = int(seconds * 1e9), int(0.05 * 1e9)
    while min(spent) < budget:
        for index, operation in enumerate(ops):
            slice_end = min(budget, spent[index] + turn)
            while spent[index] < slice_end:
                argument = operation.setup()
                start = time.perf_counter_ns()
                operation.run(argument)
                elapsed = time.perf_counter_ns() - start
                latencies[index].append(elapsed)
                spent[index] += elapsed
            tick(index, spent[index] / 1e9)
    return latencies


def report(results: list[Result], console: Console) -> None:
    table = Table(title="ejx XML pipeline, one core, one-event envelope")
    for column in ("algorithm", "operation", "op/s", "p50 µs", "p99 µs"):
        table.add_column(column, justify="left" if column in ("algorithm", "operation") else "right")
    for result in results:
        table.add_row(result.algorithm, result.name, f"{result.per_second:,.0f}",
                      f"{result.percentile_us(0.5):,.1f}", f"{result.percentile_us(0.99):,.1f}")
    console.print(table)
    for algorithm in dict.fromkeys(r.algorithm for r in results):
        rate = {r.name: r.per_second for r in results if r.algorithm == algorithm}
        console.print(f"{algorithm}: sign / raw = {rate['sign'] / rate['raw sign']:.0%}  "
                      f"(build+validate+sign / raw = {rate['build+validate+sign'] / rate['raw sign']:.0%})")


def profile(operation: Operation, seconds: float, console: Console) -> None:
    """Where one operation's time goes, by own time."""
    profiler = cProfile.Profile()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        argument = operation.setup()
        profiler.enable()
        operation.run(argument)
        profiler.disable()
    console.print(f"\n[bold]profile of {operation.name}[/bold] (own time)")
    pstats.Stats(profiler, stream=console.file).sort_stats("tottime").print_stats(12)


@click.command()
@click.option("--seconds", type=float, default=2.0, show_default=True, help="Measured time per operation.")
@click.option("--event", "event_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=EVENT, show_default=True, help="The event put in the envelope.")
@click.option("--profile", "profiled", is_flag=True, help="Also profile sign and verify for each algorithm.")
def main(seconds: float, event_file: Path, profiled: bool) -> None:
    """Measure the XML pipeline of ejx on one core."""
    logs.configure("warning")
    console = Console()
    schemas = Schemas.load()
    event = hardened.parse(event_file.read_bytes())
    schemas.validate_event(event)
    plans = {algorithm: operations(algorithm, event, schemas)  # GOST signs SMEV 3 messages: smev3_sign_bench
             for algorithm in keys.KeyAlgorithm if not algorithm.is_gost}
    results = []
    with Progress(TextColumn("{task.description:<28}"), BarColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as progress:
        for algorithm, ops in plans.items():
            tasks = [progress.add_task(f"{algorithm.value} {op.name}", total=seconds) for op in ops]
            latencies = measure(ops, seconds, lambda index, done: progress.update(tasks[index], completed=done))
            results += [Result(algorithm.value, op.name, lat) for op, lat in zip(ops, latencies)]
    report(results, console)
    if profiled:
        for algorithm, ops in plans.items():
            for operation in ops:
                if operation.name in ("sign", "verify"):
                    console.print(f"[bold]{algorithm.value}[/bold]")
                    profile(operation, seconds, console)


if __name__ == "__main__":
    main()
