"""The shape of a CSV export: rows wider than the header, ambiguous headers, line ends and encodings
that are not CSV as ejx reads it — refused with a reason, never cut silently or left to a traceback."""

from __future__ import annotations

import io

import pytest

from adapters.csv_import import CsvExport
from broker.domain.faults import InvalidContent

HEADER = "Код записи;Ученик;Комментарий;Оценка\n"


def read(data: bytes, **options: int) -> tuple[CsvExport, list]:
    export = CsvExport(io.BufferedReader(io.BytesIO(data)), **options)
    return export, list(export.rows())


def test_a_row_wider_than_the_header_is_rejected_naming_both_counts():
    data = (HEADER + "g-1;st-1;Молодец; 4;5\ng-2;st-2;;4\n").encode()
    _, rows = read(data)
    assert rows[0].line == 2 and rows[0].cells == {}
    assert rows[0].broken == "line 2 has 5 cells, the header has 4 (an unquoted ';' in a cell?)"
    assert rows[1].broken is None and rows[1].cells["mark"] == "4"


def test_a_delimiter_ending_every_row_is_no_extra_cell():
    _, rows = read((HEADER + "g-1;st-1;;5;\ng-2;st-2;;4;;\n").encode())
    assert [(r.broken, r.cells["mark"]) for r in rows] == [(None, "5"), (None, "4")]


def test_a_row_narrower_than_the_header_is_still_read_missing_cells_as_empty():
    _, [row] = read((HEADER + "g-1;st-1\n").encode())
    assert row.broken is None and row.cells == {"source_record_id": "g-1", "student_id": "st-1"}


@pytest.mark.parametrize(("header", "first", "second"), [
    ("Школа;Код школы;Оценка", "Школа", "Код школы"),
    ("Код записи;Оценка;Отметка", "Оценка", "Отметка"),
    ("source_record_id;Source Record Id", "source_record_id", "Source Record Id"),
])
def test_two_header_cells_meaning_one_column_refuse_the_file(header, first, second):
    with pytest.raises(InvalidContent) as caught:
        read(f"{header}\n1;2;3\n".encode())
    assert f"{first!r} and {second!r}" in caught.value.description


def test_empty_header_cells_are_not_duplicates():
    _, [row] = read(b"source_record_id;;\ng-1;;\n")
    assert row.broken is None and row.cells["source_record_id"] == "g-1"


def test_a_cr_only_file_is_refused_as_such_and_not_read_whole():
    row = "g-1;st-1;ok;5\r"
    data = (HEADER.replace("\n", "\r") + row * 200_000).encode()  # ~3 MB on one "line"
    export = CsvExport(io.BufferedReader(io.BytesIO(data)))
    with pytest.raises(InvalidContent) as caught:
        list(export.rows())
    assert "CR only" in caught.value.description
    assert export.bytes_read < len(data) // 2  # stopped at the bounded first read


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_is_refused_with_what_to_save_instead(encoding):
    bom = {"utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}.get(encoding, b"")
    with pytest.raises(InvalidContent) as caught:
        read(bom + (HEADER + "g-1;st-1;ok;5\n").encode(encoding))
    assert caught.value.description == "UTF-16 is not supported, save as UTF-8 or Windows-1251"


def test_a_line_longer_than_the_limit_is_rejected_and_skipped_in_bounded_reads():
    data = (HEADER + "g-1;st-1;" + "x" * 5000 + ";5\n" + "g-2;st-2;ok;4\n").encode()
    export, rows = read(data, max_line_bytes=1000)
    assert [(r.line, r.broken) for r in rows] == [
        (2, "line 2 is longer than 1000 bytes; it was skipped"), (3, None)]
    assert rows[1].cells["mark"] == "4"
    assert export.bytes_read == len(data)


def test_a_header_longer_than_the_limit_refuses_the_file():
    with pytest.raises(InvalidContent) as caught:
        read(("Оценка;" * 500 + "\n1\n").encode(), max_line_bytes=1000)
    assert caught.value.description == "line 1 (the header) is longer than 1000 bytes"
