-- Each of the relay's lookups now has exactly one partial index it can use, whatever the statistics say.
--
-- After the outbox was analysed with no pending rows (a healthy system's usual state), both
-- partial indexes of pending rows are believed to hold none, so PostgreSQL took either for any lookup and
-- broke the tie badly: a claim's per-key probes walked the due index's whole range for the destination
-- (24 million buffers, 17-22 s per claim over 10,000 pending rows), and the updates by id scanned a whole
-- partial index (mark_delivered of 200 ids read the whole due index: 2,500 buffers over 10,000 rows).
--
-- The extra IS NOT NULL terms hold for every row (both columns are NOT NULL), so the indexes hold the
-- same rows as before. They decide who may use each index: a query must imply the term, which a strict
-- comparison on the column does. The claim's walk in due order compares next_attempt_at, so it alone
-- takes the due index; the per-key probes compare partition_key, so they alone take the key-order index;
-- a lookup by id implies neither and goes through the primary key.
DROP INDEX outbox_due_by_destination_idx;
CREATE INDEX outbox_due_by_destination_idx ON outbox (destination, next_attempt_at, id)
    WHERE status = 'pending' AND next_attempt_at IS NOT NULL;
DROP INDEX outbox_key_order_idx;
CREATE INDEX outbox_key_order_idx ON outbox (destination, partition_key, id)
    WHERE status = 'pending' AND partition_key IS NOT NULL;
