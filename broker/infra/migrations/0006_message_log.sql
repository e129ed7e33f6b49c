-- Message log (issue 12): an append-only, hash-chained record of every message ejx signs
-- or receives, archived into signed files (broker/audit). Hashes are computed by ejx
-- (broker/audit/chain.py documents the encoding); the database keeps the order and refuses
-- changes.

CREATE TABLE message_log (
    sequence       bigint PRIMARY KEY,            -- 1, 2, 3 … without gaps; the chain's total order
    recorded_at    timestamptz NOT NULL,          -- never decreases along the sequence
    direction      text NOT NULL CHECK (direction IN ('out', 'in')),
    participant    text NOT NULL,                 -- recipient of what ejx sent, sender of what it received
    message_id     uuid NOT NULL,
    kind           text NOT NULL CHECK (kind <> ''),  -- envelope, smev3-request, smev3-response, ack
    payload_sha256 bytea NOT NULL CHECK (length(payload_sha256) = 32),
    previous_hash  bytea NOT NULL CHECK (length(previous_hash) = 32),
    record_hash    bytea NOT NULL CHECK (length(record_hash) = 32),
    payload        bytea NOT NULL                 -- the exact bytes, kept until archived and past retention
);
CREATE INDEX message_log_message_idx ON message_log (message_id);
-- `ejx log archive --until T` and retention find their end by time.
CREATE INDEX message_log_time_idx ON message_log (recorded_at);

-- The chain's head: one row, locked FOR UPDATE by every append until the writer commits, so
-- sequences and hashes follow one total order that a rolled-back writer leaves no gap in.
CREATE TABLE message_log_head (
    chain            boolean PRIMARY KEY DEFAULT true CHECK (chain),
    last_sequence    bigint NOT NULL,
    last_hash        bytea NOT NULL CHECK (length(last_hash) = 32),
    last_recorded_at timestamptz NOT NULL
);
INSERT INTO message_log_head (last_sequence, last_hash, last_recorded_at)
VALUES (0, decode(repeat('00', 32), 'hex'), '1970-01-01 00:00:00+00');

-- One row per signed archive file; records up to the latest last_sequence are archived.
-- Archives are contiguous: each begins right after the one before and names its manifest hash.
CREATE TABLE message_log_archives (
    number           bigint PRIMARY KEY,          -- 1, 2, 3 …
    first_sequence   bigint NOT NULL UNIQUE,
    last_sequence    bigint NOT NULL UNIQUE CHECK (last_sequence >= first_sequence),
    last_record_hash bytea NOT NULL CHECK (length(last_record_hash) = 32),
    last_recorded_at timestamptz NOT NULL,        -- retention prunes whole archives older than it
    manifest_sha256  bytea NOT NULL CHECK (length(manifest_sha256) = 32),
    file_name        text NOT NULL,               -- as given to `ejx log archive`, for operators
    archived_at      timestamptz NOT NULL DEFAULT now()
);

-- Append-only, enforced here too. The one exception: retention (broker/audit/message_log.py
-- `prune`) sets ejx.message_log_retention = 'on' for its own transaction and may then delete
-- records an archive holds. A guard against mistakes, not against a superuser; the chain and the
-- signed archives are what detect a deliberate change.
CREATE FUNCTION message_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Nested, so a field of OLD/NEW is only read on the table that has it.
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'message_log'
       AND current_setting('ejx.message_log_retention', true) = 'on' THEN
        IF OLD.sequence <= (SELECT coalesce(max(last_sequence), 0) FROM message_log_archives) THEN
            RETURN OLD;
        END IF;
    ELSIF TG_OP = 'UPDATE' AND TG_TABLE_NAME = 'message_log_head' THEN
        IF NEW.last_sequence > OLD.last_sequence AND NEW.last_recorded_at >= OLD.last_recorded_at THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'the message log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER message_log_append_only BEFORE UPDATE OR DELETE ON message_log
    FOR EACH ROW EXECUTE FUNCTION message_log_refuse_change();
CREATE TRIGGER message_log_no_truncate BEFORE TRUNCATE ON message_log
    FOR EACH STATEMENT EXECUTE FUNCTION message_log_refuse_change();
CREATE TRIGGER message_log_head_forward_only BEFORE UPDATE OR DELETE ON message_log_head
    FOR EACH ROW EXECUTE FUNCTION message_log_refuse_change();
CREATE TRIGGER message_log_head_no_truncate BEFORE TRUNCATE ON message_log_head
    FOR EACH STATEMENT EXECUTE FUNCTION message_log_refuse_change();
CREATE TRIGGER message_log_archives_append_only BEFORE UPDATE OR DELETE ON message_log_archives
    FOR EACH ROW EXECUTE FUNCTION message_log_refuse_change();
CREATE TRIGGER message_log_archives_no_truncate BEFORE TRUNCATE ON message_log_archives
    FOR EACH STATEMENT EXECUTE FUNCTION message_log_refuse_change();
