-- Presence privacy: who may see a user's presence and last_seen. 'contacts' (the default)
-- means users with a conversation with them (a message either way, on any node).
ALTER TABLE users ADD COLUMN presence_visibility TEXT NOT NULL DEFAULT 'contacts'
    CHECK (presence_visibility IN ('everyone', 'contacts', 'nobody'));
