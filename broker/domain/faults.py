"""SMEV-like faults: one root exception, each kind with a code, a description and a retry verdict.

HTTP statuses, DLQ headers and relay retries are derived from these attributes,
never decided ad hoc at the call site.
"""

from __future__ import annotations

from typing import ClassVar


class Fault(Exception):
    """Root of every ejx error a caller may act on."""

    code: ClassVar[str] = "Failure"
    retriable: ClassVar[bool] = True
    http_status: ClassVar[int] = 500

    def __init__(self, description: str, *, details: dict[str, object] | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.details = details or {}

    def __str__(self) -> str:
        return f"{self.code}: {self.description}"

    def as_dict(self) -> dict[str, object]:
        """The wire form used by HTTP answers and DLQ headers."""
        return {"code": self.code, "description": self.description,
                "retriable": self.retriable, "details": self.details}


class InvalidContent(Fault):
    """The document is malformed, hostile or does not match its schema."""

    code = "InvalidContent"
    retriable = False
    http_status = 400


class SignatureVerificationFault(Fault):
    """The signature is missing, broken, untrusted or does not cover the content."""

    code = "SignatureVerificationFault"
    retriable = False
    http_status = 400


class UnknownMessageType(Fault):
    """The content is well-formed but of a type nobody routes."""

    code = "UnknownMessageType"
    retriable = False
    http_status = 400


class AccessDenied(Fault):
    """The sender may not act for this school or resource."""

    code = "AccessDenied"
    retriable = False
    http_status = 403


class SenderIsNotRegistered(Fault):
    """No registered sender matches the credential."""

    code = "SenderIsNotRegistered"
    retriable = False
    http_status = 401


class MessageIsAlreadySent(Fault):
    """The receiver has this message already: the sender counts it as delivered."""

    code = "MessageIsAlreadySent"
    retriable = False
    http_status = 409


class TargetMessageIsNotFound(Fault):
    """An acknowledgement names a message the queue does not hold."""

    code = "TargetMessageIsNotFound"
    retriable = False
    http_status = 404


class DestinationOverflow(Fault):
    """The receiver cannot take more now; try again later."""

    code = "DestinationOverflow"
    retriable = True
    http_status = 503


class NotFound(Fault):
    """No such resource (an unknown path, or nothing by that name)."""

    code = "NotFound"
    retriable = False
    http_status = 404


class TooManyRequests(Fault):
    """This client asks too often, too much at once, or with too many bad tokens; wait, then retry."""

    code = "TooManyRequests"
    retriable = True
    http_status = 429

    def __init__(self, description: str, *, retry_after_s: int = 5, details: dict[str, object] | None = None
                 ) -> None:
        super().__init__(description, details=details)
        self.retry_after_s = retry_after_s


class Failure(Fault):
    """A transient failure of ours or of a dependency; try again later."""

    code = "Failure"
    retriable = True
    http_status = 503


FAULTS: dict[str, type[Fault]] = {
    cls.code: cls
    for cls in (Fault, InvalidContent, SignatureVerificationFault, UnknownMessageType, AccessDenied,
                SenderIsNotRegistered, MessageIsAlreadySent, TargetMessageIsNotFound,
                DestinationOverflow, Failure)
}
"""The SMEV-like codes that travel in envelopes and DLQ headers; NotFound and TooManyRequests are
answers of ejx's HTTP faces only."""


def fault_from_code(code: str, description: str) -> Fault:
    """Rebuild a fault received over the wire; unknown codes become a retriable Failure."""
    return FAULTS.get(code, Failure)(description)
