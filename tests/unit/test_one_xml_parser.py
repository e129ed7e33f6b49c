"""One parser for all of ejx: only broker/xml/hardened.py builds an lxml parser or parses bytes with one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lxml import etree

from broker.xml import hardened

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("broker", "adapters", "consumers")
THE_PARSER = ROOT / "broker" / "xml" / "hardened.py"

# Constructing a parser, or calling an lxml entry point that falls back on lxml's default parser
# (which, unlike ours, substitutes entities and loads DTDs it is pointed at).
PARSING = re.compile(r"\b(?:XMLParser|XMLPullParser|ETCompatXMLParser|HTMLParser|HTMLPullParser)\s*\("
                     r"|\betree\.(?:fromstring|fromstringlist|XML|XMLID|XMLDTDID|HTML|parse|iterparse)\s*\(")


def sources() -> list[Path]:
    return sorted(path for top in SOURCES for path in (ROOT / top).rglob("*.py") if path != THE_PARSER)


def test_the_source_tree_is_searched():
    names = {path.relative_to(ROOT).as_posix() for path in sources()}
    assert {"broker/xml/schemas.py", "broker/xml/signing/signer.py", "adapters/ingest.py",
            "consumers/router.py"} <= names
    assert PARSING.search(THE_PARSER.read_text(encoding="utf-8")), "the pattern no longer sees the one parser"


def test_no_module_but_hardened_builds_or_uses_its_own_parser():
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in sources()
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
             if PARSING.search(line)]
    assert found == [], "parse through broker.xml.hardened (parse, or parse_trusted for ejx's own bytes):\n" + \
        "\n".join(found)


def test_trusted_input_resolves_nothing_either():
    assert hardened.parse_trusted(b'<!DOCTYPE a [<!ENTITY e "expanded">]><a>&e;</a>').text is None
    secret = hardened.parse_trusted(b'<!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/hostname">]><a>&e;</a>')
    assert etree.tostring(secret, method="text") == b""


def test_trusted_input_keeps_the_base_url_for_imports(tmp_path):
    (tmp_path / "imported.xsd").write_bytes(
        b'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:i">'
        b'<xs:element name="i"/></xs:schema>')
    main = (b'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:i="urn:i">'
            b'<xs:import namespace="urn:i" schemaLocation="imported.xsd"/>'
            b'<xs:element name="m"><xs:complexType><xs:sequence><xs:element ref="i:i"/></xs:sequence>'
            b'</xs:complexType></xs:element></xs:schema>')
    schema = etree.XMLSchema(hardened.parse_trusted(main, base_url=str(tmp_path / "main.xsd")))
    assert schema.validate(hardened.parse(b'<m><i xmlns="urn:i"/></m>'))


def test_trusted_input_is_bytes_and_malformed_bytes_are_a_bug_not_a_fault():
    with pytest.raises(TypeError):
        hardened.parse_trusted("<a/>")  # type: ignore[arg-type]
    with pytest.raises(etree.XMLSyntaxError):
        hardened.parse_trusted(b"<a>")
