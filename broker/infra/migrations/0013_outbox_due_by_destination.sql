-- The relay claims for each destination on its own (a slow destination must not hold back another), so the
-- claim's scan of due rows starts at its destination: without the destination first, a claim for the
-- interagency queue would walk past every due portal row of a backlog. Replaces the index it extends.
CREATE INDEX outbox_due_by_destination_idx ON outbox (destination, next_attempt_at, id) WHERE status = 'pending';
DROP INDEX outbox_due_idx;
