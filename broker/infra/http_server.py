"""The one way ejx answers a fault over HTTP, used by every router through :func:`fault_router`.

Status, headers and body are all derived from the fault. A route raises faults
and never builds error answers itself; the route class catches them, turns an
infrastructure outage into a retriable Failure (503 + Retry-After, no host
named), and gives FastAPI's own request-validation errors ejx's fault shape.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from broker.domain.faults import Fault, InvalidContent
from broker.infra.postgres import outage_as_failure

RETRY_AFTER_S = 5
"""What a retriable fault tells the client to wait, in seconds."""


def fault_response(fault: Fault) -> JSONResponse:
    """The fault's own status and wire form; retriable ones say when to retry, 401s how to authenticate."""
    headers = {"Retry-After": str(RETRY_AFTER_S)} if fault.retriable else {}
    if fault.http_status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(fault.as_dict(), status_code=fault.http_status, headers=headers)


def _validation_fault(error: RequestValidationError) -> InvalidContent:
    problems = [{"path": ".".join(str(part) for part in item.get("loc", ())), "reason": item.get("msg", ""),
                 "code": "InvalidContent"} for item in error.errors()]
    reasons = "; ".join(f"{p['path']}: {p['reason']}" for p in problems[:5])
    return InvalidContent(f"the request does not match its schema: {reasons}", details={"errors": problems})


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


def fault_router(**options: object) -> APIRouter:
    """An APIRouter whose routes answer faults the one way; every ejx router is made by this."""
    return APIRouter(route_class=FaultAnsweringRoute, **options)
