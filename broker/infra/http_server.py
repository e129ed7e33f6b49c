"""The one way ejx answers a fault over HTTP, used by every router through :func:`fault_router`.

Status, headers and body are all derived from the fault. A route raises faults
and never builds error answers itself; the route class catches them, turns an
infrastructure outage into a retriable Failure (503 + Retry-After, no host
named), and gives FastAPI's own request-validation errors ejx's fault shape.
:func:`install_fault_answers` does the same for what happens outside routes
(unknown paths, wrong methods) and keeps the OpenAPI document honest: every
status a route can answer is declared with the fault body, and FastAPI's 422
(which ejx never sends) is not.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from broker.domain.faults import Fault, InvalidContent, NotFound
from broker.infra.postgres import outage_as_failure

RETRY_AFTER_S = 5
"""What a retriable fault tells the client to wait, in seconds."""

FAULT_STATUSES = {
    400: "InvalidContent: the request is malformed, invalid or out of range (never worth repeating as is).",
    401: "SenderIsNotRegistered: the credential is missing, unknown or revoked.",
    403: "AccessDenied: the credential is of another kind, or the resource is outside its scope.",
    404: "NotFound: nothing by that name.",
    405: "InvalidContent: the method is not allowed here.",
    408: "InvalidContent: the request did not arrive in time.",
    413: "InvalidContent: the body is over the size limit.",
    415: "InvalidContent: the content type is not accepted.",
    429: "TooManyRequests (retriable): too many requests at once or too many bad tokens; see Retry-After.",
    503: "Failure (retriable): a dependency is unavailable or the server is busy; see Retry-After.",
}
COMMON_STATUSES = (400, 408, 429, 503)
"""What any route may answer: a bad request, a slow one, a busy client or a busy server."""
CREDENTIAL_STATUSES = (401, 403)
"""What a route answers that needs a credential."""


class FaultBody(BaseModel):
    """Every error answer of ejx; ``details.errors`` lists each problem found."""

    code: str = Field(examples=["InvalidContent"])
    description: str
    retriable: bool
    details: dict[str, object] = Field(default_factory=dict, examples=[{"errors": [
        {"index": 3, "path": "/mark/value", "reason": "'6' is not a five-point mark", "code": "InvalidContent"}]}])


def fault_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` declaring ``statuses`` with the fault body."""
    return {status: {"model": FaultBody, "description": FAULT_STATUSES[status]} for status in statuses}


def fault_response(fault: Fault) -> JSONResponse:
    """The fault's own status and wire form; retriable ones say when to retry, 401s how to authenticate."""
    headers = {"Retry-After": str(getattr(fault, "retry_after_s", RETRY_AFTER_S))} if fault.retriable else {}
    if fault.http_status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(fault.as_dict(), status_code=fault.http_status, headers=headers)


async def bounded_body(request: Request, limit: int) -> bytes | None:
    """At most ``limit`` bytes of the body, counted as it streams in (Content-Length may lie);
    None as soon as it is known to be longer, declared or sent. Every face reads bodies with this."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _validation_fault(error: RequestValidationError) -> InvalidContent:
    problems = [{"path": ".".join(str(part) for part in item.get("loc", ())), "reason": item.get("msg", ""),
                 "code": "InvalidContent"} for item in error.errors()]
    reasons = "; ".join(f"{p['path']}: {p['reason']}" for p in problems[:5])
    return InvalidContent(f"the request does not match its schema: {reasons}"[:1000], details={"errors": problems})


class FaultAnsweringRoute(APIRoute):
    """An APIRoute whose handler answers every Fault (and outage, and validation error) as ejx does."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                with outage_as_failure():
                    return await handler(request)
            except Fault as fault:
                return fault_response(fault)
            except RequestValidationError as error:
                return fault_response(_validation_fault(error))

        return answer


def fault_router(**options: Any) -> APIRouter:
    """An APIRouter whose routes answer faults the one way; every ejx router is made by this."""
    options["responses"] = {**fault_responses(*COMMON_STATUSES), **(options.get("responses") or {})}
    return APIRouter(route_class=FaultAnsweringRoute, **options)


class _MethodNotAllowed(InvalidContent):
    http_status = 405


def install_fault_answers(app: FastAPI) -> None:
    """Unknown paths and methods answer in the fault shape; OpenAPI lists no 422."""

    async def http_error(request: Request, error: HTTPException) -> Response:
        if error.status_code == 405:
            return fault_response(_MethodNotAllowed(f"{request.method} is not allowed on this path"))
        if error.status_code == 404:
            return fault_response(NotFound("nothing here; see /docs for the API"))
        return fault_response(InvalidContent(str(error.detail)[:200]))

    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        return fault_response(_validation_fault(error))

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
            for unused in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(unused, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
