"""The SMEV 3 endpoint over HTTP (component ``smev``): ``POST /smev3/1.2``, ``/smev3/1.3``, their WSDLs
(``?wsdl``) and the schemas those import (``/smev3/1.2/types.xsd``...).

SOAP 1.1 document/literal: the operation is the Body's first element, SOAPAction is
ignored (some clients leave it out). A request may come as an MTOM/XOP package
(multipart/related, as CXF sends it with MTOM on; the WSDLs allow it): its root part
is the envelope. The body is read up to a limit before anything
looks at it; a longer one is refused as a fault without being read further. A fault
is HTTP 500 with a soap:Fault, as SOAP 1.1 says; every other answer is 200.
"""

from __future__ import annotations

import asyncio
import email
import email.policy

from fastapi import APIRouter, Request
from fastapi.responses import Response

from broker.domain.faults import Fault, InvalidContent
from broker.infra.http_server import bounded_body
from broker.smev3.exchange import MessageExchange
from broker.smev3.messages import fault
from broker.smev3.wire import SCHEMA_FILES, Version, schema_file, to_bytes, wsdl

PATH = "/smev3/{version}"
SOAP_MEDIA_TYPE = "text/xml; charset=utf-8"


def smev3_router(exchange: MessageExchange) -> APIRouter:
    """The endpoint of each protocol version, answering every request with SOAP (never JSON).

    Left out of the OpenAPI document: its contract is the WSDL it serves, and its
    faults are SOAP faults, not ejx's JSON fault shape.
    """
    router = APIRouter(tags=["SMEV 3 message exchange"], include_in_schema=False)
    for version in Version:
        router.add_api_route(PATH.format(version=version.value), _post(exchange, version), methods=["POST"],
                             summary=f"SMEV {version.value} SOAP 1.1 operations", response_class=Response)
        router.add_api_route(PATH.format(version=version.value), _wsdl(version), methods=["GET"],
                             summary=f"The WSDL of SMEV {version.value} (?wsdl)", response_class=Response)
        for name in SCHEMA_FILES:
            router.add_api_route(PATH.format(version=version.value) + "/" + name, _schema(version, name),
                                 methods=["GET"], summary=f"{name} of SMEV {version.value}", response_class=Response)
    return router


def soap_refusals(error: Fault) -> dict[str, tuple[str, bytes]]:
    """``error`` as each version's soap:Fault, by the path of its endpoint: how the HTTP guard answers a request
    it refuses before the endpoint runs (``GuardOptions.answers``), so SOAP callers get no JSON there either.
    The guard renders these once, at start: no XML at request time."""
    return {PATH.format(version=version.value): (SOAP_MEDIA_TYPE, to_bytes(fault(version, error)))
            for version in Version}


def _post(exchange: MessageExchange, version: Version):  # noqa: ANN202 - a FastAPI endpoint
    async def operate(request: Request) -> Response:
        body = await bounded_body(request, exchange.options.max_body_bytes)
        if body is None:
            error = InvalidContent(f"the request is longer than {exchange.options.max_body_bytes} bytes")
            return Response(to_bytes(fault(version, error)), status_code=500, media_type=SOAP_MEDIA_TYPE)
        content_type = request.headers.get("content-type", "")
        if content_type.lower().lstrip().startswith("multipart/related"):
            try:
                body = await asyncio.to_thread(root_part, content_type, body)
            except InvalidContent as error:
                return Response(to_bytes(fault(version, error)), status_code=500, media_type=SOAP_MEDIA_TYPE)
        answer, is_fault = await exchange.handle(version, body)
        return Response(answer, status_code=500 if is_fault else 200, media_type=SOAP_MEDIA_TYPE)
    return operate


def root_part(content_type: str, body: bytes) -> bytes:
    """The envelope of an MTOM/XOP package: its root part (the ``start`` Content-ID, else the first part).
    A package with more parts is refused: no operation ejx serves takes an attachment, and one
    xop:Include left unresolved would be read as an element of the message (worker thread)."""
    try:
        head = b"Content-Type: " + content_type.encode("ascii") + b"\r\n\r\n"
    except UnicodeEncodeError:
        raise InvalidContent("the Content-Type of a multipart request must be ASCII") from None
    try:
        package = email.message_from_bytes(head + body, policy=email.policy.HTTP)
    except RecursionError:  # one recursion per nested multipart: a megabyte holds thousands of levels
        raise InvalidContent("a multipart/related request nested too deep; send the SOAP envelope as its "
                             "one part") from None
    parts = list(package.iter_parts()) if package.is_multipart() else []
    if not parts:
        raise InvalidContent("a multipart/related request without a part (is its boundary right?)")
    if len(parts) > 1:
        raise InvalidContent(f"a multipart/related request with {len(parts)} parts: attachments are not "
                             "supported, send the SOAP envelope alone (MTOM without attachments is fine)")
    start = package.get_param("start")
    if start is not None and (parts[0].get("Content-ID") or start).strip("<> ") != start.strip("<> "):
        raise InvalidContent(f"the root part {start} named by start is not in the request")
    payload = parts[0].get_payload(decode=True)
    if not isinstance(payload, bytes) or not payload.strip():
        raise InvalidContent("the root part of the multipart request is empty")
    return payload


def _wsdl(version: Version):  # noqa: ANN202 - a FastAPI endpoint
    async def describe(request: Request) -> Response:
        """The WSDL whose soap:address is the URL it was fetched from, without the query."""
        if "wsdl" not in request.query_params:
            return Response("POST SOAP 1.1 here; the WSDL is at ?wsdl\n", status_code=405,
                            headers={"Allow": "POST"}, media_type="text/plain")
        address = str(request.url.replace(query=""))
        return Response(wsdl(version, address), media_type=SOAP_MEDIA_TYPE)
    return describe


def _schema(version: Version, name: str):  # noqa: ANN202 - a FastAPI endpoint
    async def schema() -> Response:
        """A schema the WSDL imports, as ejx ships it."""
        return Response(schema_file(version, name), media_type="application/xml")
    return schema
