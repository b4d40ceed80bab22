-- End-to-end trust (protocol version 2): each account's user identity, the certificate it
-- signed for each device, and the removals it signed. The node stores and serves these as
-- uploaded (after checking their signatures); it holds no user identity secret.

-- The account's UserIdentityPublic, set by the first certificate a device uploads and replaced
-- only when an upload asks to reset it.
CREATE TABLE user_identities (
    user_id    TEXT    NOT NULL PRIMARY KEY,
    identity   BLOB    NOT NULL,          -- UserIdentityPublic
    updated_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- The DeviceCertificate each device uploaded with its keys.
CREATE TABLE device_certificates (
    user_id     TEXT    NOT NULL,
    device_id   INTEGER NOT NULL,
    certificate BLOB    NOT NULL,         -- DeviceCertificate
    PRIMARY KEY (user_id, device_id)
) STRICT, WITHOUT ROWID;

-- Signed DeviceRemovals, served with the account's keys (the newest 50 per user are kept).
CREATE TABLE device_removals (
    user_id    TEXT    NOT NULL,
    device_id  INTEGER NOT NULL,
    device_key BLOB    NOT NULL,          -- the removed device's Ed25519 identity key
    removal    BLOB    NOT NULL,          -- DeviceRemoval
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id, device_key)
) STRICT, WITHOUT ROWID;

-- Keys published under protocol version 1 carry no certificate and cannot be used under
-- version 2: devices publish again (with a certificate) when their client is updated.
DELETE FROM one_time_prekeys;
UPDATE devices SET identity = NULL, signed_prekey = NULL;
