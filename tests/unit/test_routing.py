"""Routing rules: the shipped defaults, conditions, test flags, and refusal of bad files."""

from __future__ import annotations

import pytest

from broker.domain.faults import InvalidContent
from broker.domain.routing import Route, RoutingTable


@pytest.fixture(scope="module")
def default() -> RoutingTable:
    return RoutingTable.load()


@pytest.mark.parametrize("event_type", ["GradePosted", "GradeCorrected", "GradeRetracted", "AttendanceMarked",
                                        "HomeworkAssigned"])
def test_diary_events_go_to_the_portal(default, event_type):
    assert default.route(event_type=event_type, school_id="s1") == [Route("EPGU", "portal")]


def test_term_grades_go_to_the_portal_and_the_interagency_exchange(default):
    assert default.route(event_type="TermGradeFinalized", school_id="s1") == [
        Route("EPGU", "portal"), Route("RSMEV", "interagency")]


def test_unknown_type_has_no_route(default):
    assert default.route(event_type="Nonsense", school_id="s1") == []


TABLE = """
[recipients.EPGU]
channel = "portal"
[recipients.RSMEV]
channel = "interagency"
[recipients.EDU77]
channel = "interagency"

[[rules]]
event_types = ["GradePosted"]
recipients = ["EPGU"]

[[rules]]
name = "moscow district"
districts = ["ЦАО"]
recipients = ["EDU77", "EPGU"]

[[rules]]
name = "pilot"
schools = ["pilot-1"]
recipients = ["RSMEV"]
test = true
"""


def test_district_and_school_conditions():
    table = RoutingTable.from_toml(TABLE)
    assert [r.recipient for r in table.route(event_type="GradePosted", school_id="s", district="ЦАО")] == [
        "EPGU", "EDU77"]
    assert [r.recipient for r in table.route(event_type="AttendanceMarked", school_id="s", district="ЦАО")] == [
        "EDU77", "EPGU"]
    assert table.route(event_type="AttendanceMarked", school_id="s", district="ЗАО") == []
    assert table.route(event_type="AttendanceMarked", school_id="s", district=None) == []
    assert table.route(event_type="AttendanceMarked", school_id="pilot-1") == [Route("RSMEV", "interagency", True)]


@pytest.mark.parametrize("text, complaint", [
    ("[[rules]]\nrecipients=['EPGU']", "recipients"),
    ("[recipients.EPGU]\nchannel='fax'", "unknown channel"),
    ("[recipients.EPGU]\nchannel='portal'\n[[rules]]\nrecipients=['NOBODY']", "undeclared"),
    ("[recipients.EPGU]\nchannel='portal'\n[[rules]]\nrecipients=['EPGU']\nevent_types=['Grade']", "unknown event"),
    ("[recipients.EPGU]\nchannel='portal'\n[[rules]]\nrecipients=['EPGU']\nschool=['x']", "unknown keys"),
    ("[recipients.EPGU]\nchannel='portal'\n[[rules]]\nrecipients=[]", "non-empty"),
    ("not toml at all =", "routing"),
    ("[recipients.epgu]\nchannel='portal'\n[[rules]]\nrecipients=['epgu']", "'epgu' is not a mnemonic"),
])
def test_bad_tables_are_refused_at_load(text, complaint):
    with pytest.raises(InvalidContent, match=complaint):
        RoutingTable.from_toml(text)
