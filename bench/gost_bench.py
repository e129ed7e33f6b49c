"""GOST speed on one core: ``python -m bench.gost_bench [--seconds N] [--repeat N]``.

For a 32-byte input (a digest's size) and a ~1.5 KB one (a SignedInfo-sized
document) it measures ejx's ``GostPrivateKey.sign``, ``GostCertificate.verify``
and ``streebog256`` beside the raw engine: the same libcrypto calls from a tiny
C loop, compiled here with ``cc`` (needs libssl-dev). "ejx / raw" is what the
Python and ctypes layer leaves of native speed.

Why a C loop and not the openssl CLI: OpenSSL 3.0's ``dgst`` signs or verifies
one file per process ("Can only sign or verify one file"), and ``openssl speed``
knows no gost2012_256, so process start-up and key loading would swamp a
0.1 ms signature. A ctypes loop would share ejx's own overhead and prove nothing.

The machine is shared, so each side runs ``--repeat`` times, alternating, and
its best rate counts.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click

from broker.xml.signing.gost import (
    GostCertificate,
    GostPrivateKey,
    generate_key_and_certificate,
    streebog256,
)

RAW_C = r"""
#include <openssl/engine.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {  /* raw key.pem size seconds: prints sign/s verify/s digest/s */
    ENGINE *e = ENGINE_by_id("gost");
    if (!e || !ENGINE_init(e) || !ENGINE_set_default(e, ENGINE_METHOD_ALL)) return 2;
    FILE *f = fopen(argv[1], "r"); EVP_PKEY *key = PEM_read_PrivateKey(f, NULL, NULL, ""); fclose(f);
    const EVP_MD *md = EVP_get_digestbyname("md_gost12_256");
    size_t n = atoi(argv[2]), siglen = 64; double seconds = atof(argv[3]), rate[3];
    unsigned char *data = calloc(n, 1), sig[64], digest[32];
    for (int op = 0; op < 3; op++) {
        long count = 0; double start = now(), end = start + seconds;
        while (now() < end) for (int i = 0; i < 20; i++, count++) {
            EVP_MD_CTX *ctx = op < 2 ? EVP_MD_CTX_new() : NULL; int ok = 1;
            if (op == 0) ok = EVP_DigestSignInit(ctx, NULL, md, NULL, key) == 1
                              && EVP_DigestSign(ctx, sig, &siglen, data, n) == 1;
            if (op == 1) ok = EVP_DigestVerifyInit(ctx, NULL, md, NULL, key) == 1
                              && EVP_DigestVerify(ctx, sig, siglen, data, n) == 1;
            if (op == 2) ok = EVP_Digest(data, n, digest, NULL, md, NULL) == 1;
            EVP_MD_CTX_free(ctx);
            if (!ok) return 3;
        }
        rate[op] = count / (now() - start);
    }
    printf("%.0f %.0f %.0f\n", rate[0], rate[1], rate[2]);
    return 0;
}
"""


def per_second(operation: Callable[[], object], seconds: float) -> float:
    count, start = 0, time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        for _ in range(20):
            operation()
        count += 20
    return count / (time.perf_counter() - start)


def raw_rates(workdir: Path, key_pem: Path, size: int, seconds: float) -> list[float] | None:
    binary = workdir / "gost_raw"
    if not binary.exists():
        cc = shutil.which("cc")
        built = cc and subprocess.run([cc, "-O2", "-x", "c", "-", "-o", str(binary), "-lcrypto"],
                                      input=RAW_C, text=True, capture_output=True)
        if not built or built.returncode != 0:
            print(f"raw baseline unavailable (needs cc and libssl-dev): {built.stderr if built else 'no cc'}",
                  file=sys.stderr)
            return None
    done = subprocess.run([str(binary), str(key_pem), str(size), str(seconds)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the raw baseline failed (exit {done.returncode}): {done.stderr}")
    return [float(rate) for rate in done.stdout.split()]


@click.command()
@click.option("--seconds", default=0.5, show_default=True, help="Time per measurement.")
@click.option("--repeat", default=3, show_default=True, help="Measurements per side; the best counts.")
def main(seconds: float, repeat: int) -> None:
    key_pem, cert_pem = generate_key_and_certificate("ejx GOST bench")
    key, certificate = GostPrivateKey.from_pem(key_pem), GostCertificate.from_pem(cert_pem)
    print(f"{'input':>8} {'operation':>10} {'ejx op/s':>10} {'raw op/s':>10} {'ejx / raw':>9}")
    with tempfile.TemporaryDirectory() as workdir:
        (Path(workdir) / "key.pem").write_bytes(key_pem)
        for size in (32, 1500):
            data = bytes(size)  # zeros, as the C loop signs
            signature = key.sign(data)
            ejx, raw = [0.0] * 3, [0.0] * 3
            for _ in range(repeat):
                ejx = [max(best, rate) for best, rate in zip(ejx, (
                    per_second(lambda: key.sign(data), seconds),
                    per_second(lambda: certificate.verify(data, signature), seconds),
                    per_second(lambda: streebog256(data), seconds)))]
                measured = raw and raw_rates(Path(workdir), Path(workdir) / "key.pem", size, seconds)
                raw = measured and [max(best, rate) for best, rate in zip(raw, measured)]
            for i, name in enumerate(("sign", "verify", "streebog")):
                baseline = f"{raw[i]:>10.0f} {ejx[i] / raw[i]:>8.0%}" if raw else f"{'-':>10} {'-':>9}"
                print(f"{size:>6} B {name:>10} {ejx[i]:>10.0f} {baseline}")


if __name__ == "__main__":
    main()
