-- Webhooks, the global audit log and scoped admin tokens (docs/webhooks.md, docs/api.md).

-- Events: an event may concern no license (a policy, an admin token, a webhook endpoint), and every event records
-- who caused it (docs/webhooks.md, "The audit log"). SQLite cannot drop NOT NULL in place, so the table is rebuilt;
-- ids are kept, and so is the AUTOINCREMENT sequence.
CREATE TABLE events_v6 (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    license_id   TEXT REFERENCES licenses (id),
    kind         TEXT NOT NULL,
    at           INTEGER NOT NULL,
    fingerprint  TEXT,
    client_ip    TEXT,
    detail       TEXT NOT NULL,
    actor_type   TEXT,
    actor_id     TEXT,
    actor_label  TEXT
);
INSERT INTO events_v6 (id, license_id, kind, at, fingerprint, client_ip, detail)
    SELECT id, license_id, kind, at, fingerprint, client_ip, detail FROM events;
-- The id sequence carries over exactly (not only past the highest id kept): an id is never given twice.
DELETE FROM sqlite_sequence WHERE name = 'events_v6';
INSERT INTO sqlite_sequence (name, seq) SELECT 'events_v6', seq FROM sqlite_sequence WHERE name = 'events';
DROP TABLE events;
ALTER TABLE events_v6 RENAME TO events;
CREATE INDEX events_by_license ON events (license_id, id);
CREATE INDEX events_by_kind ON events (kind, id);

-- Admin tokens get an id (the first 16 hex digits of their hash), a scope, a last use and a revocation.
ALTER TABLE admin_tokens ADD COLUMN id TEXT;
ALTER TABLE admin_tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'write' CHECK (scope IN ('read', 'write'));
ALTER TABLE admin_tokens ADD COLUMN last_used_at INTEGER;
ALTER TABLE admin_tokens ADD COLUMN revoked_at INTEGER;
UPDATE admin_tokens SET id = substr(token_hash, 1, 16);
CREATE UNIQUE INDEX admin_tokens_by_id ON admin_tokens (id);

-- license.expired is announced once per expiry: the sweep sets this when it records the event, a change of
-- expires_at clears it. Licenses already expired before this migration are not announced.
ALTER TABLE licenses ADD COLUMN expiry_announced_at INTEGER;
UPDATE licenses SET expiry_announced_at = expires_at
    WHERE expires_at IS NOT NULL AND expires_at <= CAST(strftime('%s', 'now') AS INTEGER);
CREATE INDEX licenses_expiring ON licenses (expires_at) WHERE expiry_announced_at IS NULL AND expires_at IS NOT NULL;

-- Webhook endpoints. The secrets are kept in full (they sign every delivery); the previous one keeps signing
-- beside the new one until previous_secret_until. A deleted endpoint is marked (deleted_at, and disabled) and its
-- rows are purged by the sweep an hour later: an event insert that chose its endpoints before the delete committed
-- never meets a missing row (no foreign-key error, no lock taken against it). Times are seconds, but
-- last_success_at, which is milliseconds like the deliveries' times.
CREATE TABLE webhook_endpoints (
    id                     TEXT PRIMARY KEY NOT NULL,
    url                    TEXT NOT NULL,
    description            TEXT NOT NULL,
    secret                 TEXT NOT NULL,
    previous_secret        TEXT,
    previous_secret_until  INTEGER,
    created_at             INTEGER NOT NULL,
    disabled_at            INTEGER,
    disabled_reason        TEXT,
    last_success_at        INTEGER,
    deleted_at             INTEGER
);

-- The event types an endpoint receives; '*' is every type. Kinds are the events table's stored names.
CREATE TABLE webhook_subscriptions (
    event_kind   TEXT NOT NULL,
    endpoint_id  TEXT NOT NULL REFERENCES webhook_endpoints (id),
    PRIMARY KEY (event_kind, endpoint_id)
);

-- The outbox: one row per (endpoint, event), written in the transaction of the event. `lane` is the license id
-- ('' for events of no license): an endpoint gets one lane's events in order, one at a time. Times are unix
-- milliseconds (retries can be shorter than a second in tests).
CREATE TABLE webhook_deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id      TEXT NOT NULL REFERENCES webhook_endpoints (id),
    event_id         INTEGER NOT NULL REFERENCES events (id),
    lane             TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    next_attempt_at  INTEGER NOT NULL,
    last_attempt_at  INTEGER,
    last_status      INTEGER,
    last_error       TEXT,
    finished_at      INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_lanes ON webhook_deliveries (endpoint_id, lane, event_id) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id);

-- The outbox rule, in the statement that appends an event: one pending delivery per enabled endpoint subscribed to
-- the event's kind (or to '*'). A trigger rather than a second statement: the event and its deliveries are one
-- atomic statement, and an event costs the writer one statement, as before webhooks.
CREATE TRIGGER events_queue_deliveries AFTER INSERT ON events
BEGIN
    INSERT INTO webhook_deliveries (endpoint_id, event_id, lane, state, created_at, next_attempt_at)
    SELECT DISTINCT s.endpoint_id, NEW.id, COALESCE(NEW.license_id, ''), 'pending', NEW.at * 1000, NEW.at * 1000
    FROM webhook_subscriptions s
    JOIN webhook_endpoints e ON e.id = s.endpoint_id AND e.disabled_at IS NULL
    WHERE s.event_kind IN ('*', NEW.kind);
END;
