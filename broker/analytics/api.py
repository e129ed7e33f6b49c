"""HTTP API for education authorities and the portal: school monitoring, grade analytics, the e-diary.

Built by :func:`monitoring_router` from explicit dependencies; the bootstrap
mounts it. Monitoring and analytics carry no personal data (aggregates and
school facts); the e-diary does, so it answers only portal clients and logs
every read it serves.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import asyncpg
import structlog
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response

from broker.access.portal_clients import PortalClients, record_read
from broker.analytics.projections.diary import DiaryPeriod, DiaryReader
from broker.analytics.projections.grade_statistics import (
    FIXED_LABELS,
    GradeFilter,
    GradeGroup,
    GradeStatistics,
    parse_dimensions,
)
from broker.analytics.projections.school_activity import (
    ActivityOptions,
    SchoolMonitor,
    SchoolStatus,
    counts_by_district,
)
from broker.domain.faults import Fault, InvalidContent
from broker.infra.http_server import fault_router
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


def _lag_from_metrics(consumers: tuple[str, ...]) -> LagSource:
    async def lag() -> dict[str, dict[str, int]]:
        return {consumer: metrics.consumer_lag(consumer) for consumer in consumers}
    return lag


def _bearer(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _period(date_from: date | None, date_to: date | None) -> None:
    if date_from is not None and date_to is not None and date_from > date_to:
        raise InvalidContent(f"from ({date_from}) is after to ({date_to})")


def grades_csv(dimensions: tuple[str, ...], groups: list[GradeGroup]) -> str:
    """One row per group; marks of the fixed labels get a column each, the rest are summed in other_marks."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([*dimensions, "count", "mean_five_point", "passed", "failed", "pass_share",
                     "attendance_marks", "attendance_rate", *(f"marks_{label}" for label in FIXED_LABELS),
                     "other_marks"])
    for g in groups:
        other = sum(n for label, n in g.distribution.items() if label not in FIXED_LABELS)
        writer.writerow([*(g.key[d] if g.key[d] is not None else "" for d in dimensions), g.count,
                         _blank(g.mean_five_point), g.passed, g.failed, _blank(g.pass_share),
                         _blank(g.attendance_marks), _blank(g.attendance_rate),
                         *(g.distribution.get(label, 0) for label in FIXED_LABELS), other])
    return out.getvalue()


def _blank(value: object) -> object:
    return "" if value is None else value


def monitoring_router(*, pool: asyncpg.Pool, options: MonitoringOptions = MonitoringOptions(),
                      lag: LagSource | None = None,
                      clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> APIRouter:
    """Routes ``/v1/monitoring/*``, ``/v1/analytics/grades`` and ``/v1/diary/{student_id}``.

    ``lag`` reports consumer lag per consumer and topic; by default it reads the
    ``ejx_consumer_lag`` gauge the consumers of this process keep.
    """
    router = fault_router()
    monitor = SchoolMonitor(pool, options.activity)
    statistics = GradeStatistics(pool)
    portal = PortalClients(pool)
    lag_source = lag or _lag_from_metrics(options.consumers)

    @router.get("/v1/monitoring/schools", tags=["monitoring"],
                summary="Registry schools with their e-journal activity, status and timeliness")
    async def schools(district: str | None = None, vendor: str | None = None,
                      status: SchoolStatus | None = None,
                      as_of: datetime | None = Query(None, description="Judge status at this instant; default now.")
                      ) -> JSONResponse:
        moment = _aware(as_of) if as_of is not None else clock()
        found = await monitor.schools(as_of=moment, district=district, vendor_id=vendor, status=status)
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
                summary="Consumer lag, outbox pending/dead rows and the recent delivery rate")
    async def pipeline() -> JSONResponse:
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
                summary="Grade statistics (JSON, or CSV with Accept: text/csv)",
                responses={200: {"content": {"application/json": {}, "text/csv": {}}}})
    async def grades(request: Request, district: str | None = None, school: str | None = None,
                     subject: str | None = None,
                     date_from: date | None = Query(None, alias="from", description="First lesson date."),
                     date_to: date | None = Query(None, alias="to", description="Last lesson date."),
                     group_by: str | None = Query(None, description="Comma-separated: district, school, subject, "
                                                  "class_unit, term (default all; attendance only by district/school)")
                     ) -> Response:
        _period(date_from, date_to)
        dimensions = parse_dimensions(group_by)
        found = await statistics.groups(dimensions, GradeFilter(district, school, subject, date_from, date_to))
        names = tuple(d.value for d in dimensions)
        if "text/csv" in request.headers.get("accept", ""):
            return Response(grades_csv(names, found), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": 'attachment; filename="grades.csv"'})
        return JSONResponse({"group_by": list(names),
                             "filters": {"district": district, "school": school, "subject": subject,
                                         "from": _iso(date_from), "to": _iso(date_to)},
                             "groups": [g.as_dict() for g in found]})

    @router.get("/v1/diary/{student_id}", tags=["diary"],
                summary="One student's e-diary, for portal clients only; every read is logged",
                responses={401: {"description": "SenderIsNotRegistered: missing or unknown token"},
                           403: {"description": "AccessDenied: the token is a vendor's, not a portal client's"}})
    async def diary(student_id: str,
                    date_from: date | None = Query(None, alias="from"),
                    date_to: date | None = Query(None, alias="to"),
                    authorization: str | None = Header(None)) -> JSONResponse:
        structlog.contextvars.bind_contextvars(student_id=student_id)
        try:
            try:
                client = await portal.authenticate(_bearer(authorization))
                _period(date_from, date_to)
            except Fault as fault:
                if fault.retriable:
                    raise
                metrics.DIARY_READS.labels("denied").inc()
                log.info("diary.refused", code=fault.code, reason=fault.description)
                raise
            # The read and its log line commit together: no diary leaves without a trace.
            async with UnitOfWork(pool) as uow:
                body = await DiaryReader(uow.connection).diary(student_id, DiaryPeriod(date_from, date_to))
                await record_read(uow.connection, client=client, student_id=student_id,
                                  date_from=date_from, date_to=date_to)
                await uow.commit()
            metrics.DIARY_READS.labels("allowed").inc()
            log.info("diary.read", client_id=client.client_id, grades=len(body["grades"]))
            return JSONResponse(body)
        finally:
            structlog.contextvars.unbind_contextvars("student_id")

    return router


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day is not None else None

