-- The key ring every instance signs with, as the store knows it: each key's public half (the lpk1. line) and which
-- key signs. The secret halves stay in the key ring files of each instance's data directory (docs/operations.md says
-- why). An instance whose ring's active key is not the one recorded here refuses to start, and a first start on a
-- store that has a ring never creates a key of its own. The same as migrations/sqlite/0004.
CREATE TABLE signing_keys (
    key_id       text PRIMARY KEY,
    public_key   text NOT NULL,
    status       text NOT NULL CHECK (status IN ('active', 'retired')),
    recorded_at  timestamptz NOT NULL
);
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (status) WHERE status = 'active';
