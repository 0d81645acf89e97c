-- Webhooks, the global audit log and scoped admin tokens (docs/webhooks.md, docs/api.md).

-- Events: an event may concern no license (a policy, an admin token, a webhook endpoint), and every event records
-- who caused it (docs/api.md, "Audit log").
ALTER TABLE events ALTER COLUMN license_id DROP NOT NULL;
ALTER TABLE events ADD COLUMN actor_type text, ADD COLUMN actor_id text, ADD COLUMN actor_label text;
CREATE INDEX events_by_kind ON events (kind, id);

-- Admin tokens get an id (the first 16 hex digits of their hash), a scope, a last use and a revocation.
ALTER TABLE admin_tokens
    ADD COLUMN id text,
    ADD COLUMN scope text NOT NULL DEFAULT 'write' CHECK (scope IN ('read', 'write')),
    ADD COLUMN last_used_at timestamptz,
    ADD COLUMN revoked_at timestamptz;
UPDATE admin_tokens SET id = encode(substring(token_hash FROM 1 FOR 8), 'hex');
ALTER TABLE admin_tokens ALTER COLUMN id SET NOT NULL;
CREATE UNIQUE INDEX admin_tokens_by_id ON admin_tokens (id);

-- license.expired is announced once per expiry: the sweep sets this when it records the event, a change of
-- expires_at clears it. Licenses already expired before this migration are not announced.
ALTER TABLE licenses ADD COLUMN expiry_announced_at timestamptz;
UPDATE licenses SET expiry_announced_at = expires_at WHERE expires_at <= now();
CREATE INDEX licenses_expiring ON licenses (expires_at) WHERE expiry_announced_at IS NULL AND expires_at IS NOT NULL;

-- Webhook endpoints. The secrets are kept in full (they sign every delivery); the previous one keeps signing
-- beside the new one until previous_secret_until. A deleted endpoint is marked (deleted_at, and disabled) and its
-- rows are purged by the sweep an hour later: an event insert that chose its endpoints before the delete committed
-- never meets a missing row (no foreign-key error, no lock taken against it).
CREATE TABLE webhook_endpoints (
    id                     uuid PRIMARY KEY,
    url                    text NOT NULL,
    description            text NOT NULL,
    secret                 text NOT NULL,
    previous_secret        text,
    previous_secret_until  timestamptz,
    created_at             timestamptz NOT NULL,
    disabled_at            timestamptz,
    disabled_reason        text,
    last_success_at        timestamptz,
    deleted_at             timestamptz
);

-- The event types an endpoint receives; '*' is every type. Kinds are the events table's stored names.
CREATE TABLE webhook_subscriptions (
    event_kind   text NOT NULL,
    endpoint_id  uuid NOT NULL REFERENCES webhook_endpoints (id),
    PRIMARY KEY (event_kind, endpoint_id)
);

-- The outbox: one row per (endpoint, event), written in the transaction of the event. `lane` is the license id
-- ('' for events of no license): an endpoint gets one lane's events in order, one at a time.
CREATE TABLE webhook_deliveries (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id      uuid NOT NULL REFERENCES webhook_endpoints (id),
    event_id         bigint NOT NULL REFERENCES events (id),
    lane             text NOT NULL,
    state            text NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL,
    next_attempt_at  timestamptz NOT NULL,
    last_attempt_at  timestamptz,
    last_status      integer,
    last_error       text,
    finished_at      timestamptz
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_lanes ON webhook_deliveries (endpoint_id, lane, event_id) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id);
