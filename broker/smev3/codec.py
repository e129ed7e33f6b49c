"""SMEV 3 message exchange (1.2, 1.3) over SOAP 1.1: the one import for everything that reads or writes it.

Pure lxml, no I/O, no signatures. The parts live in modules of their own: :mod:`~broker.smev3.wire` (versions,
schemas, WSDL, helpers), :mod:`~broker.smev3.calls` (what callers send ejx), :mod:`~broker.smev3.messages`
(what ejx sends) and :mod:`~broker.smev3.client_requests` (a client's requests and its reading of answers).
"""

from broker.smev3.calls import (
    Ack,
    Call,
    GetMessage,
    QueueQuery,
    SendRequest,
    SendResponse,
    parse_request,
)
from broker.smev3.client_requests import (
    Answer,
    Unsigned,
    ack,
    attach_signature,
    get_request,
    parse_answer,
    send,
)
from broker.smev3.messages import (
    REJECTION_CODES,
    Metadata,
    accepted,
    answer,
    fault,
    get_status_response,
    message_metadata,
    queue_statistics_response,
    request_message,
    response_message,
    sender_provided_request_data,
    sender_provided_response_data,
)
from broker.smev3.wire import (
    DS,
    PLACEHOLDER,
    SOAP,
    SOAP12,
    Version,
    schema_dir,
    to_bytes,
    validate,
    wsdl,
)

__all__ = [
    "DS", "PLACEHOLDER", "REJECTION_CODES", "SOAP", "SOAP12", "Ack", "Answer", "Call", "GetMessage", "Metadata",
    "QueueQuery", "SendRequest", "SendResponse", "Unsigned", "Version", "accepted", "ack", "answer",
    "attach_signature", "fault", "get_request", "get_status_response", "message_metadata", "parse_answer",
    "parse_request", "queue_statistics_response", "request_message", "response_message", "schema_dir",
    "send", "sender_provided_request_data", "sender_provided_response_data", "to_bytes", "validate", "wsdl",
]
