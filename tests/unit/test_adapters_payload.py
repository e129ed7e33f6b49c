"""Vendor payloads: every hostile or malformed body becomes a fault with the documented status."""

from __future__ import annotations

import pytest

from adapters.payload import (
    ContentTooLarge,
    PayloadFormat,
    PayloadLimits,
    UnsupportedContentType,
    check_declared_size,
    json_document,
    json_events,
    payload_format,
    xml_events,
)
from broker.domain.faults import InvalidContent

LIMITS = PayloadLimits(max_bytes=10_000, max_events=3)


@pytest.mark.parametrize(("header", "kind"), [
    ("application/json", PayloadFormat.JSON), ("application/json; charset=utf-8", PayloadFormat.JSON),
    ("Application/JSON", PayloadFormat.JSON), ("application/xml", PayloadFormat.XML),
    ("text/xml; charset=UTF-8", PayloadFormat.XML),
])
def test_json_and_xml_are_recognised(header, kind):
    assert payload_format(header) is kind


@pytest.mark.parametrize("header", [None, "", "text/plain", "multipart/form-data; boundary=x",
                                    "application/x-www-form-urlencoded", "application/json; charset=cp1251"])
def test_other_content_types_are_415(header):
    with pytest.raises(UnsupportedContentType) as caught:
        payload_format(header)
    assert caught.value.http_status == 415 and caught.value.code == "InvalidContent"


def test_declared_size_over_the_limit_is_413_and_a_bogus_one_400():
    check_declared_size("10000", LIMITS)
    with pytest.raises(ContentTooLarge) as caught:
        check_declared_size("10001", LIMITS)
    assert caught.value.http_status == 413
    with pytest.raises(InvalidContent) as caught:
        check_declared_size("lots", LIMITS)
    assert caught.value.http_status == 400


def test_one_event_or_a_list():
    assert json_events(b'{"type": "GradePosted"}', LIMITS) == [{"type": "GradePosted"}]
    assert json_events(b'[{"a": 1}, 2]', LIMITS) == [{"a": 1}, 2]


def test_too_many_events_is_413_and_none_400():
    with pytest.raises(ContentTooLarge):
        json_events(b"[1, 2, 3, 4]", LIMITS)
    with pytest.raises(InvalidContent):
        json_events(b"[]", LIMITS)


@pytest.mark.parametrize(("body", "words"), [
    (b"[" * 50_000 + b"]" * 50_000, "nested"),
    (b'{"a":' * 100_000, "nested"),
    (b"[[[[[[[[[[[1]]]]]]]]]]]", "nested"),
    (b'{"version": ' + b"9" * 10_000 + b"}", "too long"),
    (b'{"weight": 1e999}', "out of range"),
    (b'{"weight": NaN}', "NaN"),
    (b'{"weight": -Infinity}', "Infinity"),
    (b'{"a": "\xc3\x28"}', "UTF-8"),
    (b"\xff\xfe{\x00}\x00", "UTF-8"),
    (b'{"school_id": "a", "school_id": "b"}', "twice"),
    (b'{"a": ', "not JSON"),
    (b"", "not JSON"),
])
def test_hostile_json_is_invalid_content(body, words):
    with pytest.raises(InvalidContent) as caught:
        json_events(body, PayloadLimits())
    assert caught.value.http_status == 400
    assert words in caught.value.description


def test_json_depth_limit_counts_containers_only():
    """Eight levels of arrays and objects pass, a ninth is refused; scalars at the bottom add no level."""
    limits = PayloadLimits()
    assert json_document(b'{"a": ' * 4 + b"[" * 4 + b'"leaf"' + b"]" * 4 + b"}" * 4, limits)
    assert json_document(b"[" * 8 + b"]" * 8, limits) == [[[[[[[[]]]]]]]]
    for deeper in (b"[" * 9 + b"]" * 9, b'{"a": ' * 4 + b"[" * 4 + b"{}" + b"]" * 4 + b"}" * 4):
        with pytest.raises(InvalidContent, match="nested deeper than 8"):
            json_document(deeper, limits)


def test_oversized_body_is_refused_before_parsing():
    with pytest.raises(ContentTooLarge):
        json_document(b" " * 10_001, LIMITS)
    with pytest.raises(ContentTooLarge):
        xml_events(b" " * 10_001, LIMITS)


def test_xml_batch_yields_its_events_and_one_event_itself():
    batch = (b'<EventBatch xmlns="urn://ejx/events/1"><GradePosted/><!-- c --><GradeRetracted/></EventBatch>')
    assert [e.tag.split("}")[1] for e in xml_events(batch, LIMITS)] == ["GradePosted", "GradeRetracted"]
    assert xml_events(b'<GradePosted xmlns="urn://ejx/events/1"/>', LIMITS)[0].tag.endswith("GradePosted")


@pytest.mark.parametrize("body", [
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><GradePosted>&a;</GradePosted>',
    b'<!DOCTYPE x SYSTEM "file:///etc/passwd"><x/>',
    b"<a>" * 200 + b"</a>" * 200,
    b'<?xml version="1.0" encoding="UTF-16"?><a/>',
    b"<a><b></a>",
    b'<x:include xmlns:x="http://www.w3.org/2001/XInclude" href="/etc/passwd"/>',
])
def test_hostile_xml_is_invalid_content(body):
    with pytest.raises(InvalidContent) as caught:
        xml_events(body, PayloadLimits())
    assert caught.value.http_status == 400


@pytest.mark.parametrize(("body", "path"), [
    (b'{"source_record_id": "\\ud800"}', "/source_record_id"),
    (b'[{"a": 1}, {"comment": "ok \\udc80 not"}]', "/1/comment"),
    (b'{"mark": {"\\uDBFF": "5"}}', "/mark"),
])
def test_a_lone_surrogate_is_invalid_content_with_its_path(body, path):
    """UTF-8 cannot carry one: refused here rather than crashing the event id, the answer or the log later."""
    with pytest.raises(InvalidContent, match="lone surrogate") as caught:
        json_events(body, PayloadLimits())
    assert caught.value.details == {"path": path}


def test_paired_surrogates_and_an_escaped_backslash_are_text():
    assert json_document(b'{"comment": "\\ud83d\\ude00 \\\\ud800"}') == {"comment": "\U0001f600 \\ud800"}
