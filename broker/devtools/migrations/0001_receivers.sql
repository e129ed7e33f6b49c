-- Reference receivers: every MessageID they took, how often, and every refused envelope.
CREATE TABLE receiver_messages (
    receiver             text NOT NULL,           -- "portal", "interagency"
    message_id           uuid NOT NULL,
    reference_message_id uuid,
    sender               text NOT NULL,
    recipient            text NOT NULL,
    message_type         text NOT NULL,
    event_id             uuid,                    -- the event the envelope carried, to check a run per event
    test                 boolean NOT NULL,        -- TestMessage: recorded, never applied
    copies               integer NOT NULL DEFAULT 1,
    first_received_at    timestamptz NOT NULL DEFAULT now(),
    last_received_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (receiver, message_id)
);
CREATE INDEX receiver_messages_event_idx ON receiver_messages (receiver, event_id);

CREATE TABLE receiver_rejects (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    receiver    text NOT NULL,
    code        text NOT NULL,
    description text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
