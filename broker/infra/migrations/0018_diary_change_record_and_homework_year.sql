-- A grade's changes come from more than one source record when a vendor sends a correction or a
-- retraction as a record of its own. Versions grow per source record, so they order the changes of one
-- record only: the row now keeps the record id of the change in force, and a change from another record
-- is ordered by when it happened in the journal (see broker/analytics/projections/diary.py). Rows
-- written before this do not know it (NULL): their next change is ordered by time. No backfill, so
-- the table is not rewritten under an exclusive lock.
ALTER TABLE diary_grades ADD COLUMN change_record_id text;

-- A pupil's homework is that of the classes they are graded in this academic year, not in any year:
-- class names such as 7Б come back every year. Homework applied before this takes the school year of
-- its lesson (from 1 September); one without a lesson date is matched by class alone.
ALTER TABLE diary_homework ADD COLUMN academic_year text;
UPDATE diary_homework SET academic_year = CASE
        WHEN extract(month FROM lesson_date) >= 9
            THEN extract(year FROM lesson_date)::int || '-' || (extract(year FROM lesson_date)::int + 1)
        ELSE (extract(year FROM lesson_date)::int - 1) || '-' || extract(year FROM lesson_date)::int END
    WHERE lesson_date IS NOT NULL;
