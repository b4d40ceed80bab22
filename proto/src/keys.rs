//! Bodies of the key directory (`/api/v1/keys`): devices publish the public halves of their
//! end-to-end encryption keys, and senders claim them to set up sessions.
//!
//! Keys travel as standard base64 (with padding) of their `kith-crypto` encodings (see
//! `docs/crypto.md`); the node checks every signature it can before storing anything. It holds
//! no user identity secret, so it cannot make a certificate or a removal itself: it stores and
//! serves what devices upload, and clients trust only devices their user's identity certified.

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, UserId};

/// `PUT /api/v1/keys`: the calling device's keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct KeyUpload {
    /// The device's `PublicIdentity` (identity keys and binding signature), base64.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::key))]
    pub identity: String,
    /// The device's current `SignedPreKeyPublic`, base64.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::key))]
    pub signed_pre_key: String,
    /// More `OneTimePreKeyPublic`s, base64 (at most 100 per upload).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::one_time_pre_keys))]
    pub one_time_pre_keys: Vec<String>,
    /// The device's `DeviceCertificate`, base64: the account's user identity vouching for
    /// `identity` as this device of this user. Its user key becomes the account's user
    /// identity when the account has none yet.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::certificate))]
    pub certificate: String,
    /// Replace the account's user identity with the certificate's, when they differ (a user
    /// who lost every device starts over; contacts are told loudly). Without it, a
    /// certificate by another user identity is refused with `409 conflict`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset_user_identity: bool,
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
    /// Its `DeviceCertificate`, base64, as the device uploaded it; absent for a device that
    /// never uploaded one. Clients write only to devices whose certificate the user identity
    /// they trust signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

/// `GET /api/v1/keys/{userId}`: a bundle for each of the user's devices that published keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct KeyBundles {
    /// Whose.
    pub user_id: UserId,
    /// The account's `UserIdentityPublic`, base64, once a device uploaded a certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_identity: Option<String>,
    /// One per device with keys.
    pub devices: Vec<DeviceBundle>,
    /// Signed `DeviceRemoval`s of the account's devices, base64, newest last (at most
    /// [`MAX_REMOVALS_SERVED`](crate::limits::MAX_REMOVALS_SERVED)): contacts stop writing to
    /// those devices for good.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removals: Vec<String>,
}

/// `POST /api/v1/keys/removals`: a signed removal of one of the caller's devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RemovalUpload {
    /// The `DeviceRemoval`, base64, signed by the account's user identity.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::certificate))]
    pub removal: String,
}
