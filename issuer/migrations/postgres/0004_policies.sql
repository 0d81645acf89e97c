-- Policies (named license terms), leases and deactivation limits (docs/policies.md). The same as
-- migrations/sqlite/0005 in native types. Durations are whole seconds; the overage is its text form.
CREATE TABLE policies (
    name                      text PRIMARY KEY,
    product                   text NOT NULL,
    max_machines              bigint NOT NULL CHECK (max_machines >= 1),
    duration_secs             bigint CHECK (duration_secs >= 1),
    entitlements              jsonb NOT NULL,
    refresh_interval_secs     bigint CHECK (refresh_interval_secs >= 1),
    offline_grace_secs        bigint CHECK (offline_grace_secs >= 0),
    lease_secs                bigint CHECK (lease_secs >= 60),
    floating                  boolean NOT NULL,
    overage                   text NOT NULL,
    offline_allowed           boolean NOT NULL,
    deactivation_limit        bigint CHECK (deactivation_limit >= 1),
    deactivation_period_secs  bigint NOT NULL CHECK (deactivation_period_secs >= 1),
    created_at                timestamptz NOT NULL,
    updated_at                timestamptz NOT NULL,
    CHECK (NOT floating OR lease_secs IS NOT NULL)
);

-- The policy a license follows. A used policy cannot be deleted (the foreign key refuses it, whoever deletes).
ALTER TABLE licenses ADD COLUMN policy text REFERENCES policies (name);
CREATE INDEX licenses_by_policy ON licenses (policy) WHERE policy IS NOT NULL;

-- When a machine's lease ends unless it checks in; NULL is no lease. The sweep finds ended leases by this index.
ALTER TABLE machines ADD COLUMN lease_expires_at timestamptz;
CREATE INDEX machines_by_lease ON machines (lease_expires_at) WHERE lease_expires_at IS NOT NULL;

-- Machines culled because their lease ended, so a validation can say LEASE_EXPIRED instead of NOT_ACTIVATED.
CREATE TABLE culled_machines (
    license_id        uuid NOT NULL REFERENCES licenses (id),
    fingerprint       text NOT NULL,
    lease_expired_at  timestamptz NOT NULL,
    culled_at         timestamptz NOT NULL,
    PRIMARY KEY (license_id, fingerprint)
);

-- Deactivations a deactivation limit counts.
CREATE TABLE deactivations (
    license_id  uuid NOT NULL REFERENCES licenses (id),
    at          timestamptz NOT NULL
);
CREATE INDEX deactivations_by_license ON deactivations (license_id, at);
-- The sweep prunes records older than the longest window (365 days) by this one.
CREATE INDEX deactivations_by_time ON deactivations (at);
