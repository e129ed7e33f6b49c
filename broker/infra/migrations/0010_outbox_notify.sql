-- The relay wakes when outbox rows commit instead of polling for them: every statement that inserts
-- outbox rows notifies the channel once (PostgreSQL delivers it at commit, and folds repeats of one
-- transaction into one). The relay still polls slowly, for due retries and as a safety net.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ejx_outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
