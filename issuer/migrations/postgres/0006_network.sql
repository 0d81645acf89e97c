-- Network rules, per-license IP history and domain-bound licenses (docs/network.md).

-- CIDR allow and deny rules at three levels: global (no license, no policy), a policy's licenses, one license.
-- A policy's rules go with it when it is deleted (only a policy no license uses can be).
CREATE TABLE ip_rules (
    id          uuid PRIMARY KEY,
    cidr        text NOT NULL,
    action      text NOT NULL CHECK (action IN ('allow', 'deny')),
    license_id  uuid REFERENCES licenses (id),
    policy      text REFERENCES policies (name) ON DELETE CASCADE,
    note        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL,
    CHECK (license_id IS NULL OR policy IS NULL)
);
CREATE INDEX ip_rules_by_license ON ip_rules (license_id) WHERE license_id IS NOT NULL;

-- Every change of ip_rules moves this number in the same transaction (its row lock orders concurrent changes), so
-- each instance reloads its copy of the rules exactly when they changed (one cheap read a second).
CREATE TABLE ip_rules_version (
    id       integer PRIMARY KEY CHECK (id = 1),
    version  bigint NOT NULL
);
INSERT INTO ip_rules_version (id, version) VALUES (1, 0);
-- Moved by the database itself, so no change (a policy's deletion cascading to its rules included) is missed.
CREATE FUNCTION ip_rules_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE ip_rules_version SET version = version + 1 WHERE id = 1;
    RETURN NULL;
END;
$$;
CREATE TRIGGER ip_rules_changed AFTER INSERT OR DELETE ON ip_rules FOR EACH STATEMENT EXECUTE FUNCTION ip_rules_changed();

-- The addresses each license was used from, as counters: one row per (license, address), never one per request.
CREATE TABLE license_ips (
    license_id  uuid NOT NULL REFERENCES licenses (id),
    ip          text NOT NULL,
    first_seen  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL,
    requests    bigint NOT NULL,
    blocked     bigint NOT NULL,
    PRIMARY KEY (license_id, ip)
);

-- What a license's activations are bound to: machines (fingerprints) or domains. Fixed at creation.
ALTER TABLE licenses ADD COLUMN kind text NOT NULL DEFAULT 'machine' CHECK (kind IN ('machine', 'domain'));
ALTER TABLE policies ADD COLUMN kind text NOT NULL DEFAULT 'machine' CHECK (kind IN ('machine', 'domain'));
