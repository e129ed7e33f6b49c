"""The operator dashboard at ``/dashboard``: one static page served from the package, no CDN.

The page reads the monitoring JSON endpoints (``/v1/monitoring/schools``,
``/v1/monitoring/pipeline``, ``/v1/analytics/grades``) and draws its charts
as plain SVG in its own script, so nothing is fetched from anywhere else.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, Response

from broker.infra.http_server import fault_router

# Everything the page needs; nothing else under static/ is served.
ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
# The page loads only its own assets and talks only to its own origin.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                           "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def _read(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def dashboard_router() -> APIRouter:
    """``GET /dashboard`` and its assets under ``/dashboard/static/``."""
    router = fault_router(include_in_schema=False)
    page = _read("index.html")
    assets = {name: _read(name) for name in ASSETS}
    headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff",
               "Cache-Control": "no-cache"}

    @router.get("/dashboard")
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)

    @router.get("/dashboard/static/{name}")
    async def asset(name: str) -> Response:
        if name not in assets:
            raise HTTPException(status_code=404)
        return Response(assets[name], media_type=ASSETS[name], headers=headers)

    return router
