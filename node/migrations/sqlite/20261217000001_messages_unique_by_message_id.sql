-- The mailbox rows' uniqueness keyed by message id first: (message_id, owner_id), not
-- (owner_id, message_id). Message ids are UUIDv7, so new entries land at the right edge of this
-- index, in the few pages every commit already writes, instead of one page per row somewhere in
-- the index (owners come in any order): a message's two rows cost two fewer pages in the WAL,
-- and the checkpoint two fewer pages to copy. Lookups are by both columns, which either order
-- serves; a mailbox's own order is the conversation index's.
--
-- SQLite cannot drop a table's UNIQUE constraint, so the table is rebuilt (a copy of every
-- mailbox row, once, on upgrade). `seq` keeps its values, and AUTOINCREMENT its high-water
-- mark: the rename carries the new table's `sqlite_sequence` row, which the copy set to the
-- highest `seq`; a mark above every row (rows deleted from the top) is carried over by hand.
CREATE TABLE messages_rebuilt (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT, -- arrival order on this node
    owner_id    TEXT    NOT NULL,                  -- whose mailbox
    message_id  TEXT    NOT NULL,                  -- UUIDv7, minted by the sender's home node
    peer_id     TEXT    NOT NULL,                  -- the other participant
    sender_id   TEXT    NOT NULL,
    receiver_id TEXT    NOT NULL,
    content     TEXT    NOT NULL,
    timestamp   INTEGER NOT NULL,                  -- ms since the Unix epoch
    status      TEXT    NOT NULL CHECK (status IN ('sent', 'delivered', 'read')),
    UNIQUE (message_id, owner_id)
) STRICT;

INSERT INTO messages_rebuilt (seq, owner_id, message_id, peer_id, sender_id, receiver_id, content, timestamp, status)
    SELECT seq, owner_id, message_id, peer_id, sender_id, receiver_id, content, timestamp, status FROM messages;

INSERT INTO sqlite_sequence (name, seq)
    SELECT 'messages_rebuilt', seq FROM sqlite_sequence
    WHERE name = 'messages' AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'messages_rebuilt');
UPDATE sqlite_sequence
    SET seq = max(seq, (SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'messages'))
    WHERE name = 'messages_rebuilt';

DROP TABLE messages;
ALTER TABLE messages_rebuilt RENAME TO messages;

-- History: a conversation within a mailbox, by time-ordered message id.
CREATE INDEX messages_conversation ON messages (owner_id, peer_id, message_id);
