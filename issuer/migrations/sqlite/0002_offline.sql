-- Offline (air-gapped) activation: each machine keeps the deactivation proof of the offline token it was last given
-- (hex of 16 bytes, NULL for online-only machines), and redeemed deactivation codes are remembered so a code can
-- free a slot only once.

ALTER TABLE machines ADD COLUMN offline_proof TEXT;

CREATE TABLE redeemed_deactivations (
    proof        TEXT PRIMARY KEY NOT NULL,
    license_id   TEXT NOT NULL REFERENCES licenses (id),
    fingerprint  TEXT NOT NULL,
    redeemed_at  INTEGER NOT NULL
);
