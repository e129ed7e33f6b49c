"""The authorities' dashboard at ``/dashboard``: one static page served from the package, no CDN.

Signing in posts an authority token once (a plain form, no script); ejx answers
with a server-side session in an HttpOnly, SameSite=Strict cookie, which the
page's JSON calls (``/v1/monitoring/*``, ``/v1/analytics/grades``) then carry.
The token never reaches the page's script; revoking or rotating it ends its
sessions at once (see :mod:`broker.access.gate`). The page draws its charts as
plain SVG in its own script, so nothing is fetched from anywhere else.
"""

from __future__ import annotations

import html
from importlib import resources
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from broker.access.credentials import Kind
from broker.access.gate import SESSION_COOKIE, Gate
from broker.domain.faults import InvalidContent, NotFound, SenderIsNotRegistered
from broker.infra.http_server import bounded_body, fault_router

# Everything the page needs; nothing else under static/ is served.
ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
# The page loads only its own assets and talks only to its own origin.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                           "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
MAX_FORM_BYTES = 2048
SIGN_IN_NOTE = "Войдите токеном, выданным командой ejx authorities add."


def _read(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def _next_page(value: str | None) -> str:
    """Where to go after signing in: a dashboard address of ours, never another site."""
    if value and value.startswith("/dashboard") and "//" not in value and "\\" not in value:
        return value
    return "/dashboard"


def dashboard_router(gate: Gate) -> APIRouter:
    """``GET /dashboard`` (the page, or the sign-in form), its session, and its assets."""
    router = fault_router(include_in_schema=False)
    page = _read("index.html")
    sign_in_form = _read("signin.html").decode("utf-8")
    assets = {name: _read(name) for name in ASSETS}
    headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff",
               "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}

    def sign_in(target: str, note: str, status: int = 200) -> HTMLResponse:
        body = sign_in_form.replace("{note}", html.escape(note)).replace("{next}", html.escape(_next_page(target)))
        return HTMLResponse(body, status_code=status, headers=headers)

    @router.get("/dashboard")
    async def dashboard(request: Request) -> HTMLResponse:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        try:
            await gate.principal(request, None, sessions=True)
        except SenderIsNotRegistered:
            return sign_in(here, SIGN_IN_NOTE)
        return HTMLResponse(page, headers=headers)

    @router.post("/dashboard/session")
    async def open_session(request: Request) -> Response:
        body = await bounded_body(request, MAX_FORM_BYTES)
        if body is None:
            raise InvalidContent("the sign-in form is too large")
        try:
            form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=4)
        except ValueError:  # parse_qs's "Max number of fields exceeded"
            raise InvalidContent("the sign-in form has more than 4 fields; it needs only token and next") from None
        token = (form.get("token") or [""])[0].strip()
        target = _next_page((form.get("next") or [None])[0])
        try:
            principal = await gate.principal(request, token)
        except SenderIsNotRegistered:
            return sign_in(target, "Токен не подошёл: неизвестен или отозван.", status=401)
        if principal.kind is not Kind.AUTHORITY:
            return sign_in(target, "Это не токен органа управления образованием.", status=403)
        answer = RedirectResponse(target, status_code=303, headers=headers)
        answer.set_cookie(SESSION_COOKIE, gate.sessions.open(principal), max_age=int(gate.sessions.ttl_s),
                          path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return answer

    @router.post("/dashboard/session/end")
    async def close_session(request: Request) -> Response:
        session_id = request.cookies.get(SESSION_COOKIE)
        if session_id:
            gate.sessions.close(session_id)
        answer = RedirectResponse("/dashboard", status_code=303, headers=headers)
        answer.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return answer

    @router.get("/dashboard/static/{name}")
    async def asset(name: str) -> Response:
        if name not in assets:
            raise NotFound(f"no dashboard asset {name[:64]!r}")
        return Response(assets[name], media_type=ASSETS[name], headers=headers)

    return router
