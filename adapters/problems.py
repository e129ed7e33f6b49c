"""Why one event of a request, or one row of an import, was refused."""

from __future__ import annotations

from dataclasses import dataclass

from broker.domain.faults import InvalidContent


@dataclass(frozen=True)
class Problem:
    """One refused event: enough for a vendor to find and fix it."""

    index: int
    """Position in the request (0-based), or the line number in an imported file."""
    path: str
    """Where in the event: a JSON pointer for JSON, an element path for XML, a column for CSV."""
    reason: str
    code: str = InvalidContent.code

    def as_dict(self) -> dict[str, object]:
        return {"index": self.index, "path": self.path, "reason": self.reason, "code": self.code}
