-- Registry, idempotency inbox and the transactional outbox (DESIGN.md "PostgreSQL").

CREATE TABLE vendors (
    vendor_id   text PRIMARY KEY,                 -- the vendor's mnemonic, e.g. "dnevnik-plus"
    token_hash  bytea NOT NULL UNIQUE,            -- SHA-256 of the bearer token; the token itself is never stored
    created_at  timestamptz NOT NULL DEFAULT now(),
    disabled_at timestamptz
);

CREATE TABLE schools (
    school_id  text PRIMARY KEY,
    name       text NOT NULL,
    district   text NOT NULL,
    vendor_id  text NOT NULL REFERENCES vendors (vendor_id),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schools_vendor_idx ON schools (vendor_id);
CREATE INDEX schools_district_idx ON schools (district);

-- One row per event a consumer has durably processed; the key is fixed at the source
-- (source_system + source_record_id + version), so a replay finds every event here.
CREATE TABLE inbox (
    consumer        text NOT NULL,                -- "router", "analytics", ...
    idempotency_key text NOT NULL,
    event_id        uuid NOT NULL,
    processed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, idempotency_key)
);

CREATE TABLE outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id      uuid NOT NULL,
    destination     text NOT NULL,                -- "portal", "interagency", ...
    partition_key   text NOT NULL,                -- order is kept per (destination, partition_key)
    payload         bytea NOT NULL,               -- the signed envelope
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    UNIQUE (message_id, destination)
);
-- The relay's claim: due pending rows, oldest first.
CREATE INDEX outbox_due_idx ON outbox (next_attempt_at, id) WHERE status = 'pending';
-- Per-key ordering: is an older row of the same (destination, partition_key) still pending?
CREATE INDEX outbox_key_order_idx ON outbox (destination, partition_key, id) WHERE status = 'pending';
-- Retention sweep of delivered rows; operator views of dead rows.
CREATE INDEX outbox_delivered_idx ON outbox (delivered_at) WHERE status = 'delivered';
CREATE INDEX outbox_dead_idx ON outbox (destination, id) WHERE status = 'dead';
