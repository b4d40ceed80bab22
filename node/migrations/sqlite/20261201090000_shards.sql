-- Sharding (PostgreSQL only runs several shards; SQLite records that it is shard 0 of 1): see
-- the PostgreSQL migration of the same name.
CREATE TABLE shard_info (
    id          INTEGER PRIMARY KEY CHECK (id = 0),
    shard_index INTEGER NOT NULL,
    shard_count INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE handoffs (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    handoff_id   TEXT    NOT NULL UNIQUE,
    target_shard INTEGER NOT NULL,
    body         BLOB    NOT NULL,
    created_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX handoffs_age ON handoffs (created_at);
