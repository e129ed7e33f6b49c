-- The e-diary service over SMEV 3: requests taken with SendRequest, responses in the requester's queue,
-- and one audit of every diary read, whether through GET /v1/diary or over SMEV 3.

-- Responses share the queue (and so the Ack path and the visibility timeout) with the RequestMessages
-- agencies pull; GetRequest takes kind 'request', GetResponse kind 'response'. A response exists only in
-- the protocol version its request came in.
ALTER TABLE smev_queue ADD COLUMN kind text NOT NULL DEFAULT 'request' CHECK (kind IN ('request', 'response'));
ALTER TABLE smev_queue ALTER COLUMN message_1_2 DROP NOT NULL, ALTER COLUMN message_1_3 DROP NOT NULL;
ALTER TABLE smev_queue ADD CONSTRAINT smev_queue_holds_a_message
    CHECK (message_1_2 IS NOT NULL OR message_1_3 IS NOT NULL);
DROP INDEX smev_queue_ready_idx;
CREATE INDEX smev_queue_ready_idx ON smev_queue (recipient, kind, seq) WHERE acked_at IS NULL;

-- One row per SendRequest MessageID, written in the transaction that also queues its response: a repeat
-- of the MessageID by its sender gets the same SendRequestResponse again, by anyone else MessageIsAlreadySent.
CREATE TABLE diary_requests (
    message_id          uuid PRIMARY KEY,             -- SenderProvidedRequestData/MessageID
    requester           text NOT NULL,                -- participant mnemonic, from the signing certificate
    version             text NOT NULL,                -- SMEV 3 protocol version of the request
    pupil_id            text NOT NULL,
    date_from           date,
    date_to             date,
    subject_code        text,
    test                boolean NOT NULL,             -- TestMessage: answered, not audited as a real read
    reply_to            text NOT NULL,                -- what the response's To carries back
    outcome             text NOT NULL,                -- answered | NO_DATA | ACCESS_DENIED | FAILURE
    response_message_id uuid NOT NULL,                -- the ResponseMessage in the requester's queue
    accepted_answer     bytea NOT NULL,               -- the signed SendRequestResponse, given again on a repeat
    received_at         timestamptz NOT NULL DEFAULT now()
);

-- The one audit of diary reads: the access log of GET /v1/diary now records SMEV 3 requests too.
ALTER TABLE diary_access_log
    ADD COLUMN channel      text NOT NULL DEFAULT 'api' CHECK (channel IN ('api', 'smev3')),
    ADD COLUMN subject_code text,
    ADD COLUMN outcome      text NOT NULL DEFAULT 'answered',
    ADD COLUMN test         boolean NOT NULL DEFAULT false,
    ADD COLUMN message_id   uuid;                     -- the SMEV 3 request's MessageID
COMMENT ON COLUMN diary_access_log.client_id IS 'who read: a portal client''s name or an SMEV 3 participant''s mnemonic';
