-- One credential table for every face (issue 15): vendors, portal clients, authorities, operators.
-- A credential is a bearer token of one kind, named; only its SHA-256 is kept. Revoking sets
-- revoked_at, rotating replaces token_hash: either takes effect on the next request, because
-- every request looks the hash up here. Vendors keep their row (schools refer to it) but no
-- longer hold a token; a portal client is nothing but its credential.

CREATE TABLE credentials (
    kind        text NOT NULL CHECK (kind IN ('vendor', 'portal_client', 'authority', 'operator')),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    token_hash  bytea NOT NULL UNIQUE,            -- SHA-256 of the bearer token
    districts   text[] NOT NULL DEFAULT '{}',     -- an authority's scope; empty = every district
    created_at  timestamptz NOT NULL DEFAULT now(),
    rotated_at  timestamptz,
    revoked_at  timestamptz,
    PRIMARY KEY (kind, name)
);

INSERT INTO credentials (kind, name, token_hash, created_at, revoked_at)
     SELECT 'vendor', vendor_id, token_hash, created_at, disabled_at FROM vendors;
INSERT INTO credentials (kind, name, token_hash, created_at, revoked_at)
     SELECT 'portal_client', client_id, token_hash, created_at, disabled_at FROM portal_clients;

ALTER TABLE vendors DROP COLUMN token_hash, DROP COLUMN disabled_at;
DROP TABLE portal_clients;
