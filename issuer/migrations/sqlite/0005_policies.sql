-- Policies (named license terms), leases and deactivation limits (docs/policies.md). Durations are whole seconds;
-- entitlements are JSON text; the overage is its text form ("none", "+2", "1.25x").
CREATE TABLE policies (
    name                      TEXT PRIMARY KEY NOT NULL,
    product                   TEXT NOT NULL,
    max_machines              INTEGER NOT NULL CHECK (max_machines >= 1),
    duration_secs             INTEGER CHECK (duration_secs >= 1),
    entitlements              TEXT NOT NULL,
    refresh_interval_secs     INTEGER CHECK (refresh_interval_secs >= 1),
    offline_grace_secs        INTEGER CHECK (offline_grace_secs >= 0),
    lease_secs                INTEGER CHECK (lease_secs >= 60),
    floating                  INTEGER NOT NULL CHECK (floating IN (0, 1)),
    overage                   TEXT NOT NULL,
    offline_allowed           INTEGER NOT NULL CHECK (offline_allowed IN (0, 1)),
    deactivation_limit        INTEGER CHECK (deactivation_limit >= 1),
    deactivation_period_secs  INTEGER NOT NULL CHECK (deactivation_period_secs >= 1),
    created_at                INTEGER NOT NULL,
    updated_at                INTEGER NOT NULL,
    CHECK (floating = 0 OR lease_secs IS NOT NULL)
);

-- The policy a license follows. A used policy cannot be deleted (the foreign key refuses it, whoever deletes).
ALTER TABLE licenses ADD COLUMN policy TEXT REFERENCES policies (name);
CREATE INDEX licenses_by_policy ON licenses (policy) WHERE policy IS NOT NULL;

-- When a machine's lease ends unless it checks in; NULL is no lease. The sweep finds ended leases by this index.
ALTER TABLE machines ADD COLUMN lease_expires_at INTEGER;
CREATE INDEX machines_by_lease ON machines (lease_expires_at) WHERE lease_expires_at IS NOT NULL;

-- Machines culled because their lease ended, so a validation can say LEASE_EXPIRED instead of NOT_ACTIVATED. One row
-- per license and fingerprint at most; deleted when the fingerprint activates again.
CREATE TABLE culled_machines (
    license_id        TEXT NOT NULL REFERENCES licenses (id),
    fingerprint       TEXT NOT NULL,
    lease_expired_at  INTEGER NOT NULL,
    culled_at         INTEGER NOT NULL,
    PRIMARY KEY (license_id, fingerprint)
);

-- Deactivations a deactivation limit counts (one row each, by the app or an offline code; admin removals and
-- floating check-ins are not recorded).
CREATE TABLE deactivations (
    license_id  TEXT NOT NULL REFERENCES licenses (id),
    at          INTEGER NOT NULL
);
CREATE INDEX deactivations_by_license ON deactivations (license_id, at);
-- The sweep prunes records older than the longest window (365 days) by this one.
CREATE INDEX deactivations_by_time ON deactivations (at);
