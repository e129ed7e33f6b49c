"""Marks as Russian school journals give them, each checked against its scale."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from broker.domain.model.errors import ModelError

ABSENT = "н"
"""What a journal shows for an absence: attendance, never a mark."""


class MarkScale(StrEnum):
    """How a mark is expressed; SPECIAL holds outcomes that are no score at all."""

    FIVE_POINT = "five-point"
    PASS_FAIL = "pass-fail"
    TEN = "ten"
    HUNDRED = "hundred"
    SPECIAL = "special"


VALUES: dict[MarkScale, tuple[str, ...]] = {
    MarkScale.FIVE_POINT: ("1", "2", "3", "4", "5"),
    MarkScale.PASS_FAIL: ("зач", "незач"),
    MarkScale.TEN: tuple(str(points) for points in range(1, 11)),
    MarkScale.HUNDRED: tuple(str(points) for points in range(0, 101)),
    MarkScale.SPECIAL: ("осв", "н/а"),  # exempt, not assessed
}
"""Every value a scale admits, in its canonical spelling."""

_NUMERIC = (MarkScale.FIVE_POINT, MarkScale.TEN, MarkScale.HUNDRED)


@dataclass(frozen=True)
class Mark:
    """One mark: a scale and a value that scale admits."""

    scale: MarkScale
    value: str

    def __post_init__(self) -> None:
        if not isinstance(self.scale, MarkScale):
            raise ModelError(f"mark scale must be one of {', '.join(MarkScale)}, not {self.scale!r}")
        if self.value == ABSENT:
            raise ModelError("«н» is attendance (AttendanceMarked, status absent), not a mark")
        if self.value not in VALUES[self.scale]:
            allowed = "0-100" if self.scale is MarkScale.HUNDRED else ", ".join(VALUES[self.scale])
            raise ModelError(f"{self.value!r} is not a {self.scale} mark (allowed: {allowed})")

    @property
    def points(self) -> int | None:
        """The numeric value for averages; None for pass-fail and special marks."""
        return int(self.value) if self.scale in _NUMERIC else None
