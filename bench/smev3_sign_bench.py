"""SMEV 3 signatures on one core: ``python -m bench.smev3_sign_bench [--seconds N] [--repeat N]``.

Signs a SenderProvidedRequestData (a canonical event inside, as ejx hands it out)
with ``sign_reference`` and checks it with ``verify_reference``: each call does the
whole XML-DSig job (SMEV transform and Streebog digest of the element, SignedInfo
built and canonicalized, GOST R 34.10-2012 over it, for verify also the Id lookup
and certificate). Beside it, the raw engine signing and verifying a SignedInfo-sized
input from a C loop (``bench.gost_bench``'s baseline), so "ejx / raw" is what the
XML work and the Python layer leave of the native signature rate.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import click

from bench.gost_bench import per_second, raw_rates
from broker.smev3 import codec
from broker.xml import hardened
from broker.xml.signing import SigningKey, gost, sign_reference, verify_reference
from broker.xml.signing.algorithms import exclusive_c14n

EVENT = Path(__file__).resolve().parents[1] / "schemas" / "examples" / "events" / "valid" / "GradePosted.xml"


def signed_request(key: SigningKey):
    """A 1.2 SendRequestRequest whose SenderProvidedRequestData carries its sender signature."""
    version = codec.Version.V1_2
    data = codec.sender_provided_request_data(version, message_id=str(uuid.uuid1()), transaction_code="EJX",
                                              content=hardened.parse(EVENT.read_bytes()))
    unsigned = codec.send(version, data)
    slot = codec.attach_signature(unsigned.envelope[0][0], "CallerInformationSystemSignature",
                                  sign_reference(unsigned.target, key))
    return unsigned.target, slot[0]


@click.command()
@click.option("--seconds", default=0.5, show_default=True, help="Time per measurement.")
@click.option("--repeat", default=3, show_default=True, help="Measurements per side; the best counts.")
def main(seconds: float, repeat: int) -> None:
    key_pem, cert_pem = gost.generate_key_and_certificate("ejx SMEV 3 bench")
    key = SigningKey.from_pem(key_pem, cert_pem)
    target, signature = signed_request(key)
    signed_info = exclusive_c14n(signature[0])
    ejx, raw = [0.0, 0.0], [0.0, 0.0]
    with tempfile.TemporaryDirectory() as workdir:
        (Path(workdir) / "key.pem").write_bytes(key_pem)
        for _ in range(repeat):
            ejx = [max(best, rate) for best, rate in zip(ejx, (
                per_second(lambda: sign_reference(target, key), seconds),
                per_second(lambda: verify_reference(signature), seconds)))]
            measured = raw and raw_rates(Path(workdir), Path(workdir) / "key.pem", len(signed_info), seconds)
            raw = measured and [max(best, rate) for best, rate in zip(raw, measured[:2])]
    print(f"SenderProvidedRequestData: {len(hardened.to_bytes(target))} B, canonical SignedInfo: "
          f"{len(signed_info)} B")
    print(f"{'operation':>24} {'ejx op/s':>10} {'raw op/s':>10} {'ejx / raw':>9}")
    for i, name in enumerate(("sign_reference (GOST)", "verify_reference (GOST)")):
        baseline = f"{raw[i]:>10.0f} {ejx[i] / raw[i]:>8.0%}" if raw else f"{'-':>10} {'-':>9}"
        print(f"{name:>24} {ejx[i]:>10.0f} {baseline}")


if __name__ == "__main__":
    main()
