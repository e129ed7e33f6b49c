-- Analytics projections (issue 6): school activity, grade statistics inputs, the e-diary,
-- and who read which child's diary.
--
-- Every row keyed by a source record keeps the highest `version` applied to it, so a
-- lower version delivered late never overwrites a newer one; the analytics consumer
-- writes these tables in the same transaction as its inbox row, so a replay changes nothing.

-- One row per school that ever sent an event (schools in the registry without a row
-- here have never connected).
CREATE TABLE school_activity (
    school_id      text PRIMARY KEY,
    vendor_id      text NOT NULL,                 -- source_system of the most recently recorded event
    first_event_at timestamptz NOT NULL,          -- earliest recorded_at seen
    last_event_at  timestamptz NOT NULL,          -- latest recorded_at seen
    events         bigint NOT NULL
);

CREATE TABLE school_activity_daily (
    school_id text NOT NULL,
    day       date NOT NULL,                      -- UTC date of recorded_at
    events    bigint NOT NULL,
    PRIMARY KEY (school_id, day)
);

-- A grade as the e-journal shows it now: posting facts from the newest GradePosted of the
-- record, the mark from the newest event of any kind (posted / corrected / retracted) that
-- refers to it. "Newest" is (version, occurred_at, recorded_at): a correction normally
-- continues the grade's source record with a higher version; one sent as a record of its
-- own is ordered by when it happened in the journal.
-- Descriptive columns stay NULL while only a correction of a not-yet-seen grade arrived.
CREATE TABLE diary_grades (
    source_system     text NOT NULL,
    grade_record_id   text NOT NULL,              -- the GradePosted's source_record_id
    version           bigint NOT NULL,            -- version of the change in force
    occurred_at       timestamptz NOT NULL,       -- its occurred_at
    school_id         text NOT NULL,
    mark_scale        text NOT NULL,
    mark_value        text NOT NULL,
    retracted         boolean NOT NULL DEFAULT false,
    corrected         boolean NOT NULL DEFAULT false,
    change_reason     text,                       -- reason of the correction / retraction in force
    changed_at        timestamptz NOT NULL,       -- recorded_at of the version in force
    posted_version    bigint,                     -- version of the GradePosted the facts below come from
    posted_at         timestamptz,                -- its recorded_at: timeliness is measured on it
    academic_year     text,
    student_id        text,
    class_unit        text,
    subject_code      text,
    teacher_id        text,
    lesson_id         text,
    lesson_date       date,
    work_type         text,
    weight            numeric,
    counts_in_average boolean,
    term_id           text,
    comment           text,
    PRIMARY KEY (source_system, grade_record_id)
);
CREATE INDEX diary_grades_student_idx ON diary_grades (student_id, lesson_date);
CREATE INDEX diary_grades_school_idx ON diary_grades (school_id, subject_code, lesson_date);

CREATE TABLE diary_attendance (
    source_system    text NOT NULL,
    source_record_id text NOT NULL,
    version          bigint NOT NULL,
    school_id        text NOT NULL,
    student_id       text NOT NULL,
    lesson_id        text,
    day              date NOT NULL,
    status           text NOT NULL CHECK (status IN ('present', 'absent', 'late', 'excused', 'ill')),
    minutes_late     integer,
    PRIMARY KEY (source_system, source_record_id)
);
CREATE INDEX diary_attendance_student_idx ON diary_attendance (student_id, day);
CREATE INDEX diary_attendance_school_idx ON diary_attendance (school_id, day);

CREATE TABLE diary_homework (
    source_system    text NOT NULL,
    source_record_id text NOT NULL,
    version          bigint NOT NULL,
    school_id        text NOT NULL,
    class_unit       text NOT NULL,
    subject_code     text NOT NULL,
    teacher_id       text,
    lesson_date      date,
    due_date         date,
    text             text NOT NULL,
    PRIMARY KEY (source_system, source_record_id)
);
CREATE INDEX diary_homework_class_idx ON diary_homework (school_id, class_unit, lesson_date);

CREATE TABLE diary_term_grades (
    source_system    text NOT NULL,
    source_record_id text NOT NULL,
    version          bigint NOT NULL,
    school_id        text NOT NULL,
    academic_year    text,
    student_id       text NOT NULL,
    subject_code     text NOT NULL,
    term_id          text NOT NULL,
    period           text NOT NULL,               -- quarter / half / year / exam
    mark_scale       text NOT NULL,
    mark_value       text NOT NULL,
    recorded_at      timestamptz NOT NULL,
    PRIMARY KEY (source_system, source_record_id)
);
CREATE INDEX diary_term_grades_student_idx ON diary_term_grades (student_id);

-- Clients allowed to read e-diaries (the public-services portal); separate from vendors,
-- whose tokens must never open a child's diary. Only the SHA-256 of the token is kept.
CREATE TABLE portal_clients (
    client_id   text PRIMARY KEY,
    token_hash  bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    disabled_at timestamptz
);

-- Every allowed diary read: who read whose diary, when, and for which period.
CREATE TABLE diary_access_log (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_id  text NOT NULL,
    student_id text NOT NULL,
    read_at    timestamptz NOT NULL DEFAULT now(),
    date_from  date,
    date_to    date
);
CREATE INDEX diary_access_log_student_idx ON diary_access_log (student_id, read_at);
