"""``ejx serve`` as a subprocess for the fault tests: its JSON log lines, its exit, its environment."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from broker.settings import Settings

EJX = str(Path(sys.executable).with_name("ejx"))


def environment(settings: Settings, **extra: str) -> dict[str, str]:
    """The EJX_* variables that make a subprocess use ``settings``' database, broker, topics and state."""
    env = {**os.environ, "EJX_DATABASE_URL": settings.database_dsn, "EJX_KAFKA_BOOTSTRAP": settings.kafka_address,
           "EJX_EVENTS_TOPIC": settings.events_topic, "EJX_DLQ_TOPIC": settings.dlq_topic,
           "EJX_INTERAGENCY_TOPIC": settings.interagency_topic, "EJX_STATE_DIR": str(settings.state_dir),
           "EJX_HTTP_PORT": str(settings.http_port), "EJX_LOG_LEVEL": "info", "PYTHONFAULTHANDLER": "1"}
    env.update(extra)
    return env


def mint_keys(state_dir: Path) -> None:
    """ejx's signing key and its SMEV 3 key, as ``ejx keys init`` makes them."""
    env = {**os.environ, "EJX_STATE_DIR": str(state_dir)}
    for extra in ([], ["--dir", str(state_dir / "keys" / "smev")]):
        subprocess.run([EJX, "keys", "init", *extra], env=env, check=True, capture_output=True)


class Served:
    """A running ``ejx serve`` whose stderr (one JSON object per line) is collected as it comes."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen([EJX, "serve", *args], env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def events(self, name: str) -> list[dict]:
        found = []
        for line in list(self.lines):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == name:
                found.append(entry)
        return found

    async def wait_for(self, name: str, *, count: int = 1, timeout: float = 60.0) -> list[dict]:
        """The first ``count`` log entries named ``name``; fails if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while len(found := self.events(name)) < count:
            if self.process.poll() is not None:
                raise AssertionError(f"ejx serve exited ({self.process.returncode}) before {name}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {name} ×{count} within {timeout}s:\n{self.tail()}")
            await asyncio.sleep(0.05)
        return found[:count]

    async def terminate(self, *, within: float) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds to exit). Killed and failed if it takes longer than ``within``."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = await self.exit(within=within)
        return code, time.monotonic() - started

    async def exit(self, *, within: float) -> int:
        try:
            return await asyncio.to_thread(self.process.wait, within)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: every thread's stack in the tail
            await asyncio.to_thread(self.process.wait, 10)
            await asyncio.sleep(0.2)
            raise AssertionError(f"ejx serve did not exit within {within}s:\n{self.tail()}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=5)

    def tail(self, lines: int = 60) -> str:
        return "".join(self.lines[-lines:])
