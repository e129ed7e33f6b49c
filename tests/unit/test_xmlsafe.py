"""The hardened parser refuses every hostile document, says where, and still reads ours."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from broker.domain.faults import InvalidContent
from broker.xml import hardened
from broker.xml.hardened import XmlLimits

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
HOSTILE = sorted((SCHEMAS / "examples" / "hostile").glob("*.xml"))
GRADE = (SCHEMAS / "examples" / "events" / "valid" / "GradePosted.xml").read_bytes()


def test_the_corpus_is_there():
    assert len(HOSTILE) >= 15


@pytest.mark.parametrize("path", HOSTILE, ids=lambda path: path.name)
def test_hostile_corpus_is_refused(path):
    with pytest.raises(InvalidContent):
        hardened.parse(path.read_bytes())


@pytest.mark.parametrize(("name", "reason"), [
    ("billion-laughs.xml", "DOCTYPE"),
    ("xxe-file.xml", "DOCTYPE"),
    ("external-dtd.xml", "DOCTYPE"),
    ("xinclude-passwd.xml", "XInclude"),
    ("xml-stylesheet.xml", "processing instruction"),
    ("undeclared-entity.xml", "Entity 'nbsp' not defined"),
    ("utf-16.xml", "UTF-16"),
    ("windows-1251-declared.xml", "encoding 'windows-1251'"),
    ("windows-1251-undeclared.xml", "not well-formed"),
    ("xml-1.1.xml", "version"),
])
def test_refusals_say_why(name, reason):
    with pytest.raises(InvalidContent, match=reason):
        hardened.parse((SCHEMAS / "examples" / "hostile" / name).read_bytes())


def test_refusals_say_where():
    with pytest.raises(InvalidContent) as caught:
        hardened.parse((SCHEMAS / "examples" / "hostile" / "xinclude-passwd.xml").read_bytes())
    assert caught.value.description.startswith("line 3, /GradePosted/Comment/include:")
    assert caught.value.details == {"line": 3, "path": "/GradePosted/Comment/include"}
    with pytest.raises(InvalidContent, match=r"InvalidContent: line 2, column \d+: not well-formed"):
        hardened.parse(b"<a>\n<b></a>")


@pytest.mark.parametrize(("document", "reason"), [
    # The namespace made of character references: no "XInclude" in the bytes.
    (b'<a xmlns:xi="http://www.w3.org/2001/&#88;Include"><xi:include href="/etc/passwd"/></a>', "XInclude"),
    (b'<a xmlns:xi="http://www.w3.org/2003/XInclude"><xi:include href="/etc/passwd"/></a>', "XInclude"),
    # "<?xml-stylesheet" is a PI, not a declaration; after a declaration, a PI anywhere is still one.
    (b'<?xml-stylesheet href="x.xsl"?><a/>', "processing instruction"),
    (b"<?xml version='1.0'?><a><?php x?></a>", "processing instruction"),
    (b"<?xml version='1.0'?><a/><?tail x?>", "processing instruction"),
    (b"\xef\xbb\xbf<?xml version='1.0'?><a><b><?x y?></b></a>", "processing instruction"),
])
def test_what_the_tree_walk_finds_is_found_in_small_documents(document, reason):
    """Small documents skip the walk when their bytes cannot hold what it looks for; these can."""
    with pytest.raises(InvalidContent, match=reason):
        hardened.parse(document)


@pytest.mark.parametrize("document", [
    b'<?xml version="1.1"' + b" " * 200 + b"?><a/>",
    b'<?xml version="1.0"' + b" " * 200 + b'encoding="windows-1251"?><a>ok</a>',
], ids=["xml 1.1", "windows-1251"])
def test_a_declaration_too_long_to_check_is_refused(document):
    """The declaration's version and encoding are read by a bounded scan; one past it was parsed unchecked."""
    with pytest.raises(InvalidContent, match="declaration is malformed or longer than 200"):
        hardened.parse(document)


def test_doctype_is_refused_even_when_harmless():
    with pytest.raises(InvalidContent, match="DOCTYPE"):
        hardened.parse(b"<!DOCTYPE a><a/>")


def test_a_document_over_max_bytes_is_refused_before_parsing():
    with pytest.raises(InvalidContent, match="over the limit of 1048576"):
        hardened.parse(b"<a>" + b"x" * 50_000_000 + b"</a>")


def test_deep_nesting_is_refused():
    with pytest.raises(InvalidContent):
        hardened.parse(b"<a>" * 100_000 + b"</a>" * 100_000)
    with pytest.raises(InvalidContent, match="nesting deeper than 64"):
        hardened.parse(b"<a>" * 65 + b"</a>" * 65)
    assert hardened.parse(b"<a>" * 64 + b"</a>" * 64) is not None
    # The depth check is skipped only when the start tags cannot reach it; "</" in a comment cannot hide one.
    with pytest.raises(InvalidContent, match="nesting deeper than 64"):
        hardened.parse(b"<a>" * 65 + b"<!--" + b"</" * 200 + b"-->" + b"</a>" * 65)


def test_element_count_is_bounded_before_the_tree_is_built():
    with pytest.raises(InvalidContent, match="more than 50000 elements"):
        hardened.parse(b"<a>" + b"<b/>" * 50_000 + b"</a>")
    assert len(hardened.parse(b"<a>" + b"<b/>" * 49_999 + b"</a>")) == 49_999


@pytest.mark.parametrize(("document", "reason"), [
    (b"<a>" + b"x" * 70_000 + b"</a>", "text is longer"),
    (b"<a><b/>" + b"x" * 70_000 + b"</a>", "text is longer"),
    (b'<a b="' + b"x" * 70_000 + b'"/>', "attribute b is longer"),
])
def test_long_text_and_attributes_are_refused(document, reason):
    with pytest.raises(InvalidContent, match=reason):
        hardened.parse(document)


def test_limits_are_options():
    assert hardened.parse(b"<a>" + b"x" * 70_000 + b"</a>", limits=XmlLimits(max_text=100_000)).text
    with pytest.raises(InvalidContent, match="over the limit of 10"):
        hardened.parse(b"<a>0123456789</a>", limits=XmlLimits(max_bytes=10))
    with pytest.raises(InvalidContent, match="more than 2 elements"):
        hardened.parse(b"<a><b/><c/></a>", limits=XmlLimits(max_elements=2))


def test_bad_utf8_without_declaration_is_refused():
    with pytest.raises(InvalidContent, match="not well-formed"):
        hardened.parse("<a>Отлично</a>".encode("cp1251"))


def test_utf8_is_read_with_or_without_declaration_or_bom():
    for document in ("<a>Отлично</a>", '<?xml version="1.0" encoding="utf-8"?><a>Отлично</a>',
                     "\ufeff<a>Отлично</a>", "<?xml version='1.0'?><a>Отлично</a>"):
        assert hardened.parse(document.encode("utf-8")).text == "Отлично"


def test_comments_are_dropped_and_lines_kept():
    root = hardened.parse(b"<!-- vendor note -->\n<a>\n<!-- x --><b/></a>")
    assert [child.tag for child in root] == ["b"]
    assert root[0].sourceline == 3


def test_predefined_entities_and_character_references_are_fine():
    assert hardened.parse(b"<a>&lt;&amp;&gt;&quot;&apos;&#1054;&#x41;</a>").text == "<&>\"'ОA"


def test_str_is_a_programming_error():
    with pytest.raises(TypeError):
        hardened.parse("<a/>")  # type: ignore[arg-type]


def test_to_bytes_round_trips():
    root = hardened.parse(GRADE)
    assert hardened.to_bytes(hardened.parse(hardened.to_bytes(root))) == hardened.to_bytes(root)


def test_threads_parse_independently():
    errors: list[BaseException] = []

    def work(good: bool) -> None:
        try:
            for _ in range(200):
                if good:
                    assert hardened.parse(GRADE).tag.endswith("GradePosted")
                else:
                    with pytest.raises(InvalidContent, match="Entity 'x' not defined"):
                        hardened.parse(b"<a>&x;</a>")
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(index % 2 == 0,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def element_with_attributes(count: int) -> bytes:
    return (b'<GradePosted xmlns="urn://ejx/events/1" '
            + b" ".join(b'a%d="v"' % i for i in range(count)) + b"/>")


@pytest.mark.parametrize("count", [40_000, 200_000])
def test_an_element_with_very_many_attributes_is_refused_in_linear_time(count):
    """A vendor's 2.3 MB body with 200,000 attributes took 214 s (lxml's attrib.items() is quadratic)."""
    document = element_with_attributes(count)
    limits = XmlLimits(max_bytes=len(document))  # so that it is the attribute count, not the size, that refuses
    started = time.perf_counter()
    with pytest.raises(InvalidContent, match="line 1, /GradePosted: more than 64 attributes on one element"):
        hardened.parse(document, limits=limits)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("count", [20_000, 100_000])
def test_very_many_namespace_declarations_are_refused_at_once(count):
    """100,000 xmlns declarations on a 2.2 MB EventBatch parsed fast but took 162 s to validate."""
    document = (b'<EventBatch xmlns="urn://ejx/events/1" '
                + b" ".join(b'xmlns:p%d="urn:x:%d"' % (i, i) for i in range(count)) + b"/>")
    started = time.perf_counter()
    with pytest.raises(InvalidContent, match="more than 4096 namespace declarations"):
        hardened.parse(document, limits=XmlLimits(max_bytes=len(document)))
    assert time.perf_counter() - started < 1.0


def test_a_batch_of_a_thousand_events_each_declaring_its_namespace_is_accepted():
    event = b'<GradeRetracted xmlns="urn://ejx/events/1"/>'
    root = hardened.parse(b'<EventBatch xmlns="urn://ejx/events/1">' + event * 1000 + b"</EventBatch>")
    assert len(root) == 1000


def test_attributes_per_element_are_an_option_counted_only_when_they_could_be_over():
    assert len(hardened.parse(element_with_attributes(64)).attrib) == 64
    with pytest.raises(InvalidContent, match="more than 64 attributes"):
        hardened.parse(b"<r><e/>" + element_with_attributes(65) + b"</r>")
    assert len(hardened.parse(element_with_attributes(65), limits=XmlLimits(max_attributes=65)).attrib) == 65
    # "=" in text or values only makes the byte bound stricter, never refuses by itself
    assert hardened.parse(b'<a b="' + b"=" * 100 + b'">' + b"=" * 100 + b"</a>").get("b") == "=" * 100


def test_long_attributes_are_found_on_any_element_and_named():
    with pytest.raises(InvalidContent, match=r"line 3, /r/e\[2\]: attribute \{urn:x\}long is longer") as caught:
        hardened.parse(b'<r xmlns:x="urn:x">\n<e a="1"/>\n<e x:long="' + b"y" * 70_000 + b'"/></r>')
    assert caught.value.details == {"line": 3, "path": "/r/e[2]"}
