-- Licenses, their machines (activations), the event log, idempotency keys, admin token hashes and redeemed offline
-- deactivation codes. The same data as the SQLite schema (migrations/sqlite/0001 + 0002) in native types: uuid ids,
-- timestamptz times (whole seconds), jsonb for entitlements, metadata and event details, bytea for hashes and proofs.

CREATE TABLE licenses (
    id            uuid PRIMARY KEY,
    license_key   text NOT NULL UNIQUE,
    email         text NOT NULL,
    product       text NOT NULL,
    max_machines  bigint NOT NULL CHECK (max_machines >= 1),
    expires_at    timestamptz,
    entitlements  jsonb NOT NULL,
    metadata      jsonb NOT NULL,
    status        text NOT NULL CHECK (status IN ('active', 'suspended', 'revoked')),
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE INDEX licenses_by_created ON licenses (created_at, id);
CREATE INDEX licenses_by_email ON licenses (lower(email), created_at, id);
CREATE INDEX licenses_by_product ON licenses (product, created_at, id);

CREATE TABLE machines (
    license_id     uuid NOT NULL REFERENCES licenses (id),
    fingerprint    text NOT NULL,
    name           text,
    platform       text,
    activated_at   timestamptz NOT NULL,
    last_seen_at   timestamptz NOT NULL,
    -- The deactivation proof of the offline token the machine was last given; NULL for online-only machines.
    offline_proof  bytea CHECK (octet_length(offline_proof) = 16),
    PRIMARY KEY (license_id, fingerprint)
);
CREATE INDEX machines_by_offline_proof ON machines (license_id, offline_proof) WHERE offline_proof IS NOT NULL;

CREATE TABLE events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    license_id   uuid NOT NULL REFERENCES licenses (id),
    kind         text NOT NULL,
    at           timestamptz NOT NULL,
    fingerprint  text,
    client_ip    text,
    detail       jsonb NOT NULL
);
CREATE INDEX events_by_license ON events (license_id, id);

CREATE TABLE idempotency_keys (
    idempotency_key  text PRIMARY KEY,
    request_hash     text NOT NULL,
    license_id       uuid NOT NULL REFERENCES licenses (id),
    created_at       timestamptz NOT NULL
);

CREATE TABLE admin_tokens (
    token_hash  bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    label       text NOT NULL,
    created_at  timestamptz NOT NULL
);

-- A deactivation code frees a slot only once.
CREATE TABLE redeemed_deactivations (
    proof        bytea PRIMARY KEY CHECK (octet_length(proof) = 16),
    license_id   uuid NOT NULL REFERENCES licenses (id),
    fingerprint  text NOT NULL,
    redeemed_at  timestamptz NOT NULL
);
