"""The pure domain model: canonical events, marks and their XML and JSON forms.

No I/O and no third-party imports: readable in one sitting, testable alone.
Errors are :class:`ModelError` (map to ``InvalidContent``) and
:class:`UnknownEventType` (map to ``UnknownMessageType``).
"""

from broker.domain.model.errors import ModelError, UnknownEventType
from broker.domain.model.events import (
    EVENT_TYPES,
    MAX_BATCH,
    SCHEMA_VERSION,
    AttendanceMarked,
    AttendanceStatus,
    Event,
    EventType,
    GradeCorrected,
    GradePosted,
    GradeRetracted,
    HomeworkAssigned,
    TermGradeFinalized,
    TermPeriod,
    batch_to_xml,
    event_from_xml,
    events_from_xml,
)
from broker.domain.model.json_form import event_from_dict, event_to_dict
from broker.domain.model.marks import Mark, MarkScale
from broker.domain.model.xml_form import NAMESPACE

__all__ = [
    "EVENT_TYPES", "MAX_BATCH", "NAMESPACE", "SCHEMA_VERSION",
    "AttendanceMarked", "AttendanceStatus", "Event", "EventType", "GradeCorrected", "GradePosted",
    "GradeRetracted", "HomeworkAssigned", "Mark", "MarkScale", "ModelError", "TermGradeFinalized",
    "TermPeriod", "UnknownEventType",
    "batch_to_xml", "event_from_dict", "event_from_xml", "event_to_dict", "events_from_xml",
]
