-- Outbox order per key no longer waits for the cluster-wide xmin horizon: writers of one key
-- serialise on an advisory lock of the key's bucket (broker/delivery/outbox.py), so within a key
-- id order is commit order and a long transaction elsewhere delays no delivery.
DROP INDEX outbox_key_order_idx;
ALTER TABLE outbox DROP COLUMN xact_id;
CREATE INDEX outbox_key_order_idx ON outbox (destination, partition_key, id) WHERE status = 'pending';
