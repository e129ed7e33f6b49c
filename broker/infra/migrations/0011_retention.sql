-- Retention sweeps delete by age in bounded batches; each batch finds its oldest rows by index.
CREATE INDEX inbox_processed_idx ON inbox (processed_at);
CREATE INDEX ingest_keys_accepted_idx ON ingest_keys (accepted_at);
CREATE INDEX message_origin_routed_idx ON message_origin (routed_at);
