-- Delivery (issue 5): what the outbox rows say about themselves, the origin of every
-- routed message (for replays that redeliver), and the SMEV-style pull queue.

-- Rows describe themselves, so delivering one never re-parses the signed payload.
-- xact_id: the inserting transaction. Ids come from a sequence at insert time, so a
-- row with a smaller id can become visible after one with a larger id; the relay only
-- takes rows whose transaction is below every running one (pg_snapshot_xmin) and
-- orders a key's rows by (xact_id, id), an order no later commit can change.
ALTER TABLE outbox
    ADD COLUMN xact_id              xid8 NOT NULL DEFAULT pg_current_xact_id(),
    ADD COLUMN recipient            text NOT NULL DEFAULT '',   -- envelope Recipient, e.g. EPGU, RSMEV
    ADD COLUMN message_type         text NOT NULL DEFAULT '',   -- primary content's root, e.g. GradePosted
    ADD COLUMN idempotency_key      text,                       -- of the event the envelope carries
    ADD COLUMN reference_message_id uuid,                       -- set on redeliveries
    ADD COLUMN lease_id             uuid;                       -- the relay claim currently delivering the row

DROP INDEX outbox_key_order_idx;
-- Per-key ordering: is an earlier row of the same (destination, partition_key) still pending?
CREATE INDEX outbox_key_order_idx ON outbox (destination, partition_key, xact_id, id) WHERE status = 'pending';

-- First MessageID each event got per destination; outlives outbox retention so that
-- `ejx replay --redeliver` can name it as ReferenceMessageID.
CREATE TABLE message_origin (
    idempotency_key text NOT NULL,
    destination     text NOT NULL,
    recipient       text NOT NULL,
    message_id      uuid NOT NULL,
    routed_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (idempotency_key, destination, recipient)
);

-- The pull queue the interagency system reads (POST /smev/v1/get-message, /smev/v1/ack).
CREATE TABLE smev_queue (
    seq           bigint GENERATED ALWAYS AS IDENTITY,
    message_id    uuid PRIMARY KEY,
    recipient     text NOT NULL,
    message_type  text NOT NULL,                  -- selector of get-message's message_type
    payload       bytea NOT NULL,                 -- the signed envelope
    enqueued_at   timestamptz NOT NULL DEFAULT now(),
    visible_at    timestamptz NOT NULL DEFAULT now(),  -- handed out again after this unless acknowledged
    deliveries    integer NOT NULL DEFAULT 0,
    acked_at      timestamptz,
    accepted      boolean
);
CREATE INDEX smev_queue_ready_idx ON smev_queue (recipient, seq) WHERE acked_at IS NULL;
CREATE INDEX smev_queue_acked_idx ON smev_queue (acked_at) WHERE acked_at IS NOT NULL;
