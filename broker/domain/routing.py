"""Routing rules: which recipients get an event, by event type, district or school.

Rules live in a TOML file (``broker/domain/routing.toml`` by default) and are checked
once when loaded — an unknown recipient, channel or event type fails at start,
not on the first event that needs it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from broker.domain.faults import InvalidContent
from broker.domain.mnemonics import mnemonic
from broker.domain.model import EVENT_TYPES

CHANNELS = frozenset({"portal", "interagency"})
"""Delivery channels, named like ``outbox.destination`` and the relay's destinations."""


@dataclass(frozen=True)
class Route:
    """One envelope to build: for whom, over which channel, and whether it is a TestMessage."""

    recipient: str
    channel: str
    test: bool = False


@dataclass(frozen=True)
class Rule:
    """Adds ``recipients`` for events matching every condition given (None = any)."""

    name: str
    recipients: tuple[str, ...]
    event_types: frozenset[str] | None = None
    districts: frozenset[str] | None = None
    schools: frozenset[str] | None = None
    test: bool = False

    def matches(self, *, event_type: str, school_id: str, district: str | None) -> bool:
        return ((self.event_types is None or event_type in self.event_types)
                and (self.schools is None or school_id in self.schools)
                and (self.districts is None or district in self.districts))


class RoutingTable:
    """Rules plus each recipient's channel; :meth:`route` is pure and cheap."""

    def __init__(self, rules: Iterable[Rule], channels: Mapping[str, str]) -> None:
        self.rules = tuple(rules)
        self.channels = dict(channels)
        for name, channel in self.channels.items():
            mnemonic(name, "routing: recipient")
            if channel not in CHANNELS:
                raise InvalidContent(f"routing: recipient {name} has unknown channel {channel!r} "
                                     f"(known: {', '.join(sorted(CHANNELS))})")
        for rule in self.rules:
            unknown = [r for r in rule.recipients if r not in self.channels]
            if unknown:
                raise InvalidContent(f"routing: rule {rule.name!r} names undeclared recipients {unknown}")
            bad_types = sorted((rule.event_types or frozenset()) - EVENT_TYPES.keys())
            if bad_types:
                raise InvalidContent(f"routing: rule {rule.name!r} names unknown event types {bad_types}")

    def route(self, *, event_type: str, school_id: str, district: str | None = None) -> list[Route]:
        """Recipients of one event in rule order, each once; a TestMessage if any matching rule says so."""
        routes: dict[str, Route] = {}
        for rule in self.rules:
            if not rule.matches(event_type=event_type, school_id=school_id, district=district):
                continue
            for recipient in rule.recipients:
                earlier = routes.get(recipient)
                routes[recipient] = Route(recipient, self.channels[recipient],
                                          test=rule.test or (earlier.test if earlier else False))
        return list(routes.values())

    @classmethod
    def from_toml(cls, text: str, *, source: str = "routing") -> RoutingTable:
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise InvalidContent(f"{source}: {error}") from None
        recipients = document.get("recipients", {})
        if not isinstance(recipients, dict) or not recipients:
            raise InvalidContent(f"{source}: [recipients.NAME] tables with a channel are required")
        channels = {name: str(spec.get("channel", "")) for name, spec in recipients.items()
                    if isinstance(spec, dict)}
        rules = [_rule(entry, index, source) for index, entry in enumerate(document.get("rules", []))]
        return cls(rules, channels)

    @classmethod
    def load(cls, path: Path | None = None) -> RoutingTable:
        """The table in ``path``, or the packaged default ``broker/domain/routing.toml``."""
        if path is None:
            return cls.from_toml(resources.files("broker.domain").joinpath("routing.toml").read_text("utf-8"),
                                 source="broker/domain/routing.toml")
        try:
            text = Path(path).read_text("utf-8")
        except OSError as error:
            raise InvalidContent(f"routing file {path}: {error.strerror or error}") from None
        return cls.from_toml(text, source=str(path))


_RULE_KEYS = {"name", "recipients", "event_types", "districts", "schools", "test"}


def _rule(entry: object, index: int, source: str) -> Rule:
    if not isinstance(entry, dict):
        raise InvalidContent(f"{source}: rules[{index}] is not a table")
    name = str(entry.get("name", f"rules[{index}]"))
    unknown = sorted(entry.keys() - _RULE_KEYS)
    if unknown:
        raise InvalidContent(f"{source}: rule {name!r} has unknown keys {unknown}")
    recipients = entry.get("recipients")
    if not isinstance(recipients, list) or not recipients:
        raise InvalidContent(f"{source}: rule {name!r} needs a non-empty recipients list")

    def strings(key: str) -> frozenset[str] | None:
        value = entry.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidContent(f"{source}: rule {name!r}: {key} must be a list of strings")
        return frozenset(value)

    test = entry.get("test", False)
    if not isinstance(test, bool):
        raise InvalidContent(f"{source}: rule {name!r}: test must be true or false")
    return Rule(name=name, recipients=tuple(str(r) for r in recipients), event_types=strings("event_types"),
                districts=strings("districts"), schools=strings("schools"), test=test)
