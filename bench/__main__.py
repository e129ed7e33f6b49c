"""``python -m bench`` (``make bench``): every benchmark, one after another, each beside its raw baseline.

Each bench is its own module and can run alone (``python -m bench.xml_bench --help``).
They need the local Kafka and PostgreSQL (``ejx infra up``), except model and xml.
"""

from __future__ import annotations

import subprocess
import sys

BENCHES = (
    ("model", ["bench.model_bench", "--repeat", "7"]),
    ("xml (parse, sign, verify vs raw cryptography)", ["bench.xml_bench", "--seconds", "2"]),
    ("SMEV transform (vs lxml exc-c14n)", ["bench.transform_bench"]),
    ("GOST R 34.10-2012 (vs the same EVP calls in C)", ["bench.gost_bench"]),
    ("SMEV 3 XML-DSig, GOST (vs raw sign/verify of the SignedInfo in C)", ["bench.smev3_sign_bench"]),
    ("SMEV 3 GetRequest → Ack (vs the queue's bare take → ack)", ["bench.smev3_bench"]),
    ("e-diary over SMEV 3, 100,000 pupils (vs the bare projection read)", ["bench.diary_bench"]),
    ("ingest, 2 processes on one port (REST API vs raw aiokafka produce)",
     ["bench.ingest_bench", "--requests", "300", "--processes", "2"]),
    ("analytics, 3 processes (projections vs raw consume)", ["bench.analytics_bench", "--events", "20000"]),
    ("pipeline, separate processes, a backlog (produce → portal receiver vs raw produce→consume)",
     ["bench.pipeline_bench", "--max", "--events", "10000"]),
    ("pipeline, separate processes, a steady 1,000 events/s (latency)",
     ["bench.pipeline_bench", "--rate", "1000", "--seconds", "20"]),
    ("message log (chained appends vs raw batched INSERT)", ["bench.message_log_bench"]),
)


def main() -> int:
    failed = []
    for title, argv in BENCHES:
        print(f"\n=== {title}", flush=True)
        if subprocess.run([sys.executable, "-m", *argv]).returncode != 0:
            failed.append(title)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
