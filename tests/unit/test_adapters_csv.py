"""CSV exports: encodings, delimiters, Russian headers and cell formats, without I/O beyond fixtures."""

from __future__ import annotations

import io
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from adapters.csv_import import (
    CsvExport,
    RowMapper,
    canonical_column,
    detect_encoding,
    mark_scale,
)
from broker.domain.faults import InvalidContent

FIXTURES = Path(__file__).parent.parent / "fixtures" / "adapters"


def test_encodings_are_detected():
    assert detect_encoding("Ученик;Оценка".encode()) == "utf-8"
    assert detect_encoding(b"\xef\xbb\xbf" + "Ученик".encode()) == "utf-8-sig"
    assert detect_encoding("Ученик;Оценка".encode("cp1251")) == "cp1251"
    assert detect_encoding("Ученик".encode()[:-1]) == "utf-8"  # a character cut by the sample's end


@pytest.mark.parametrize(("header", "column"), [
    ("Ученик", "student_id"), (" Предмет ", "subject_code"), ("ОЦЕНКА", "mark"), ("Дата урока", "lesson_date"),
    ("Учитывать в среднем", "counts_in_average"), ("Учёбный год".replace("ё", "е"), "academic_year"),
    ("school_id", "school_id"), ("Source Record Id", "source_record_id"),
])
def test_russian_and_english_headers_map_to_fields(header, column):
    assert canonical_column(header) == column


@pytest.mark.parametrize("name", ["grades_ru_utf8.csv", "grades_ru_cp1251.csv"])
def test_both_encodings_read_the_same_rows_with_their_line_numbers(name):
    with (FIXTURES / name).open("rb") as stream:
        export = CsvExport(stream)
        rows = list(export.rows())
    assert [r.line for r in rows] == [2, 3, 4, 5, 6, 7]
    assert rows[0].cells["student_id"] == "st-77k3f9q2m"
    assert rows[0].cells["work_type"] == "Контрольная работа"
    assert rows[5].cells["comment"] == "многострочный\nкомментарий"
    assert not any(r.undecodable for r in rows)


def test_a_line_in_another_encoding_is_flagged_not_fatal():
    head = "№,комментарий\n".encode() + b"1,ok\n" * 5000  # past the sample the encoding is judged on
    data = head + "2,плохо\n".encode("cp1251") + b"3,fine\n"
    export = CsvExport(io.BufferedReader(io.BytesIO(data), buffer_size=8192))
    rows = list(export.rows())
    assert export.encoding == "utf-8"
    assert [(r.line, r.undecodable) for r in rows[-3:]] == [(5001, False), (5002, True), (5003, False)]


def test_a_row_becomes_an_event_in_json_form():
    mapper = RowMapper(timezone=ZoneInfo("Europe/Moscow"))
    event = mapper.event({"source_record_id": "g-1", "version": "2", "occurred_at": "14.10.2026 09:41",
                          "lesson_date": "14.10.2026", "weight": "1,5", "mark": "5",
                          "counts_in_average": "да", "comment": " ", "school_id": " sch-1 "})
    assert event == {"type": "GradePosted", "source_record_id": "g-1", "version": 2,
                     "occurred_at": "2026-10-14T09:41:00+03:00", "lesson_date": "2026-10-14", "weight": 1.5,
                     "mark": {"scale": "five-point", "value": "5"}, "counts_in_average": True,
                     "school_id": "sch-1"}


def test_explicit_scale_and_type_win():
    event = RowMapper().event({"type": "TermGradeFinalized", "mark": "осв", "mark_scale": "special"})
    assert event == {"type": "TermGradeFinalized", "mark": {"scale": "special", "value": "осв"}}


@pytest.mark.parametrize(("value", "scale"), [("5", "five-point"), ("1", "five-point"), ("зач", "pass-fail"),
                                              ("незач", "pass-fail"), ("8", "ten"), ("87", "hundred")])
def test_a_bare_mark_gets_its_scale(value, scale):
    assert mark_scale(value) == scale


@pytest.mark.parametrize(("column", "value"), [("lesson_date", "32.10.2026"), ("version", "v2"),
                                               ("counts_in_average", "может быть"), ("weight", "тяжёлый"),
                                               ("occurred_at", "вчера")])
def test_bad_cells_are_invalid_content_naming_the_column(column, value):
    with pytest.raises(InvalidContent) as caught:
        RowMapper().event({column: value})
    assert caught.value.details["path"] == f"/{column}"
