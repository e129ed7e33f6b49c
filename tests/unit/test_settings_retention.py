"""Retention settings: production refuses a window in which a duplicate could still arrive after its key went."""

from __future__ import annotations

from datetime import timedelta

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from broker.app.bootstrap import relay_options, retention
from broker.app.cli import main
from broker.settings import Settings


def test_defaults_are_safe_and_reach_the_sweep() -> None:
    options = retention(Settings())
    assert options.inbox == timedelta(days=30) and options.ingest_keys == timedelta(days=7)
    assert options.ingest_records == timedelta(days=400) and options.message_origin == timedelta(days=30)


@pytest.mark.parametrize("name", ["outbox_retention_s", "inbox_retention_s", "ingest_key_retention_s"])
def test_production_refuses_a_retention_below_its_minimum(name: str) -> None:
    with pytest.raises(ValidationError, match="safe minimum"):
        Settings(**{name: 60.0})


def test_a_soak_may_go_below_the_minimums_but_never_forget_origins_before_inbox_keys() -> None:
    short = Settings(retention_minimums=False, outbox_retention_s=60, inbox_retention_s=60,
                     message_origin_retention_s=60, ingest_key_retention_s=60, ingest_record_retention_s=60)
    assert retention(short).inbox == timedelta(seconds=60)
    with pytest.raises(ValidationError, match="message_origin_retention_s must be at least inbox_retention_s"):
        Settings(retention_minimums=False, inbox_retention_s=120, message_origin_retention_s=60)
    with pytest.raises(ValidationError, match="ingest_record_retention_s must be at least ingest_key_retention_s"):
        Settings(retention_minimums=False, ingest_key_retention_s=120, ingest_record_retention_s=60)


def test_ejx_relay_takes_the_lease_and_retention_of_settings_as_the_served_relay_does() -> None:
    settings = Settings(relay_lease_s=7.0, outbox_retention_s=7200.0)
    served, command = relay_options(settings), relay_options(settings, batch_size=5, max_attempts=3)
    assert served.lease_s == command.lease_s == 7.0
    assert served.retention == command.retention == retention(settings)
    assert (command.batch_size, command.max_attempts) == (5, 3)


def test_a_bad_setting_is_one_line_naming_its_variable_not_a_traceback(monkeypatch) -> None:
    """EJX_SENDER is every envelope's Sender: one the schema refuses would send every event to the DLQ; a
    mistyped level or address failed only where first used, with a traceback."""
    for variable, value, says in (
            ("EJX_SENDER", "ejx-broker", "EJX_SENDER: 'ejx-broker' is not a mnemonic"),
            ("EJX_OUTBOX_RETENTION_S", "1", "retention below the safe minimum"),
            ("EJX_LOG_LEVEL", "verbose", "EJX_LOG_LEVEL: 'verbose' is not a log level"),
            ("EJX_DATABASE_URL", "ejx@db:5432/ejx", "EJX_DATABASE_URL: not a postgresql:// URL"),
            ("EJX_KAFKA_BOOTSTRAP", "kafka1:9092,kafka2:abc", "EJX_KAFKA_BOOTSTRAP: 'kafka2:abc' is not host:port")):
        result = CliRunner().invoke(main, ["outbox", "status"], env={variable: value})
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("InvalidContent: settings: ") and says in result.stderr, result.stderr
        assert len(result.stderr.splitlines()) == 1
