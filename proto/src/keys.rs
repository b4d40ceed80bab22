//! Bodies of the key directory (`/api/v1/keys`): devices publish the public halves of their
//! end-to-end encryption keys, and senders claim them to set up sessions.
//!
//! Keys travel as standard base64 (with padding) of their `kith-crypto` encodings (see
//! `docs/crypto.md`); the node checks every signature before storing anything.

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, UserId};

/// `PUT /api/v1/keys`: the calling device's keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct KeyUpload {
    /// The device's `PublicIdentity` (identity keys and binding signature), base64.
    pub identity: String,
    /// The device's current `SignedPreKeyPublic`, base64.
    pub signed_pre_key: String,
    /// More `OneTimePreKeyPublic`s, base64 (at most 100 per upload).
    #[serde(default)]
    pub one_time_pre_keys: Vec<String>,
}

/// How many unclaimed one-time prekeys a device has on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct KeyCount {
    /// The device.
    pub device_id: DeviceId,
    /// Its unclaimed one-time prekeys: upload more when this runs low.
    pub one_time_pre_keys: u32,
}

/// One device's prekey bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeviceBundle {
    /// The device.
    pub device_id: DeviceId,
    /// Its `PreKeyBundle`, base64: identity, signed prekey and, while any are left, one
    /// one-time prekey claimed for this caller alone.
    pub bundle: String,
}

/// `GET /api/v1/keys/{userId}`: a bundle for each of the user's devices that published keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct KeyBundles {
    /// Whose.
    pub user_id: UserId,
    /// One per device with keys.
    pub devices: Vec<DeviceBundle>,
}
