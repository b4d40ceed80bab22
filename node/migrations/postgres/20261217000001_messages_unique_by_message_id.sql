-- The mailbox rows' uniqueness keyed by message id first: (message_id, owner_id), not
-- (owner_id, message_id). Message ids are UUIDv7, so new entries land at the right edge of this
-- index, in the few pages every commit already writes, instead of one page per row somewhere in
-- the index (owners come in any order). Lookups are by both columns, which either order serves;
-- a mailbox's own order is the conversation index's.
ALTER TABLE messages DROP CONSTRAINT messages_owner_id_message_id_key;
ALTER TABLE messages ADD CONSTRAINT messages_message_id_owner_id_key UNIQUE (message_id, owner_id);
