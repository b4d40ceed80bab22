-- Federation: envelopes waiting for another node's ack, written in the same transaction as the
-- local effect they carry (the sender's copy of a message, a receipt), and removed when acked.
CREATE TABLE outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT, -- send order
    destination TEXT    NOT NULL,                  -- the peer's server name
    envelope_id TEXT    NOT NULL,                  -- kept across resends, so the peer dedupes
    kind        TEXT    NOT NULL,
    body        BLOB    NOT NULL,                  -- the envelope body (JSON), signed at send time
    created_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX outbox_destination ON outbox (destination, seq);

-- Envelopes accepted from other nodes: a repeat of (origin, id) is acked again and changes
-- nothing.
CREATE TABLE inbox (
    origin      TEXT    NOT NULL,
    envelope_id TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (origin, envelope_id)
) STRICT, WITHOUT ROWID;
