-- Devices: each user has up to five (phone, laptop …), each with its own end-to-end keys and
-- its own queue of messages to receive. Every existing user gets device 0.
CREATE TABLE devices (
    user_id       TEXT   NOT NULL,
    device_id     BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    identity      BYTEA,                -- PublicIdentity, null until the device publishes keys
    signed_prekey BYTEA,                -- SignedPreKeyPublic
    PRIMARY KEY (user_id, device_id)
);
INSERT INTO devices (user_id, device_id, created_at) SELECT user_id, 0, created_at FROM users;

-- One-time prekeys, claimed (deleted) one per device by whoever starts a session with it.
CREATE TABLE one_time_prekeys (
    user_id   TEXT   NOT NULL,
    device_id BIGINT NOT NULL,
    key_id    BIGINT NOT NULL,
    key       BYTEA  NOT NULL,          -- OneTimePreKeyPublic
    PRIMARY KEY (user_id, device_id, key_id)
);

-- What each device has not acked yet: redelivery on connect walks this in arrival order.
-- Replaces the per-message `pending` flag, which could not tell one device from another.
CREATE TABLE device_pending (
    owner_id  TEXT   NOT NULL,
    device_id BIGINT NOT NULL,
    seq       BIGINT NOT NULL,           -- messages.seq of the owner's copy
    PRIMARY KEY (owner_id, device_id, seq)
);
INSERT INTO device_pending (owner_id, device_id, seq) SELECT owner_id, 0, seq FROM messages WHERE pending;

DROP INDEX messages_pending;
ALTER TABLE messages DROP COLUMN pending;
