"""HTTP API for education authorities and the portal: school monitoring, grade analytics, the e-diary.

Built by :func:`monitoring_router` from explicit dependencies; the bootstrap
mounts it. Monitoring and analytics answer authorities (a district office sees
only its districts' schools) and carry no personal data: school facts, and
aggregates that leave out every cell of fewer than ``min_group`` pupils (see
:mod:`broker.analytics.projections.grade_statistics`). The pipeline view is for
operators (and authorities of every district, whose dashboard shows it). The
e-diary answers only portal clients and logs every read it serves.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import asyncpg
import orjson
import structlog
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from broker.access.credentials import Kind, Principal
from broker.access.gate import Gate, districts_in_scope
from broker.analytics import params
from broker.analytics.projections.diary import DiaryPeriod, DiaryReader, is_empty
from broker.analytics.projections.grade_statistics import (
    FIXED_LABELS,
    GradeFilter,
    GradeGroup,
    GradeStatistics,
    parse_dimensions,
    whole_months,
)
from broker.analytics.projections.school_activity import (
    ActivityOptions,
    SchoolMonitor,
    SchoolStatus,
    counts_by_district,
)
from broker.audit import diary_reads
from broker.audit.diary_reads import Channel, DiaryRead
from broker.domain.faults import Fault
from broker.infra.http_server import CREDENTIAL_STATUSES, fault_responses, fault_router
from broker.infra.postgres import UnitOfWork
from broker.ops import metrics

log = structlog.get_logger(__name__)

LagSource = Callable[[], Awaitable[dict[str, dict[str, int]]]]


@dataclass(frozen=True)
class MonitoringOptions:
    """What the monitoring views assume."""

    activity: ActivityOptions = ActivityOptions()
    """Silent-after days, timeliness days and the per-day window of school activity."""
    consumers: tuple[str, ...] = ("router", "analytics")
    """Consumers whose lag the pipeline view reports."""
    delivery_rate_window_s: int = 3600
    """Deliveries counted for the pipeline's delivery rate, in seconds back from now."""
    min_group: int = 5
    """Fewest distinct pupils a cell of grade statistics needs to be counted (1 = no suppression)."""


def _lag_from_metrics(consumers: tuple[str, ...]) -> LagSource:
    async def lag() -> dict[str, dict[str, int]]:
        return {consumer: metrics.consumer_lag(consumer) for consumer in consumers}
    return lag


def grades_csv(dimensions: tuple[str, ...], groups: list[GradeGroup]) -> str:
    """One row per group; marks of the fixed labels get a column each, the rest are summed in other_marks."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([*dimensions, "count", "mean_five_point", "passed", "failed", "pass_share",
                     "attendance_marks", "attendance_rate", *(f"marks_{label}" for label in FIXED_LABELS),
                     "other_marks", "suppressed"])
    for g in groups:
        other = sum(n for label, n in g.distribution.items() if label not in FIXED_LABELS)
        writer.writerow([*(_text_cell(g.key[d]) for d in dimensions), g.count,
                         _blank(g.mean_five_point), g.passed, g.failed, _blank(g.pass_share),
                         _blank(g.attendance_marks), _blank(g.attendance_rate),
                         *(g.distribution.get(label, 0) for label in FIXED_LABELS), other,
                         "yes" if g.suppressed else "no"])
    return out.getvalue()


def _blank(value: object) -> object:
    return "" if value is None else value


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _text_cell(value: str | None) -> str:
    """A group key as a spreadsheet shows it and never runs it: keys are vendor input (a term_id of
    ``=HYPERLINK(…)`` is valid), so one starting like a formula gets a leading ``'`` (OWASP CSV injection).
    Only keys are text; every other column is a figure ejx computed, or yes/no."""
    if value is None:
        return ""
    return f"'{value}" if value.startswith(_FORMULA_START) else value


_AUTHORISED = fault_responses(*CREDENTIAL_STATUSES)


def monitoring_router(*, pool: asyncpg.Pool, gate: Gate, options: MonitoringOptions = MonitoringOptions(),
                      lag: LagSource | None = None,
                      clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> APIRouter:
    """Routes ``/v1/monitoring/*``, ``/v1/analytics/grades`` and ``/v1/diary/{student_id}``.

    ``lag`` reports consumer lag per consumer and topic; by default it reads the
    ``ejx_consumer_lag`` gauge the consumers of this process keep.
    """
    router = fault_router(responses=_AUTHORISED)
    monitor = SchoolMonitor(pool, options.activity)
    statistics = GradeStatistics(pool, min_pupils=options.min_group)
    lag_source = lag or _lag_from_metrics(options.consumers)
    authority = gate.require(Kind.AUTHORITY, sessions=True)
    pipeline_reader = gate.require(Kind.OPERATOR, sessions=True, unscoped=frozenset({Kind.AUTHORITY}))

    def diary_refused(fault: Fault) -> None:
        metrics.DIARY_READS.labels("denied").inc()
        log.info("diary.refused", code=fault.code, reason=fault.description)

    portal_client = gate.require(Kind.PORTAL_CLIENT, on_refused=diary_refused)

    @router.get("/v1/monitoring/schools", tags=["monitoring"],
                summary="Registry schools with their e-journal activity, status and timeliness (authorities)")
    async def schools(principal: Principal = Depends(authority),
                      district: str | None = params.identifier("Only this district."),
                      vendor: str | None = params.identifier("Only this vendor's schools."),
                      status: SchoolStatus | None = None,
                      as_of: str | None = params.instant_query(
                          "Judge status at this instant; default now (a past one by whole school days)")
                      ) -> JSONResponse:
        moment = params.instant(as_of, "as_of") or clock()
        found = await monitor.schools(as_of=moment, districts=districts_in_scope(principal, district),
                                      vendor_id=vendor, status=status)
        activity = options.activity
        return JSONResponse({
            "as_of": moment.isoformat(),
            "silent_after_days": activity.silent_after_days, "timely_within_days": activity.timely_within_days,
            "window_days": activity.window_days,
            "schools": [s.as_dict() for s in found],
            "by_district": counts_by_district(found),
            "totals": {s.value: sum(1 for f in found if f.status is s) for s in SchoolStatus} | {"total": len(found)},
        })

    @router.get("/v1/monitoring/pipeline", tags=["monitoring"],
                summary="Consumer lag, outbox pending/dead rows and the recent delivery rate (operators)")
    async def pipeline(principal: Principal = Depends(pipeline_reader)) -> JSONResponse:
        outbox = await metrics.refresh_outbox_rows(pool)
        since = clock() - timedelta(seconds=options.delivery_rate_window_s)
        delivered = await pool.fetch(
            "SELECT destination, count(*) AS n FROM outbox WHERE status = 'delivered' AND delivered_at >= $1 "
            "GROUP BY destination ORDER BY destination", since)
        destinations = sorted({d for d, _ in outbox} | {row["destination"] for row in delivered})
        per_destination = {row["destination"]: row["n"] for row in delivered}
        minutes = options.delivery_rate_window_s / 60
        return JSONResponse({
            "consumer_lag": await lag_source(),
            "outbox": [{"destination": d, "pending": outbox.get((d, "pending"), 0), "dead": outbox.get((d, "dead"), 0),
                        "delivered_recently": per_destination.get(d, 0),
                        "delivered_per_minute": round(per_destination.get(d, 0) / minutes, 4)}
                       for d in destinations],
            "delivery_window_s": options.delivery_rate_window_s,
        })

    @router.get("/v1/analytics/grades", tags=["analytics"],
                summary="Grade statistics (JSON, or CSV with Accept: text/csv); small groups suppressed",
                description=(f"Cells (district × school × subject × class unit × term × month) of fewer than "
                             f"{options.min_group} distinct pupils are left out of every figure, and a group "
                             "missing any is marked `suppressed`; from/to are widened to whole months "
                             "(the answer's `filters` says which)."),
                responses={200: {"content": {"application/json": {}, "text/csv": {}}}})
    async def grades(request: Request, principal: Principal = Depends(authority),
                     district: str | None = params.identifier("Only this district."),
                     school: str | None = params.identifier("Only this school."),
                     subject: str | None = params.identifier("Only this subject code."),
                     date_from: str | None = params.day_query("First lesson date", alias="from"),
                     date_to: str | None = params.day_query("Last lesson date", alias="to"),
                     group_by: str | None = Query(None, max_length=200, description=(
                         "Comma-separated: district, school, subject, class_unit, term (default all; "
                         "attendance only by district/school)"))
                     ) -> Response:
        first, last = params.day(date_from, "from"), params.day(date_to, "to")
        params.period(first, last)
        if options.min_group > 1:
            first, last = whole_months(first, last)
        dimensions = parse_dimensions(group_by)
        found = await statistics.groups(dimensions, GradeFilter(
            districts_in_scope(principal, district), school, subject, first, last))
        names = tuple(d.value for d in dimensions)
        if "text/csv" in request.headers.get("accept", ""):
            return Response(await asyncio.to_thread(grades_csv, names, found), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": 'attachment; filename="grades.csv"'})
        filters = {"district": district, "school": school, "subject": subject, "from": _iso(first), "to": _iso(last)}
        return Response(await asyncio.to_thread(_grades_json, names, filters, options.min_group, found),
                        media_type="application/json")

    @router.get("/v1/diary/{student_id}", tags=["diary"],
                summary="One student's e-diary, for portal clients only; every read is logged")
    async def diary(principal: Principal = Depends(portal_client),
                    student_id: str = Path(max_length=72, pattern=params.PSEUDONYMOUS_PATTERN,
                                           description="The pupil's pseudonymous id, e.g. st-77k3f9q2m."),
                    date_from: str | None = params.day_query("First day", alias="from"),
                    date_to: str | None = params.day_query("Last day", alias="to")) -> JSONResponse:
        first, last = params.day(date_from, "from"), params.day(date_to, "to")
        params.period(first, last)
        structlog.contextvars.bind_contextvars(student_id=student_id)
        try:
            # The read and its log line commit together: no diary leaves without a trace.
            async with UnitOfWork(pool) as uow:
                body = await DiaryReader(uow.connection).diary(student_id, DiaryPeriod(first, last))
                await diary_reads.record(uow.connection, DiaryRead(
                    Channel.API, principal.name, student_id, first, last,
                    outcome="NO_DATA" if is_empty(body) else "answered"))
                await uow.commit()
            metrics.DIARY_READS.labels("allowed").inc()
            log.info("diary.read", client_id=principal.name, grades=len(body["grades"]))
            return JSONResponse(body)
        finally:
            structlog.contextvars.unbind_contextvars("student_id")

    return router


def _grades_json(names: tuple[str, ...], filters: dict[str, str | None], min_group: int,
                 found: list[GradeGroup]) -> bytes:
    """The JSON answer of /v1/analytics/grades (in a worker thread: a region's groups are megabytes)."""
    return orjson.dumps({"group_by": list(names), "filters": filters, "min_group": min_group,
                         "suppressed_groups": sum(1 for g in found if g.suppressed),
                         "groups": [g.as_dict() for g in found]})


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day is not None else None

