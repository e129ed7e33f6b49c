"""The outbox keeps order per journal record, and only there."""

from __future__ import annotations

from broker.devtools.simulation import simulate
from broker.domain.model import GradeCorrected, GradePosted, GradeRetracted
from consumers.router import ordering_key


def test_a_grade_and_its_corrections_and_retraction_share_one_key_and_other_records_do_not() -> None:
    events = [event for batch in simulate(schools=3, students_per_school=30, seed=3).events.values()
              for event in batch]
    grades = {event.source_record_id: event for event in events if isinstance(event, GradePosted)}
    changes = [event for event in events if isinstance(event, (GradeCorrected, GradeRetracted))]
    assert changes, "the simulation must produce corrections or retractions for this test to mean anything"
    for change in changes:
        assert ordering_key(change) == ordering_key(grades[change.grade_ref])
    keys = [ordering_key(grade) for grade in grades.values()]
    assert len(set(keys)) == len(keys)
