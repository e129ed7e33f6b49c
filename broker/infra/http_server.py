"""The one way ejx answers a fault over HTTP: status, headers and body all derived from the fault."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from broker.domain.faults import Fault

RETRY_AFTER_S = 5
"""What a retriable fault tells the client to wait, in seconds."""


def fault_response(fault: Fault) -> JSONResponse:
    """The fault's own status and wire form; retriable ones say when to retry, 401s how to authenticate."""
    headers = {"Retry-After": str(RETRY_AFTER_S)} if fault.retriable else {}
    if fault.http_status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(fault.as_dict(), status_code=fault.http_status, headers=headers)
