-- Network rules, per-license IP history and domain-bound licenses (docs/network.md).

-- CIDR allow and deny rules at three levels: global (no license, no policy), a policy's licenses, one license.
-- A policy's rules go with it when it is deleted (only a policy no license uses can be).
CREATE TABLE ip_rules (
    id          TEXT PRIMARY KEY NOT NULL,
    cidr        TEXT NOT NULL,
    action      TEXT NOT NULL CHECK (action IN ('allow', 'deny')),
    license_id  TEXT REFERENCES licenses (id),
    policy      TEXT REFERENCES policies (name) ON DELETE CASCADE,
    note        TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    CHECK (license_id IS NULL OR policy IS NULL)
);
CREATE INDEX ip_rules_by_license ON ip_rules (license_id) WHERE license_id IS NOT NULL;

-- Every change of ip_rules moves this number in the same transaction, so each instance reloads its copy of the
-- rules exactly when they changed (one cheap read a second).
CREATE TABLE ip_rules_version (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    version  INTEGER NOT NULL
);
INSERT INTO ip_rules_version (id, version) VALUES (1, 0);
-- Moved by the database itself, so no change (a policy's deletion cascading to its rules included) is missed.
CREATE TRIGGER ip_rules_inserted AFTER INSERT ON ip_rules
BEGIN
    UPDATE ip_rules_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER ip_rules_deleted AFTER DELETE ON ip_rules
BEGIN
    UPDATE ip_rules_version SET version = version + 1 WHERE id = 1;
END;

-- The addresses each license was used from, as counters: one row per (license, address), never one per request.
CREATE TABLE license_ips (
    license_id  TEXT NOT NULL REFERENCES licenses (id),
    ip          TEXT NOT NULL,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    requests    INTEGER NOT NULL,
    blocked     INTEGER NOT NULL,
    PRIMARY KEY (license_id, ip)
) WITHOUT ROWID;

-- What a license's activations are bound to: machines (fingerprints) or domains. Fixed at creation.
ALTER TABLE licenses ADD COLUMN kind TEXT NOT NULL DEFAULT 'machine' CHECK (kind IN ('machine', 'domain'));
ALTER TABLE policies ADD COLUMN kind TEXT NOT NULL DEFAULT 'machine' CHECK (kind IN ('machine', 'domain'));
