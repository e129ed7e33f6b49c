-- Reference receivers also record which event an envelope carried, so a run can be
-- checked per event: every accepted event received once by each of its receivers.
ALTER TABLE receiver_messages ADD COLUMN event_id uuid;
CREATE INDEX receiver_messages_event_idx ON receiver_messages (receiver, event_id);
