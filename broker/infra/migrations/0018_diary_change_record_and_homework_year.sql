-- A grade's changes come from more than one source record when a vendor sends a correction or a
-- retraction as a record of its own. Versions grow per source record, so they order the changes of one
-- record only: the row now keeps the record id of the change in force, and a change from another record
-- is ordered by when it happened in the journal (see broker/analytics/projections/diary.py).
ALTER TABLE diary_grades ADD COLUMN change_record_id text;
UPDATE diary_grades SET change_record_id = grade_record_id;
ALTER TABLE diary_grades ALTER COLUMN change_record_id SET NOT NULL;

-- A pupil's homework is that of the classes they are graded in this academic year, not in any year:
-- class names such as 7Б come back every year. Homework applied before this has no year and is matched
-- by class alone until it is applied again.
ALTER TABLE diary_homework ADD COLUMN academic_year text;
