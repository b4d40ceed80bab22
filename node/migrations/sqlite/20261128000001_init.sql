-- Accounts. `status` and `last_seen` persist presence across restarts; live presence
-- is kept in memory (the cache) and written here on each transition.
CREATE TABLE users (
    user_id       TEXT    PRIMARY KEY NOT NULL,   -- name@server
    name          TEXT    NOT NULL,               -- the local part
    password_hash TEXT    NOT NULL,               -- PHC string, argon2id
    created_at    INTEGER NOT NULL,               -- ms since the Unix epoch
    last_seen     INTEGER,                        -- ms; null until the first session closes
    status        TEXT    NOT NULL DEFAULT 'offline' CHECK (status IN ('online', 'offline'))
) STRICT;

-- Mailboxes: one row per (owner, message). A message between two users of this node is
-- two rows written in one transaction, one in each participant's mailbox, so that every
-- query is by owner and a store can be sharded by hash(owner).
CREATE TABLE messages (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT, -- arrival order on this node
    owner_id    TEXT    NOT NULL,                  -- whose mailbox
    message_id  TEXT    NOT NULL,                  -- UUIDv7, minted by the sender's home node
    peer_id     TEXT    NOT NULL,                  -- the other participant
    sender_id   TEXT    NOT NULL,
    receiver_id TEXT    NOT NULL,
    content     TEXT    NOT NULL,
    timestamp   INTEGER NOT NULL,                  -- ms since the Unix epoch
    status      TEXT    NOT NULL CHECK (status IN ('sent', 'delivered', 'read')),
    pending     INTEGER NOT NULL,                  -- 1 while the owner, as receiver, has not acked
    UNIQUE (owner_id, message_id)
) STRICT;

-- History: a conversation within a mailbox, by time-ordered message id.
CREATE INDEX messages_conversation ON messages (owner_id, peer_id, message_id);
-- Redelivery on connect: the owner's unacked messages in arrival order.
CREATE INDEX messages_pending ON messages (owner_id, seq) WHERE pending;

-- Idempotent sends: (sender, clientMessageId) -> the message it created.
CREATE TABLE client_message_ids (
    sender_id         TEXT    NOT NULL,
    client_message_id TEXT    NOT NULL,
    message_id        TEXT    NOT NULL,
    timestamp         INTEGER NOT NULL,
    PRIMARY KEY (sender_id, client_message_id)
) STRICT, WITHOUT ROWID;
