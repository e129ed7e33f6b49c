"""The API docs work on a network without internet: /docs and its assets come from ejx itself, and
Swagger UI renders every operation in a headless Chromium that cannot resolve any other host."""

from __future__ import annotations

import asyncio
import shutil
import tempfile

from tests.e2e.test_dashboard import PAGE_LIMIT_S, browser
from tests.security.conftest import Faces, serving


def read_docs(url: str) -> dict[str, object]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    profile = tempfile.mkdtemp(prefix="ejx-chromium-")
    driver = browser(profile, offline=True)
    try:
        driver.get(url)
        WebDriverWait(driver, PAGE_LIMIT_S).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 5)
        return {"paths": [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")],
                "loaded": driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)"),
                "console": driver.get_log("browser")}
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


async def test_docs_render_offline_from_ejx_alone(faces: Faces) -> None:
    async with serving(faces.settings, faces.app) as base:
        seen = await asyncio.to_thread(read_docs, f"{base}/docs")
    assert {"/v1/events", "/v1/analytics/grades", "/metrics"} <= {p.replace("\u200b", "") for p in seen["paths"]}
    assert all(str(name).startswith(base) for name in seen["loaded"]), seen["loaded"]
    assert [e for e in seen["console"] if e["level"] == "SEVERE"] == []
