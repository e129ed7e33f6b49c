"""Errors of the pure model; callers at the edges map them to faults."""

from __future__ import annotations


class ModelError(ValueError):
    """An event, mark or document breaks a rule of the domain (-> ``InvalidContent``)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        """The offending field's snake_case name, when one field is to blame."""


class UnknownEventType(ModelError):
    """A document or dict names no event type we know (-> ``UnknownMessageType``)."""
