"""Grade statistics from mark counts: means, distributions, pass shares, attendance rates."""

from __future__ import annotations

import pytest

from broker.analytics.projections.grade_statistics import (
    ALL_DIMENSIONS,
    AttendanceCount,
    Dimension,
    MarkCount,
    five_point,
    parse_dimensions,
    summarise,
)
from broker.domain.faults import InvalidContent

D, S = Dimension.DISTRICT, Dimension.SCHOOL


def test_only_numeric_five_point_marks_have_points() -> None:
    assert [five_point("five-point", v) for v in "12345"] == [1, 2, 3, 4, 5]
    assert five_point("ten", "5") is None
    assert five_point("five-point", "н/а") is None
    assert five_point("pass-fail", "зач") is None


def test_mean_distribution_and_pass_share_of_one_group() -> None:
    key = ("Центральный", "s1")
    marks = [MarkCount(key, "five-point", "5", 2), MarkCount(key, "five-point", "3", 1),
             MarkCount(key, "pass-fail", "зач", 3), MarkCount(key, "pass-fail", "незач", 1),
             MarkCount(key, "ten", "9", 1), MarkCount(key, "ten", "5", 1)]
    [group] = summarise((D, S), marks, [])
    assert group.key == {"district": "Центральный", "school": "s1"}
    assert group.count == 9
    assert group.mean_five_point == pytest.approx(13 / 3, abs=1e-4)  # (5+5+3)/3; the ten-point 5 is neither a 5 nor in the mean
    assert group.distribution == {"5": 2, "3": 1, "зач": 3, "незач": 1, "ten:5": 1, "ten:9": 1}
    assert list(group.distribution) == ["5", "3", "зач", "незач", "ten:5", "ten:9"]
    assert (group.passed, group.failed, group.pass_share) == (3, 1, 0.75)


def test_attendance_rate_counts_present_and_late_as_attended() -> None:
    key = ("Центральный", "s1")
    attendance = [AttendanceCount(key, "present", 5), AttendanceCount(key, "late", 1),
                  AttendanceCount(key, "absent", 1), AttendanceCount(key, "ill", 1)]
    [group] = summarise((D, S), [MarkCount(key, "five-point", "4", 1)], attendance)
    assert group.attendance_marks == 8
    assert group.attendance_rate == 0.75


def test_attendance_only_school_still_appears_and_groups_are_sorted() -> None:
    groups = summarise((S,), [MarkCount(("s2",), "five-point", "2", 1)], [AttendanceCount(("s1",), "absent", 2)])
    assert [g.key["school"] for g in groups] == ["s1", "s2"]
    assert (groups[0].count, groups[0].mean_five_point, groups[0].attendance_rate) == (0, None, 0.0)
    assert groups[1].attendance_marks == 0 and groups[1].attendance_rate is None


def test_no_attendance_for_groupings_finer_than_a_school() -> None:
    [group] = summarise((S, Dimension.SUBJECT), [MarkCount(("s1", "MATH"), "five-point", "4", 1)],
                        [AttendanceCount(("s1", "MATH"), "present", 1)])
    assert group.attendance_marks is None and group.attendance_rate is None


def test_groups_without_pass_fail_or_five_point_marks_have_no_mean_or_share() -> None:
    [group] = summarise((S,), [MarkCount(("s1",), "hundred", "87", 2)])
    assert (group.mean_five_point, group.pass_share, group.count) == (None, None, 2)


def test_dimensions_are_parsed_in_a_fixed_order() -> None:
    assert parse_dimensions(None) == ALL_DIMENSIONS
    assert parse_dimensions("subject, district") == (D, Dimension.SUBJECT)
    with pytest.raises(InvalidContent, match="pupil"):
        parse_dimensions("school,pupil")
