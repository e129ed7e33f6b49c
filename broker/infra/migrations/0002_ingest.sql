-- Ingest dedup (issue 4): every event a vendor got a 202 (or an import accepted) for.
--
-- A row is inserted in the same PostgreSQL transaction that is held open while the
-- events are produced to Kafka, and committed only after Kafka acknowledged them:
-- a concurrent request with the same key blocks on the uncommitted row and then
-- sees the committed event_id; a Kafka failure rolls the rows back.
CREATE TABLE ingest_keys (
    idempotency_key  text PRIMARY KEY,            -- source_system + source_record_id + version
    event_id         uuid NOT NULL UNIQUE,         -- returned again to a vendor repeating the event
    source_system    text NOT NULL,               -- the vendor that sent it (authenticated, not trusted from the body)
    source_record_id text NOT NULL,
    version          bigint NOT NULL,
    event_type       text NOT NULL,
    school_id        text NOT NULL,
    accepted_at      timestamptz NOT NULL DEFAULT now()
);
-- "Has this source record been seen before, and which event started it?"
-- (OneRoster results become GradePosted the first time, GradeCorrected afterwards.)
CREATE INDEX ingest_keys_record_idx ON ingest_keys (source_system, source_record_id, version);
