-- Licenses, their machines (activations), the event log, idempotency keys and admin token hashes.
-- Times are whole seconds since the Unix epoch; ids are UUID text; entitlements and metadata are JSON text.

CREATE TABLE licenses (
    id            TEXT PRIMARY KEY NOT NULL,
    license_key   TEXT NOT NULL UNIQUE,
    email         TEXT NOT NULL,
    product       TEXT NOT NULL,
    max_machines  INTEGER NOT NULL CHECK (max_machines >= 1),
    expires_at    INTEGER,
    entitlements  TEXT NOT NULL,
    metadata      TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'revoked')),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX licenses_by_created ON licenses (created_at, id);
CREATE INDEX licenses_by_email ON licenses (email COLLATE NOCASE, created_at, id);
CREATE INDEX licenses_by_product ON licenses (product, created_at, id);

CREATE TABLE machines (
    license_id    TEXT NOT NULL REFERENCES licenses (id),
    fingerprint   TEXT NOT NULL,
    name          TEXT,
    platform      TEXT,
    activated_at  INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    PRIMARY KEY (license_id, fingerprint)
);

CREATE TABLE events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    license_id   TEXT NOT NULL REFERENCES licenses (id),
    kind         TEXT NOT NULL,
    at           INTEGER NOT NULL,
    fingerprint  TEXT,
    client_ip    TEXT,
    detail       TEXT NOT NULL
);
CREATE INDEX events_by_license ON events (license_id, id);

CREATE TABLE idempotency_keys (
    idempotency_key  TEXT PRIMARY KEY NOT NULL,
    request_hash     TEXT NOT NULL,
    license_id       TEXT NOT NULL REFERENCES licenses (id),
    created_at       INTEGER NOT NULL
);

CREATE TABLE admin_tokens (
    token_hash  TEXT PRIMARY KEY NOT NULL,
    label       TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
