-- A dead row holds back the later rows of its key until it is redriven: order per journal record is kept
-- even when a row went dead (a correction is never delivered before the grade it corrects). The claim asks,
-- per candidate head, whether an earlier row of its key is dead: one probe of this index, which holds only
-- the few dead rows.
CREATE INDEX outbox_dead_key_idx ON outbox (destination, partition_key, id)
    WHERE status = 'dead' AND partition_key IS NOT NULL;
