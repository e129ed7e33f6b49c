"""The dashboard in a real headless Chromium, served by a real uvicorn, over the hand-computed journal.

The browser signs in with an authority token through the page's own form and
then runs on the session cookie alone (HttpOnly, SameSite=Strict).

Debian's ``chromium`` and ``chromium-driver`` are required: without them the
test fails with the command that installs them (it never downloads a browser).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from broker.access.credentials import Kind
from broker.analytics.api import MonitoringOptions, monitoring_router
from broker.analytics.dashboard import dashboard_router
from broker.ops import metrics
from broker.ops.metrics import health_router
from broker.xml.schemas import Schemas
from consumers.analytics import AnalyticsConsumer
from tests import access_support
from tests.fixtures.analytics.journal import AS_OF, JOURNAL, register
from tests.integration.test_analytics_metrics import add_outbox_rows
from tests.integration.test_analytics_projections import record

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PAGE_LIMIT_S = 60  # a bound on waiting for the page, not an assertion about speed
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,2000")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def browser(profile: str, *, offline: bool = False):  # noqa: ANN201 - a selenium WebDriver
    """Debian's headless Chromium; ``offline`` makes every host but 127.0.0.1 unresolvable.

    The browser runs in a zone far from Moscow (and from UTC), so a time shown in the browser's zone is seen.
    """
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: install Debian's browser with "
                    "`apt-get install -y chromium chromium-driver` (the suite never downloads one)", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    offline_flags = ("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",) if offline else ()
    for flag in (*CHROMIUM_FLAGS, *offline_flags, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), env={**os.environ, "TZ": "America/Vancouver"})
    return webdriver.Chrome(service=service, options=options)


def sign_in(driver, token: str) -> None:  # noqa: ANN001 - a selenium WebDriver
    """Type the token into the sign-in form and send it, as a person would."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, PAGE_LIMIT_S).until(lambda d: d.find_elements(By.ID, "sign-in"))
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "sign-in-submit").click()


def read_page(url: str, token: str) -> dict[str, object]:
    """Everything the test checks, read in one browser session (blocking: run it in a thread)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    profile = tempfile.mkdtemp(prefix="ejx-chromium-")
    driver = browser(profile)
    try:
        def settled(d) -> bool:  # noqa: ANN001
            found = d.find_elements(By.ID, "state")
            return bool(found) and found[0].get_attribute("data-state") in ("ready", "error")

        driver.get(url)
        sign_in(driver, token)
        WebDriverWait(driver, PAGE_LIMIT_S).until(settled)

        def cells(selector: str, key_attribute: str) -> dict[str, dict[str, str]]:
            table = {}
            for tr in driver.find_elements(By.CSS_SELECTOR, selector):
                key = tr.get_attribute(key_attribute)
                table[key] = {td.get_attribute("data-key"): td.text
                              for td in tr.find_elements(By.CSS_SELECTOR, "td[data-key]")}
            return table

        def bars(chart: str) -> dict[str, str]:
            return {g.get_attribute("data-label"): g.get_attribute("data-value")
                    for g in driver.find_elements(By.CSS_SELECTOR, f"#{chart} g[data-label]")}

        seen = {
            "state": driver.find_element(By.ID, "state").get_attribute("data-state"),
            "state_text": driver.find_element(By.ID, "state").text,
            "districts": cells("#district-counts tbody tr[data-district]", "data-district"),
            "schools": cells("#schools tbody tr[data-school]", "data-school"),
            "schools_note": driver.find_element(By.ID, "schools-note").text,
            "outbox": cells("#outbox tbody tr[data-destination]", "data-destination"),
            "lag": [td.text for td in driver.find_elements(By.CSS_SELECTOR, "#consumer-lag td[data-key=lag]")],
            "mean": bars("chart-mean"), "distribution": bars("chart-distribution"),
            "attendance": bars("chart-attendance"),
        }
        # filtering by status happens in the page
        Select(driver.find_element(By.ID, "filter-status")).select_by_value("silent")
        driver.find_element(By.ID, "refresh").click()
        WebDriverWait(driver, PAGE_LIMIT_S).until(
            lambda d: "status=silent" in d.current_url and settled(d)
            and len(d.find_elements(By.CSS_SELECTOR, "#schools tbody tr[data-school]")) == 1)
        seen["silent_only"] = [tr.get_attribute("data-school")
                               for tr in driver.find_elements(By.CSS_SELECTOR, "#schools tbody tr[data-school]")]
        seen["console"] = driver.get_log("browser")
        seen["cookies"] = driver.get_cookies()
        return seen
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


async def test_dashboard_shows_the_journal_without_console_errors(db_settings, db_pool) -> None:  # noqa: ANN001
    await register(db_pool)
    consumer = AnalyticsConsumer(settings=db_settings, pool=db_pool, schemas=Schemas.load())
    for offset, delivery in enumerate(JOURNAL):
        await consumer.handle(record(delivery, offset))
    destination = f"portal-{uuid.uuid4().hex[:6]}"
    await add_outbox_rows(db_pool, destination, pending=4, dead=2, delivered=3)
    lag_topic = f"ejx.events.dashboard-{uuid.uuid4().hex[:6]}"
    metrics.CONSUMER_LAG.labels("analytics", lag_topic, "0").set(7)

    gate = access_support.gate(db_pool)
    app = FastAPI()
    # The journal has a handful of pupils: suppression is off here and tested in tests/security.
    app.include_router(monitoring_router(pool=db_pool, gate=gate, options=MonitoringOptions(min_group=1)))
    app.include_router(health_router(pool=db_pool, probes={}, gate=gate))
    app.include_router(dashboard_router(gate))
    token = await access_support.token(db_pool, Kind.AUTHORITY, "ministry")
    async with serving(app) as base:
        seen = await asyncio.to_thread(
            read_page, f"{base}/dashboard?as_of={AS_OF.isoformat().replace('+', '%2B')}", token)

    assert seen["state"] == "ready", seen["state_text"]
    [cookie] = seen["cookies"]
    assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == ("ejx_session", True, "Strict")
    assert token not in cookie["value"]
    errors = [entry for entry in seen["console"] if entry["level"] in ("SEVERE", "ERROR", "WARNING")]
    assert errors == []
    # counts by status per district (see test_analytics_projections for the arithmetic)
    assert seen["districts"] == {
        "Северный": {"district": "Северный", "live": "0", "silent": "0", "never_connected": "1", "total": "1"},
        "Центральный": {"district": "Центральный", "live": "1", "silent": "1", "never_connected": "0", "total": "2"},
    }
    # times are Moscow's, as the schools keep them: sch-001's last event is 12:00 UTC, sch-002's 09:10 UTC
    assert seen["schools"] == {
        "sch-003": {"school_id": "sch-003", "status": "не подключена", "last_event_at": "—", "events": "0",
                    "events_per_day": "0", "timeliness": "—"},
        "sch-001": {"school_id": "sch-001", "status": "работает", "last_event_at": "09.03.2026, 15:00:00 МСК",
                    "events": "22", "events_per_day": "1,5", "timeliness": "83,3 %"},
        "sch-002": {"school_id": "sch-002", "status": "молчит", "last_event_at": "01.03.2026, 12:10:00 МСК",
                    "events": "3", "events_per_day": "0,21", "timeliness": "50 %"},
    }
    assert seen["schools_note"].startswith("На 10.03.2026, 15:00:00 МСК:")
    assert seen["state_text"].endswith(" МСК")
    assert seen["silent_only"] == ["sch-002"]
    assert seen["outbox"][destination] == {"pending": "4", "dead": "2", "delivered": "3", "rate": "0,05"}
    assert "7" in seen["lag"]
    # MATH (5+5+5+3)/4 and PHYS (4+5)/2; RUS has only pass-fail marks, so no mean
    assert seen["mean"] == {"MATH": "4.5", "PHYS": "4.5"}
    assert seen["distribution"] == {"5": "4", "4": "1", "3": "1", "зач": "1", "незач": "1"}
    assert seen["attendance"] == {"Центральный": "66.7"}  # 4 of 6 attendance marks


async def test_only_the_page_and_its_own_assets_are_served(db_pool) -> None:  # noqa: ANN001
    import httpx

    app = FastAPI()
    app.include_router(dashboard_router(access_support.gate(db_pool)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ejx") as client:
        page = await client.get("/dashboard")
        script = await client.get("/dashboard/static/dashboard.js")
        other = await client.get("/dashboard/static/..%2F__init__.py")
    assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
    assert 'id="sign-in"' in page.text  # no session yet: the sign-in form
    assert "://" not in page.text  # nothing from another origin
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "https://" not in script.text and "http://" not in script.text.replace("http://www.w3.org/2000/svg", "")
    assert other.status_code == 404
