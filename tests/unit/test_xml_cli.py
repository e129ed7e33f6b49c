"""The XML commands as operators and scripts use them: exit status, stdout, one fault line on stderr."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from lxml import etree

from broker.app.cli import main
from broker.domain.faults import FAULTS
from broker.xml import hardened

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "schemas" / "examples"
ENVELOPES = EXAMPLES / "envelopes"
TEST_CERT = ENVELOPES / "keys" / "TEST-ONLY-ecdsa.crt"
HOSTILE = sorted(p for p in (EXAMPLES / "hostile").glob("*.xml"))
EJX = Path(sys.executable).with_name("ejx")


@pytest.fixture
def ejx(tmp_path):
    """Run ``ejx`` in-process with a fresh state dir (so keys never leak between tests)."""
    runner = CliRunner()

    def run(*args: str | Path, stdin: bytes | None = None) -> Result:
        return runner.invoke(main, [str(a) for a in args], input=stdin,
                             env={"EJX_STATE_DIR": str(tmp_path / "state"), "EJX_LOG_LEVEL": "warning"})
    return run


def assert_fault(result: Result, code: str) -> str:
    """Exit 1 and exactly one stderr line ``<code>: <description>``, never a traceback."""
    lines = result.stderr.splitlines()
    assert result.exit_code == 1, (result.exit_code, result.stderr, result.exception)
    assert len(lines) == 1 and lines[0].startswith(f"{code}: "), result.stderr
    assert isinstance(result.exception, SystemExit)
    return lines[0]


def event_example() -> Path:
    path = EXAMPLES / "events" / "valid" / "GradePosted.xml"
    assert path.is_file(), f"{path} is missing"
    return path


@pytest.fixture
def keyed(ejx):
    assert ejx("keys", "init").exit_code == 0
    return ejx


# --- keys --------------------------------------------------------------------------------------------

def test_keys_init_writes_a_pair_and_never_overwrites(ejx, tmp_path):
    result = ejx("keys", "init")
    assert result.exit_code == 0, result.stderr
    key, cert = tmp_path / "state" / "keys" / "ejx.key", tmp_path / "state" / "keys" / "ejx.crt"
    assert result.stdout.split() == [str(key), str(cert)]
    assert key.stat().st_mode & 0o077 == 0
    before = key.read_bytes()
    assert "refusing to overwrite" in assert_fault(ejx("keys", "init"), "Failure")
    assert key.read_bytes() == before


def test_keys_init_into_a_directory_it_cannot_create_is_one_fault_line(ejx, tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    line = assert_fault(ejx("keys", "init", "--dir", tmp_path / "a-file" / "keys"), "Failure")
    assert "cannot write a key pair into" in line


def test_keys_init_rsa_into_a_directory(ejx, tmp_path):
    assert ejx("keys", "init", "--dir", tmp_path / "k", "--algorithm", "rsa").exit_code == 0
    assert b"BEGIN PRIVATE KEY" in (tmp_path / "k" / "ejx.key").read_bytes()


# --- build, sign, verify -------------------------------------------------------------------------------

def test_build_sign_verify(keyed, tmp_path):
    built = keyed("envelope", "build", event_example(), "--recipient", "EPGU", "--test")
    assert built.exit_code == 0, built.stderr
    unsigned = tmp_path / "unsigned.xml"
    unsigned.write_bytes(built.stdout_bytes)
    assert keyed("validate", unsigned).exit_code == 0

    signed = keyed("envelope", "sign", unsigned)
    assert signed.exit_code == 0, signed.stderr
    signed_path = tmp_path / "signed.xml"
    signed_path.write_bytes(signed.stdout_bytes)

    verified = keyed("verify", signed_path)
    assert verified.exit_code == 0, verified.stderr
    message_id = hardened.parse(built.stdout_bytes).findtext(".//{urn://ejx/envelope/1}MessageID")
    assert verified.stdout.strip() == message_id
    assert hardened.parse(built.stdout_bytes).find(".//{urn://ejx/envelope/1}TestMessage") is not None


def test_pipeline_through_stdin(keyed):
    built = keyed("envelope", "build", event_example(), "--recipient", "RSMEV")
    signed = keyed("envelope", "sign", "-", stdin=built.stdout_bytes)
    assert keyed("verify", "-", stdin=signed.stdout_bytes).exit_code == 0


def test_signed_output_is_not_reindented(keyed):
    """Pretty-printing after signing would change signed whitespace-free bytes of the Signature."""
    built = keyed("envelope", "build", event_example(), "--recipient", "EPGU")
    signed = keyed("envelope", "sign", "-", stdin=built.stdout_bytes).stdout_bytes
    assert signed.startswith(built.stdout_bytes.split(b"</SenderProvidedData>")[0])


def test_verify_refuses_a_tampered_envelope(keyed):
    built = keyed("envelope", "build", event_example(), "--recipient", "EPGU")
    signed = keyed("envelope", "sign", "-", stdin=built.stdout_bytes).stdout_bytes
    tampered = signed.replace(b"<Recipient>EPGU</Recipient>", b"<Recipient>EVIL</Recipient>")
    assert tampered != signed
    assert_fault(keyed("verify", "-", stdin=tampered), "SignatureVerificationFault")


def test_verify_refuses_an_untrusted_signer(keyed, tmp_path):
    built = keyed("envelope", "build", event_example(), "--recipient", "EPGU")
    signed = keyed("envelope", "sign", "-", stdin=built.stdout_bytes).stdout_bytes
    keyed("keys", "init", "--dir", tmp_path / "other")
    line = assert_fault(keyed("verify", "-", "--trust", tmp_path / "other" / "ejx.crt", stdin=signed),
                        "SignatureVerificationFault")
    assert "neither pinned nor issued" in line


def test_sign_with_explicit_key_and_cert(ejx, tmp_path):
    ejx("keys", "init", "--dir", tmp_path / "k", "--algorithm", "rsa")
    built = ejx("envelope", "build", event_example(), "--recipient", "EPGU")
    signed = ejx("envelope", "sign", "-", "--key", tmp_path / "k" / "ejx.key", "--cert", tmp_path / "k" / "ejx.crt",
                 stdin=built.stdout_bytes)
    assert signed.exit_code == 0, signed.stderr
    assert ejx("verify", "-", "--trust", tmp_path / "k" / "ejx.crt", stdin=signed.stdout_bytes).exit_code == 0


# --- failures are one line --------------------------------------------------------------------------------

def test_missing_files_are_fault_lines(ejx, tmp_path):
    missing = tmp_path / "nope.xml"
    for args in (("validate", missing), ("verify", missing), ("envelope", "build", missing, "--recipient", "EPGU"),
                 ("envelope", "sign", missing)):
        assert_fault(ejx(*args), "Failure")
    built = ejx("envelope", "build", event_example(), "--recipient", "EPGU")
    assert "signing key" in assert_fault(ejx("envelope", "sign", "-", stdin=built.stdout_bytes), "Failure")


def test_validate_takes_what_is_not_an_envelope_for_an_event_document(ejx):
    assert ejx("validate", event_example()).exit_code == 0
    assert_fault(ejx("validate", "-", stdin=b"<x xmlns='urn:other'/>"), "UnknownMessageType")
    assert "must be in namespace" in assert_fault(
        ejx("validate", "-", stdin=b"<GradePosted xmlns='urn:other'/>"), "InvalidContent")


EVENT_EXAMPLES = EXAMPLES / "events"
INVALID_EVENTS = sorted((EVENT_EXAMPLES / "invalid").glob("*.xml"))
VALID_EVENTS = sorted((EVENT_EXAMPLES / "valid").glob("*.xml"))


def test_event_examples_are_there():
    assert len(INVALID_EVENTS) >= 20 and len(VALID_EVENTS) >= 12
    assert {p.name for p in INVALID_EVENTS} >= {  # once said "valid" or the wrong code
        "InvalidContent--due-before-lesson.xml", "InvalidContent--academic-year-not-consecutive.xml",
        "InvalidContent--minutes-late-when-present.xml", "InvalidContent--no-namespace.xml"}


@pytest.mark.parametrize("example", INVALID_EVENTS, ids=lambda p: p.name)
def test_validate_gives_an_invalid_event_the_fault_in_its_name(ejx, example):
    """``ejx validate`` applies the checks ejx applies to received event bytes, model rules included."""
    code = example.name.split("--")[0]
    assert code in FAULTS
    assert_fault(ejx("validate", example), code)


@pytest.mark.parametrize("example", VALID_EVENTS, ids=lambda p: p.name)
def test_validate_passes_every_valid_event(ejx, example):
    result = ejx("validate", example)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{example}: valid {example.stem.split('-')[0]}\n"


def test_build_refuses_an_invalid_event_or_recipient(ejx):
    assert_fault(ejx("envelope", "build", "-", "--recipient", "EPGU",
                     stdin=b"<GradePosted xmlns='urn://ejx/events/1'/>"), "InvalidContent")
    assert_fault(ejx("envelope", "build", event_example(), "--recipient", "not a mnemonic"), "InvalidContent")


# --- the envelope examples --------------------------------------------------------------------------------

EXAMPLE_FILES = sorted(ENVELOPES.glob("*.xml"))


def test_examples_cover_each_message_type_signed_and_unsigned():
    names = {p.name for p in EXAMPLE_FILES}
    for kind in ("request", "response", "broadcast"):
        assert {f"{kind}-unsigned.xml", f"{kind}-signed.xml"} <= names
    assert {p.name.split("--")[0] for p in EXAMPLE_FILES if "--" in p.name} >= {
        "InvalidContent", "SignatureVerificationFault", "UnknownMessageType"}


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=lambda p: p.name)
def test_envelope_example_behaves_as_its_name_says(ejx, example):
    """Valid examples pass (signed ones also ``verify``); ``<Fault>--*.xml`` fail ``verify`` with that fault."""
    if "--" in example.name:
        code = example.name.split("--")[0]
        assert code in FAULTS
        assert_fault(ejx("verify", example, "--trust", TEST_CERT), code)
        if code != "SignatureVerificationFault":
            assert_fault(ejx("validate", example), code)
        return
    assert ejx("validate", example).exit_code == 0, ejx("validate", example).stderr
    verified = ejx("verify", example, "--trust", TEST_CERT)
    if example.name.endswith("-unsigned.xml"):
        assert_fault(verified, "SignatureVerificationFault")
    else:
        assert verified.exit_code == 0, verified.stderr
        message_id = hardened.parse(example.read_bytes()).findtext(".//{urn://ejx/envelope/1}MessageID")
        assert verified.stdout.strip() == message_id


# --- hostile input ---------------------------------------------------------------------------------------

def generated_hostile(tmp_path: Path) -> list[Path]:
    """The corpus' too-large-for-git members."""
    files = {
        "deep.xml": b"<a>" * 100_000 + b"</a>" * 100_000,
        "huge-text.xml": b"<a>" + b"x" * 50_000_000 + b"</a>",
        "many-elements.xml": b"<a>" + b"<b/>" * 60_000 + b"</a>",
        "long-attribute.xml": b'<a v="' + b"x" * 70_000 + b'"/>',
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return [tmp_path / name for name in files]


COMMANDS = [("validate",), ("verify",), ("envelope", "build", "--recipient", "EPGU"), ("envelope", "sign")]


def test_hostile_corpus_is_present():
    assert len(HOSTILE) >= 10, "schemas/examples/hostile is missing"


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_every_command_refuses_hostile_input_fast(keyed, tmp_path, command):
    for path in HOSTILE + generated_hostile(tmp_path):
        args = [*command[:2], path, *command[2:]] if command[0] == "envelope" else [*command, path]
        started = time.perf_counter()
        result = keyed(*args)
        assert time.perf_counter() - started < 1.0, path.name
        assert_fault(result, "InvalidContent")


# Measures a grandchild: a child forked straight from pytest would count pytest's own memory as its peak.
_MEASURE = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
stderr = child.stderr.read()
_, status, usage = os.wait4(child.pid, 0)
sys.stderr.buffer.write(stderr)
print(usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def peak_rss_mib(*args: str | Path, env: dict[str, str]) -> tuple[int, str, float]:
    """Run ``ejx`` in a process of its own: exit status, stderr and peak resident memory."""
    result = subprocess.run([sys.executable, "-c", _MEASURE, str(EJX), *map(str, args)], capture_output=True,
                            text=True, env=env, timeout=60)
    return result.returncode, result.stderr, int(result.stdout) / 1024


def test_hostile_input_costs_little_memory(tmp_path):
    """Memory bombs in real processes (libxml2 allocates outside tracemalloc's view), against a valid event."""
    env = {"EJX_STATE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    status, stderr, baseline = peak_rss_mib("validate", event_example(), env=env)
    assert status == 0, stderr
    bombs = [p for p in HOSTILE if p.stem in {"billion-laughs", "quadratic-blowup"}] + generated_hostile(tmp_path)
    assert len(bombs) == 6
    for path in bombs:
        started = time.perf_counter()
        status, stderr, peak = peak_rss_mib("validate", path, env=env)
        assert status == 1 and stderr.startswith("InvalidContent: ") and stderr.count("\n") == 1, (path.name, stderr)
        assert peak - baseline < 32, f"{path.name} took {peak - baseline:.0f} MiB more than a valid event"
        assert time.perf_counter() - started < 10, f"{path.name}: slow even counting interpreter start-up"


def test_no_command_prints_a_traceback_for_garbage(keyed):
    for command in COMMANDS:
        args = [*command[:2], "-", *command[2:]] if command[0] == "envelope" else [*command, "-"]
        result = keyed(*args, stdin=b"\x00\xff garbage")
        assert "Traceback" not in result.stderr
        assert_fault(result, "InvalidContent")


def test_emitted_documents_parse_with_the_hardened_parser(keyed):
    built = keyed("envelope", "build", event_example(), "--recipient", "EPGU").stdout_bytes
    assert built.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    assert isinstance(hardened.parse(built), etree._Element)
