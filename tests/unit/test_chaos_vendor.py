"""The chaos vendor holds ejx to one event id per event it sent: the expected set is keyed by those ids."""

from __future__ import annotations

import uuid

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from broker.devtools.chaos.vendor import LoadPlan, Vendor
from broker.domain.faults import Failure
from broker.domain.routing import RoutingTable
from tests.delivery_support import serving


def _ingest_answering_one_id_for_all() -> FastAPI:
    """An ingest whose ledger takes every event of a batch for the first (a key that left out the record)."""
    app = FastAPI()
    merged = uuid.uuid4()

    @app.post("/v1/events")
    async def events(request: Request) -> JSONResponse:
        sent = await request.json()
        return JSONResponse({"event_ids": [str(merged)] * len(sent)}, status_code=202)

    return app


async def test_two_events_acknowledged_under_one_event_id_end_the_run_instead_of_shrinking_the_expected_set() -> None:
    async with serving(_ingest_answering_one_id_for_all()) as url:
        vendor = Vendor(url, "token", schools=("sch-1",), source_system="v", routing=RoutingTable.load(),
                        run_id="r1")
        with pytest.raises(Failure, match="acknowledged two of our events as one"):
            await vendor.send(LoadPlan(events=2, batch=2), advance=lambda n: None)
