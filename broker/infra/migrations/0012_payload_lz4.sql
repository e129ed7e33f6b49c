-- Envelopes (~2.8 kB of XML) pass PostgreSQL's 2 kB TOAST threshold, so every stored copy was compressed
-- with pglz: ~11 µs of PostgreSQL CPU per row on insert, again on each read, and an envelope is stored
-- twice per delivery (outbox, message log). lz4 compresses as well (1,920 vs 1,906 bytes of 2,808) at about
-- a tenth of the cost. Affects values written from now on; older ones stay readable as they are. A server
-- built without lz4 keeps pglz (and says so) rather than failing the migration.
DO $$
BEGIN
    ALTER TABLE outbox ALTER COLUMN payload SET COMPRESSION lz4;
    ALTER TABLE message_log ALTER COLUMN payload SET COMPRESSION lz4;
    ALTER TABLE smev_queue ALTER COLUMN message_1_2 SET COMPRESSION lz4,
                           ALTER COLUMN message_1_3 SET COMPRESSION lz4;
    ALTER TABLE diary_requests ALTER COLUMN accepted_answer SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE WARNING 'this PostgreSQL has no lz4: stored envelopes stay pglz-compressed (more CPU per row)';
END $$;
