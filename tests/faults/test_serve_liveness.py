"""``ejx serve`` under PostgreSQL outages: SIGTERM ends it within its grace period even with the database
frozen, and a dependency down at start is waited for (or, with --fail-fast, is an immediate exit); a port
in use is an exit before any component starts.

Each component runs as its own subprocess with PostgreSQL behind the fault proxy, so freezing the proxy
freezes PostgreSQL for that process only (the suite's PostgreSQL is shared and never touched).
"""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from broker.infra import kafka
from tests.delivery_support import event_xml
from tests.faults.serve_support import Served, environment

GRACE_S = 3.0
MARGIN_S = 5.0
"""Python's start-up is not in the measured time; closing pools and clients after the grace is."""


async def _produce(settings, count: int = 3) -> None:
    async with kafka.running(kafka.producer(settings)) as producer:
        for i in range(count):
            await producer.send_and_wait(settings.events_topic, event_xml(f"frozen-{os.getpid()}-{i}"),
                                         key=b"sch-77-0412")


@pytest.mark.parametrize("components", ["relay", "router", "analytics", "all"])
async def test_sigterm_ends_a_component_within_its_grace_while_postgresql_is_frozen(
        serve_settings, pg_proxy, components) -> None:
    env = environment(serve_settings, EJX_SHUTDOWN_GRACE_S=str(GRACE_S), EJX_HTTP_GRACE_S="2")
    args = [] if components == "all" else ["--components", components]
    served = Served(args, env)
    try:
        await served.wait_for("serve.started")
        pg_proxy.freeze()
        await _produce(serve_settings)  # the consumers' next transaction waits on the frozen server
        await asyncio.sleep(1.5)
        code, took = await served.terminate(within=GRACE_S + MARGIN_S + 10)
    finally:
        pg_proxy.thaw()
        served.kill()
    assert code == 0, served.tail()
    assert took < GRACE_S + MARGIN_S, took
    print(f"{components}: SIGTERM with PostgreSQL frozen → exit in {took:.1f} s (grace {GRACE_S:g} s)")


async def test_serve_started_while_postgresql_is_down_waits_for_it(serve_settings, pg_proxy) -> None:
    pg_proxy.refusing = True
    served = Served(["--components", "relay"], environment(serve_settings, EJX_STARTUP_RETRY_CAP_S="1"))
    try:
        tries = await served.wait_for("startup.waiting", count=3, timeout=30)
        assert {entry["dependency"] for entry in tries} == {"postgresql"}
        assert [entry["attempt"] for entry in tries] == [1, 2, 3]
        assert all(entry["retry_in_s"] > 0 for entry in tries)
        pg_proxy.refusing = False
        await served.wait_for("relay.started", timeout=30)
        code, _ = await served.terminate(within=20)
    finally:
        served.kill()
    assert code == 0, served.tail()


async def test_serve_started_while_kafka_is_down_waits_for_it(serve_settings, kafka_bootstrap) -> None:
    from tests.faultproxy import FaultProxy
    host, _, port = kafka_bootstrap.rpartition(":")
    # Only the bootstrap goes through the proxy: once answered, clients follow the broker's advertised
    # address, so the proxy stands for "Kafka down at start", not for an outage later.
    async with FaultProxy(host, int(port)) as kafka_proxy:
        kafka_proxy.refusing = True
        env = environment(serve_settings.model_copy(update={"kafka_bootstrap": kafka_proxy.address}),
                          EJX_STARTUP_RETRY_CAP_S="1")
        served = Served(["--components", "relay"], env)
        try:
            tries = await served.wait_for("startup.waiting", count=2, timeout=40)
            assert {entry["dependency"] for entry in tries} == {"kafka"}
            kafka_proxy.refusing = False
            await served.wait_for("relay.started", timeout=40)
            code, _ = await served.terminate(within=20)
        finally:
            served.kill()
    assert code == 0, served.tail()


async def test_fail_fast_exits_at_once_while_postgresql_is_down(serve_settings, pg_proxy) -> None:
    pg_proxy.refusing = True
    served = Served(["--components", "relay", "--fail-fast"], environment(serve_settings))
    try:
        code = await served.exit(within=20)
    finally:
        served.kill()
    assert code == 1
    assert "unreachable" in served.tail() and not served.events("startup.waiting")


async def test_a_port_in_use_is_a_one_line_exit_before_any_component_starts(serve_settings) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", serve_settings.http_port))
        held.listen()
        served = Served(["--components", "analytics,dashboard"],
                        environment(serve_settings, EJX_HTTP_HOST="127.0.0.1"))
        try:
            code = await served.exit(within=30)
        finally:
            served.kill()
    assert code == 1, served.tail()
    assert served.lines[-1].startswith(f"Failure: cannot listen on 127.0.0.1:{serve_settings.http_port} "), \
        served.tail()
    assert "Traceback" not in served.tail()
    assert not served.events("serve.started") and not served.events("analytics.started")
