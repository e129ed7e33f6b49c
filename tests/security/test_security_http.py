"""No client can stall the server for others: slow headers and bodies are cut off, a connection flood
is refused (and logged once per interval) while /healthz answers, one client's requests in flight are
capped, and SIGTERM stops ``ejx serve`` within its grace period."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from structlog.testing import capture_logs

from broker.infra.http_guard import GuardOptions, SlowClientMiddleware
from tests.security.conftest import Faces, serving

FLOOD = 600  # sockets from 127.0.0.2; the per-client cap (256) admits some, refuses the rest


async def _open(port: int, local: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(local, 0))


async def _closed_within(reader: asyncio.StreamReader, limit_s: float) -> tuple[float, bytes]:
    """Seconds until the server closed the connection, and what it said first."""
    started = time.monotonic()
    answer = await asyncio.wait_for(reader.read(), limit_s)
    return time.monotonic() - started, answer


async def test_a_body_trickling_in_is_cut_off(faces: Faces) -> None:
    async with serving(faces.settings, faces.app):
        reader, writer = await _open(faces.settings.http_port)
        writer.write(b"POST /v1/events HTTP/1.1\r\nHost: ejx\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + faces.tokens["vendor"].encode() + b"\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()

        async def trickle() -> None:  # one byte per 10 s, like the attack in the issue
            with_errors = (ConnectionError, OSError)
            try:
                while True:
                    await asyncio.sleep(10)
                    writer.write(b" ")
                    await writer.drain()
            except with_errors:
                return
        trickler = asyncio.create_task(trickle())
        took, answer = await _closed_within(reader, 40)
        trickler.cancel()
        writer.close()
    assert took <= 30, took
    assert answer.startswith(b"HTTP/1.1 408") and b'"InvalidContent"' in answer
    print(f"slow body cut off after {took:.1f} s")


async def test_headers_trickling_in_are_cut_off(faces: Faces) -> None:
    async with serving(faces.settings, faces.app):
        reader, writer = await _open(faces.settings.http_port)

        async def trickle() -> None:  # one byte per second, never finishing the headers
            try:
                for byte in b"GET /healthz HTTP/1.1\r\nHost: ejx\r\nX-Slow: " + b"a" * 100:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(1)
            except (ConnectionError, OSError):
                return
        trickler = asyncio.create_task(trickle())
        took, answer = await _closed_within(reader, 40)
        trickler.cancel()
        writer.close()
    assert took <= 15, took
    assert answer.startswith(b"HTTP/1.1 408")
    print(f"slow headers cut off after {took:.1f} s")


async def test_a_connection_flood_is_refused_while_healthz_answers(faces: Faces) -> None:
    with capture_logs() as logs:
        async with serving(faces.settings, faces.app) as base:
            flood = []
            for _ in range(FLOOD):
                reader, writer = await _open(faces.settings.http_port, local="127.0.0.2")
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: ejx\r\n")  # never finished
                flood.append((reader, writer))
            await asyncio.sleep(0.5)
            started = time.monotonic()
            async with httpx.AsyncClient(base_url=base, timeout=5) as client:
                health = await client.get("/healthz")
            health_s = time.monotonic() - started
            answers = await asyncio.gather(*(asyncio.wait_for(r.read(), 20) for r, _ in flood))
            for _, writer in flood:
                writer.close()
    refused = [a for a in answers if a.startswith(b"HTTP/1.1 429")]
    timed_out = [a for a in answers if a.startswith(b"HTTP/1.1 408")]
    assert health.status_code == 200 and health_s < 2, health_s
    assert len(refused) == FLOOD - 256 and all(b"Retry-After: " in a for a in refused)
    assert len(timed_out) == 256  # the admitted ones, closed at the header deadline
    lines = [e for e in logs if e["event"] == "http.connections_refused"]
    assert 1 <= len(lines) <= 3, lines  # once per interval, not once per refusal
    print(f"flood of {FLOOD}: {len(refused)} refused with 429, {len(timed_out)} cut at the header deadline, "
          f"/healthz in {health_s * 1000:.0f} ms, {len(lines)} log line(s)")


async def test_a_body_with_200000_attributes_is_refused_fast_while_healthz_answers(faces: Faces) -> None:
    """The attack of the issue: 2.3 MB, 200,000 attributes on one element, froze the server for 214 s."""
    body = (b'<GradePosted xmlns="urn://ejx/events/1" '
            + b" ".join(b'a%d="v"' % i for i in range(200_000)) + b"/>")
    async with serving(faces.settings, faces.app) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        started = time.monotonic()
        attack = asyncio.create_task(client.post("/v1/events", content=body, headers={
            "Authorization": f"Bearer {faces.tokens['vendor']}", "Content-Type": "application/xml"}))
        health = await client.get("/healthz")
        health_s = time.monotonic() - started
        answer = await attack
        attack_s = time.monotonic() - started
    assert health.status_code == 200 and health_s < 1.0, health_s
    assert answer.status_code == 400 and answer.json()["code"] == "InvalidContent", answer.text
    assert "attributes" in answer.text
    assert attack_s < 3.0, attack_s  # upload of 2.3 MB on loopback included
    print(f"200,000 attributes refused in {attack_s * 1000:.0f} ms; /healthz meanwhile in {health_s * 1000:.0f} ms")


async def test_one_client_cannot_hold_more_than_its_share_of_requests() -> None:
    release = asyncio.Event()

    async def slow_app(scope, receive, send) -> None:  # noqa: ANN001
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guarded = SlowClientMiddleware(slow_app, GuardOptions(max_requests_per_client=4))

    async def request(client: str) -> int:
        sent = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)
        scope = {"type": "http", "client": (client, 1), "headers": [], "method": "GET", "path": "/"}
        await guarded(scope, receive, send)
        return sent[0]["status"]

    busy = [asyncio.create_task(request("10.0.0.1")) for _ in range(4)]
    await asyncio.sleep(0.05)
    assert await request("10.0.0.1") == 429  # the fifth at once
    other = asyncio.create_task(request("10.0.0.2"))
    release.set()
    assert await asyncio.gather(*busy, other) == [200] * 5


async def test_sigterm_stops_serve_within_its_grace_period(face_settings) -> None:  # noqa: ANN001
    env = {**os.environ, "EJX_DATABASE_URL": face_settings.database_dsn,
           "EJX_KAFKA_BOOTSTRAP": face_settings.kafka_address, "EJX_HTTP_PORT": str(face_settings.http_port),
           "EJX_EVENTS_TOPIC": face_settings.events_topic, "EJX_DLQ_TOPIC": face_settings.dlq_topic,
           "EJX_INTERAGENCY_TOPIC": face_settings.interagency_topic, "EJX_HTTP_GRACE_S": "3"}
    ejx = str(Path(sys.executable).with_name("ejx"))
    process = subprocess.Popen([ejx, "serve", "--components", "ingest,dashboard"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            for _ in range(200):
                try:
                    if (await client.get(f"http://127.0.0.1:{face_settings.http_port}/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        # A request stuck mid-body when the signal comes.
        reader, writer = await _open(face_settings.http_port)
        writer.write(b"POST /v1/events HTTP/1.1\r\nHost: ejx\r\nContent-Length: 50\r\n\r\n{")
        await writer.drain()
        await asyncio.sleep(0.5)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 20)
        took = time.monotonic() - started
        writer.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == 0, process.stderr.read().decode()[-2000:] if process.stderr else code
    assert took < 3 + 5, took
    print(f"SIGTERM → exit in {took:.1f} s")
