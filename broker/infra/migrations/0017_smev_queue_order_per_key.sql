-- The SMEV 3 queue hands out a journal record's messages in order: a message is handed out only while no
-- earlier unacknowledged message of its key (the outbox's partition key: a grade, its corrections and its
-- retraction share it) is in the same participant's queue, handed out or not. A lost answer to a
-- GetRequest, or several readers pulling at once, can no longer let a correction overtake its grade.
-- Rows enqueued before this have no key and keep the old behaviour.
ALTER TABLE smev_queue ADD COLUMN ordering_key text;
CREATE INDEX smev_queue_key_order_idx ON smev_queue (recipient, kind, ordering_key, seq)
    WHERE acked_at IS NULL AND ordering_key IS NOT NULL;
