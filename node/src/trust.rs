//! The trust half of the key directory: device certificates and signed device removals.
//!
//! The node holds no user identity secret and cannot make either. It checks what it can before
//! storing them (they decode, their signatures verify, they are for the caller's account and
//! device, a removal is by the account's user identity) so that it never serves something a
//! client would reject for a reason the node could have seen, and it serves them as uploaded.
//! Whether to trust a user identity is the clients' decision (docs/crypto.md).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use kith_client_api::{Caller, ServiceError};
use kith_crypto::{DeviceCertificate, DeviceRemoval, PublicIdentity, UserIdentityPublic};
use kith_proto::keys::{DeviceBundle, KeyBundles, RemovalUpload};
use kith_proto::{DeviceId, Timestamp, UserId};
use tracing::info;

use crate::state::AppState;
use crate::store::{TrustOp, TrustOutcome};

fn decode(what: &str, text: &str) -> Result<Vec<u8>, ServiceError> {
    BASE64.decode(text).map_err(|e| ServiceError::InvalidKeys(format!("{what} is not base64: {e}")))
}

/// A certificate checked against the upload it came with.
pub(crate) struct CheckedCertificate {
    certificate: Vec<u8>,
    user_identity: Vec<u8>,
}

/// Decodes an uploaded certificate and checks that it vouches for `identity` as the caller's
/// device (its signature is checked by decoding).
pub(crate) fn check_certificate(
    caller: &Caller,
    identity: &PublicIdentity,
    text: &str,
) -> Result<CheckedCertificate, ServiceError> {
    let certificate = decode("certificate", text)?;
    let decoded = DeviceCertificate::from_bytes(&certificate)
        .map_err(|e| ServiceError::InvalidKeys(format!("certificate: {e}")))?;
    if decoded.user_id() != caller.user.as_str() || decoded.device_id() != caller.device.0 {
        return Err(ServiceError::InvalidKeys(format!(
            "the certificate is for device {} of {}, not for this device ({} of {})",
            decoded.device_id(),
            decoded.user_id(),
            caller.device,
            caller.user
        )));
    }
    if decoded.device() != identity {
        return Err(ServiceError::InvalidKeys("the certificate vouches for another device identity".into()));
    }
    Ok(CheckedCertificate { user_identity: decoded.user_key().to_bytes(), certificate })
}

/// Stores a checked certificate; says whether the account's user identity appeared or changed
/// (its partners should hear of it).
///
/// # Errors
/// [`ServiceError::UserIdentityConflict`] for a certificate by another user identity than the
/// account's, without `reset`.
pub(crate) async fn store_certificate(
    state: &AppState,
    caller: &Caller,
    checked: CheckedCertificate,
    reset: bool,
) -> Result<bool, ServiceError> {
    let op = TrustOp::Certify {
        user: caller.user.clone(),
        device: caller.device,
        user_identity: checked.user_identity,
        certificate: checked.certificate,
        reset,
        at: Timestamp::now(),
    };
    match state.store.trust(op).await?.await? {
        TrustOutcome::Certified { first, changed } => {
            if changed {
                info!(user = %caller.user, device = %caller.device, "user identity reset");
            }
            Ok(first || changed)
        }
        TrustOutcome::Conflict => Err(ServiceError::UserIdentityConflict(caller.user.clone())),
        other => Err(ServiceError::Internal(format!("certify answered {other:?}"))),
    }
}

/// `POST /api/v1/keys/removals`: stores a removal signed by the account's user identity and
/// removes the device it names if that device still has the removed key.
pub(crate) async fn publish_removal(
    state: &AppState,
    caller: &Caller,
    upload: RemovalUpload,
) -> Result<(), ServiceError> {
    let bytes = decode("removal", &upload.removal)?;
    let removal = DeviceRemoval::from_bytes(&bytes).map_err(|e| ServiceError::InvalidKeys(format!("removal: {e}")))?;
    if removal.user_id() != caller.user.as_str() {
        return Err(ServiceError::InvalidKeys(format!(
            "the removal is for {}, not {}",
            removal.user_id(),
            caller.user
        )));
    }
    let records = state.store.trust_records(&caller.user).await?;
    let account_identity = records.user_identity.as_deref().map(UserIdentityPublic::from_bytes).transpose();
    match account_identity {
        Ok(Some(identity)) if &identity == removal.user_key() => {}
        Ok(_) => {
            return Err(ServiceError::InvalidKeys("the removal is not signed by the account's user identity".into()));
        }
        Err(e) => return Err(ServiceError::Internal(format!("stored user identity does not decode: {e}"))),
    }
    let device = DeviceId(removal.device_id());
    let op = TrustOp::Remove {
        user: caller.user.clone(),
        device,
        device_key: removal.device_key().to_vec(),
        removal: bytes,
        at: Timestamp::now(),
    };
    state.store.trust(op).await?.await?;
    info!(user = %caller.user, %device, "signed device removal stored");
    // The device goes too, if it is still the one removed (not a device linked since under
    // the same id).
    let current = state.store.devices(&caller.user).await?;
    let still_there = current.iter().any(|d| {
        d.device_id == device
            && d.identity.as_deref().and_then(|b| PublicIdentity::from_bytes(b).ok()).map(|i| i.signing_key())
                == Some(removal.device_key())
    });
    if still_there {
        crate::keys::remove_device(state, caller, device).await?;
    }
    Ok(())
}

/// Forgets the certificate of a device that was removed.
pub(crate) async fn forget_device(state: &AppState, user: &UserId, device: DeviceId) -> Result<(), ServiceError> {
    state.store.trust(TrustOp::Forget { user: user.clone(), device }).await?.await?;
    Ok(())
}

/// Adds `user`'s user identity, certificates and removals to bundles about to be served.
pub(crate) async fn attach(
    state: &AppState,
    user: &UserId,
    devices: Vec<DeviceBundle>,
) -> Result<KeyBundles, ServiceError> {
    let records = state.store.trust_records(user).await?;
    let devices = devices
        .into_iter()
        .map(|mut d| {
            d.certificate = records
                .certificates
                .iter()
                .find(|(id, _)| *id == d.device_id)
                .map(|(_, certificate)| BASE64.encode(certificate));
            d
        })
        .collect();
    Ok(KeyBundles {
        user_id: user.clone(),
        user_identity: records.user_identity.map(|identity| BASE64.encode(identity)),
        devices,
        removals: records.removals.iter().map(|r| BASE64.encode(r)).collect(),
    })
}
