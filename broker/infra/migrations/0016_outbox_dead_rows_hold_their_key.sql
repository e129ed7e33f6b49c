-- A dead row holds back the later rows of its key until it is redriven: order per journal record is kept
-- even when a row went dead (a correction is never delivered before the grade it corrects). Rows already
-- dead when this is applied hold back their keys from now on too: `ejx outbox status` lists them; redrive
-- them, or discard the ones that must never be delivered (`ejx outbox discard`), which frees their keys.
--
-- The claim asks, per candidate head, whether an earlier row of its key is dead: one probe of the index
-- below, which holds only dead rows. It replaces outbox_dead_idx, which the probe could use too (by
-- destination, then id) and which statistics taken while nothing was dead could make PostgreSQL prefer,
-- walking every dead row of the destination per head; redrive and the status listing use this one.
ALTER TABLE outbox DROP CONSTRAINT outbox_status_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_status_check CHECK (status IN ('pending', 'delivered', 'dead', 'discarded'));
DROP INDEX outbox_dead_idx;
CREATE INDEX outbox_dead_key_idx ON outbox (destination, partition_key, id)
    WHERE status = 'dead' AND partition_key IS NOT NULL;
