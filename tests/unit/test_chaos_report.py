"""The chaos report fails a run on loss or doubling, and the fault schedule kills every target kind."""

from __future__ import annotations

import asyncio
import uuid

from broker.devtools.chaos.faults import FaultPlan, FaultSchedule
from broker.devtools.chaos.report import ChaosReport, Receipt, destination_figures
from broker.devtools.chaos.run import every_target_hit


class _Target:
    def __init__(self, name: str) -> None:
        self.name = name

    def kill(self) -> None: ...

    async def restart(self) -> None: ...


def _figures(expected: dict[str, set[uuid.UUID]], receipts: list[Receipt]) -> ChaosReport:
    report = ChaosReport(options={})
    report.destinations = destination_figures(expected, receipts, bad_signatures={}, dead_rows={}, pending_rows={},
                                              drain_s={name: 1.0 for name in expected})
    return report


def test_every_acknowledged_event_received_once_is_no_problem_even_with_repeated_message_ids() -> None:
    events = [uuid.uuid4() for _ in range(3)]
    receipts = [Receipt("portal", e, uuid.uuid4(), copies=2 if n == 0 else 1) for n, e in enumerate(events)]
    report = _figures({"portal": set(events)}, receipts)

    figures = report.destinations["portal"]
    assert (figures.acknowledged, figures.received, figures.lost, figures.doubled, figures.repeats) == (3, 3, 0, 0, 1)
    assert report.problems == []


def test_an_acknowledged_event_never_received_is_a_loss_that_fails_the_run() -> None:
    events = [uuid.uuid4() for _ in range(3)]
    receipts = [Receipt("portal", e, uuid.uuid4(), 1) for e in events[:2]]
    report = _figures({"portal": set(events)}, receipts)

    assert report.destinations["portal"].lost == 1
    assert report.destinations["portal"].received == 2
    assert report.problems == ["portal: 1 acknowledged event(s) never received"]


def test_one_event_under_two_message_ids_is_a_doubling_that_fails_the_run() -> None:
    event = uuid.uuid4()
    receipts = [Receipt("interagency", event, uuid.uuid4(), 1), Receipt("interagency", event, uuid.uuid4(), 1)]
    report = _figures({"interagency": {event}}, receipts)

    assert report.destinations["interagency"].doubled == 1
    assert report.problems == ["interagency: 1 event(s) received under two MessageIDs"]


def test_a_receipt_at_the_other_destination_does_not_count_as_received() -> None:
    event = uuid.uuid4()
    report = _figures({"portal": {event}, "interagency": {event}}, [Receipt("portal", event, uuid.uuid4(), 1)])

    assert report.destinations["interagency"].lost == 1
    assert report.destinations["portal"].lost == 0


def test_an_envelope_a_receiver_refused_fails_the_run_though_every_event_arrived_once() -> None:
    event = uuid.uuid4()
    report = ChaosReport(options={})
    report.destinations = destination_figures({"portal": {event}}, [Receipt("portal", event, uuid.uuid4(), 1)],
                                              bad_signatures={"portal": 2}, dead_rows={}, pending_rows={},
                                              drain_s={"portal": 1.0})

    assert report.destinations["portal"].lost == 0
    assert report.problems == ["portal: 2 envelope(s) refused (signature or structure)"]


def test_a_target_of_the_plan_never_killed_fails_the_run_though_nothing_was_lost() -> None:
    event = uuid.uuid4()
    report = ChaosReport(options={"targets": ["ingest", "postgres"]}, kills={"ingest": 3})
    report.destinations = destination_figures({"portal": {event}}, [Receipt("portal", event, uuid.uuid4(), 1)],
                                              bad_signatures={}, dead_rows={}, pending_rows={},
                                              drain_s={"portal": 1.0})

    assert report.problems == ["postgres: never killed (the run proved nothing about it)"]
    report.kills["postgres"] = 1
    assert report.problems == []


def test_a_run_that_acknowledged_nothing_fails() -> None:
    assert _figures({}, []).problems == ["nothing was acknowledged"]


def test_the_schedule_kills_every_target_once_per_round_in_a_seeded_order() -> None:
    names = ("ingest", "router", "relay", "smev", "kafka", "postgres")
    targets = {name: _Target(name) for name in names}

    def order(seed: int) -> list[str]:
        schedule = FaultSchedule(targets, FaultPlan(targets=names, seed=seed))
        return [schedule.next_target() for _ in range(2 * len(names))]

    first = order(7)
    assert sorted(first[:6]) == sorted(names) and sorted(first[6:]) == sorted(names)
    assert order(7) == first
    assert order(8) != first


async def test_the_schedule_says_when_every_target_has_been_killed_once() -> None:
    """What a load that ended early waits for before the faults stop: each target killed and started again."""
    names = ("ingest", "router", "postgres")
    killed: list[str] = []

    class Counted(_Target):
        async def kill(self) -> None:
            killed.append(self.name)

    schedule = FaultSchedule({name: Counted(name) for name in names},
                             FaultPlan(targets=names, every_s=0.01, down_s=(0.0, 0.0)))
    stop = asyncio.Event()
    running = asyncio.create_task(schedule.run(stop))
    try:
        assert not schedule.every_target_hit.is_set()
        await asyncio.wait_for(schedule.every_target_hit.wait(), timeout=5)
        assert set(killed[:len(names)]) == set(names) and all(schedule.log.kills[name] for name in names)
    finally:
        stop.set()
        await running


async def test_a_schedule_that_fails_ends_the_wait_for_every_target():
    """A restart that raises stops the schedule before every target was hit: the load's wait must not hang."""
    class Broken(_Target):
        async def kill(self) -> None: ...

        async def restart(self) -> None:
            raise RuntimeError("PostgreSQL would not start")

    schedule = FaultSchedule({"postgres": Broken("postgres"), "router": Broken("router")},
                             FaultPlan(targets=("postgres", "router"), every_s=0.01, down_s=(0.0, 0.0)))
    faulting = asyncio.create_task(schedule.run(asyncio.Event()))
    await asyncio.wait_for(every_target_hit(schedule, faulting), timeout=5)
    assert not schedule.every_target_hit.is_set() and isinstance(faulting.exception(), RuntimeError)
