-- Usage counters instead of one event row per validation (docs/usage.md). Written by the service's usage flush, at
-- most once a second, from counters held in memory.

-- Per machine: validations that found it, and the last one's time. A machine deactivated and activated again
-- starts from zero (the license's totals keep counting).
ALTER TABLE machines ADD COLUMN validation_count bigint NOT NULL DEFAULT 0;
ALTER TABLE machines ADD COLUMN last_validated_at timestamptz;

-- Per license: every validation of it, whatever the answer.
ALTER TABLE licenses ADD COLUMN validation_count bigint NOT NULL DEFAULT 0;
ALTER TABLE licenses ADD COLUMN last_validated_at timestamptz;

-- Per license per UTC day: one row for each day the license was used.
CREATE TABLE license_usage (
    license_id   uuid NOT NULL REFERENCES licenses (id),
    day          date NOT NULL,
    validations  bigint NOT NULL DEFAULT 0,
    activations  bigint NOT NULL DEFAULT 0,
    machines     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (license_id, day)
);
-- Retention removes the oldest days first.
CREATE INDEX license_usage_by_day ON license_usage (day);

-- The last day each fingerprint of a license was counted among the day's machines: kept when the machine is
-- deactivated, so a machine deactivated and activated again counts once a day. Pruned with the daily rows.
CREATE TABLE machine_usage_days (
    license_id   uuid NOT NULL REFERENCES licenses (id),
    fingerprint  text NOT NULL,
    last_day     date NOT NULL,
    PRIMARY KEY (license_id, fingerprint)
);
CREATE INDEX machine_usage_days_by_day ON machine_usage_days (last_day);
