-- Sharding: which shard of how many this database is, recorded once at initialisation, so an
-- instance configured with a shard list of another size or order refuses to start instead of
-- writing users' rows where nobody will look for them.
CREATE TABLE shard_info (
    id          BIGINT  PRIMARY KEY CHECK (id = 0),   -- one row
    shard_index BIGINT  NOT NULL,
    shard_count BIGINT  NOT NULL,
    created_at  BIGINT  NOT NULL
);

-- Hand-offs: the other half of a local message (or receipt) whose two owners live on
-- different shards. Written in the same transaction as the sender's copy (the reader's copy
-- for a receipt), applied idempotently on the target shard, then removed. What a crash leaves
-- here is completed by any instance's sweep.
CREATE TABLE handoffs (
    seq          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    handoff_id   TEXT    NOT NULL UNIQUE,               -- m:<messageId> or r:<messageId>:<status>
    target_shard BIGINT  NOT NULL,
    body         BYTEA   NOT NULL,                      -- JSON: the copy to write there
    created_at   BIGINT  NOT NULL
);
CREATE INDEX handoffs_age ON handoffs (created_at);
