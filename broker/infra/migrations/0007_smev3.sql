-- SMEV 3: participants known by their certificates, and the queue of signed RequestMessages they pull.

-- An information system (RSMEV, EPGU, ...) authenticates by the certificate it signs with; a mnemonic may hold
-- several certificates (rotation). Looked up by the SHA-256 of the exact DER the signature's KeyInfo carries.
CREATE TABLE participants (
    cert_sha256   bytea PRIMARY KEY,
    mnemonic      text NOT NULL,
    service       text,
    certificate   bytea NOT NULL,                  -- DER
    subject       text NOT NULL,
    serial_number text NOT NULL,                   -- hexadecimal
    not_before    timestamptz NOT NULL,
    not_after     timestamptz NOT NULL,
    added_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX participants_mnemonic_idx ON participants (mnemonic);

-- The JSON pull queue held ejx envelopes; the SMEV 3 queue holds RequestMessages signed once, at enqueue, in
-- each protocol version. Envelopes still unacknowledged go back to the relay (same MessageID), which enqueues
-- them anew in the SMEV 3 form.
UPDATE outbox SET status = 'pending', next_attempt_at = now(), lease_id = NULL
WHERE destination = 'interagency'
  AND message_id IN (SELECT message_id FROM smev_queue WHERE acked_at IS NULL);
DROP TABLE smev_queue;

CREATE TABLE smev_queue (
    seq             bigint GENERATED ALWAYS AS IDENTITY,
    message_id      uuid PRIMARY KEY,               -- the envelope's MessageID, fixed at routing
    recipient       text NOT NULL,                  -- the participant's mnemonic: whose queue
    namespace_uri   text NOT NULL,                  -- MessageTypeSelector filter: the business root's namespace
    root_local_name text NOT NULL,                  -- ... and local name
    message_1_2     bytea NOT NULL,                 -- RequestMessage, SMEV 1.2, signed by sender and SMEV
    message_1_3     bytea NOT NULL,                 -- the same in SMEV 1.3
    enqueued_at     timestamptz NOT NULL DEFAULT now(),
    visible_at      timestamptz NOT NULL DEFAULT now(),  -- handed out again after this unless acknowledged
    deliveries      integer NOT NULL DEFAULT 0,
    acked_at        timestamptz,
    accepted        boolean
);
CREATE INDEX smev_queue_ready_idx ON smev_queue (recipient, seq) WHERE acked_at IS NULL;
CREATE INDEX smev_queue_acked_idx ON smev_queue (acked_at) WHERE acked_at IS NOT NULL;
