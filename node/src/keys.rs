//! The key directory: each device publishes the public halves of its end-to-end keys with the
//! certificate its account's user identity signed for it; anyone starting a session with a
//! user claims a bundle per device. The node checks every signature before storing a key (so
//! it never serves a bundle a client would reject for a reason it could see), hands out each
//! one-time prekey at most once, serves the account's user identity, certificates and signed
//! removals with the bundles (see [`crate::trust`]), and tells conversation partners when a
//! device's identity or the account's user identity appears or changes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use kith_client_api::{Caller, ServiceError};
use kith_crypto::{OneTimePreKeyPublic, PreKeyBundle, PublicIdentity, SignedPreKeyPublic};
use kith_proto::keys::{DeviceBundle, KeyBundles, KeyCount, KeyUpload};
use kith_proto::{DeviceId, ServerFrame, UserId};
use tracing::{debug, info, warn};

use crate::push;
use crate::state::AppState;
use crate::store::{ClaimedKeys, PublishedKeys, StoreError};
use crate::trust::{self, CheckedCertificate};

fn decode(what: &str, text: &str) -> Result<Vec<u8>, ServiceError> {
    BASE64.decode(text).map_err(|e| ServiceError::InvalidKeys(format!("{what} is not base64: {e}")))
}

/// Decodes and verifies an upload: the identity's binding signature, the signed prekey's
/// signature by that identity, the encoding of every one-time prekey, and the certificate
/// (signature, and that it is for this identity as the caller's device).
fn verify_upload(caller: &Caller, upload: &KeyUpload) -> Result<(PublishedKeys, CheckedCertificate), ServiceError> {
    let identity_bytes = decode("identity", &upload.identity)?;
    let identity =
        PublicIdentity::from_bytes(&identity_bytes).map_err(|e| ServiceError::InvalidKeys(format!("identity: {e}")))?;
    let signed_bytes = decode("signedPreKey", &upload.signed_pre_key)?;
    let signed = SignedPreKeyPublic::from_bytes(&signed_bytes)
        .map_err(|e| ServiceError::InvalidKeys(format!("signedPreKey: {e}")))?;
    signed.verify(&identity).map_err(|e| ServiceError::InvalidKeys(format!("signedPreKey signature: {e}")))?;
    let one_time = upload
        .one_time_pre_keys
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let bytes = decode(&format!("oneTimePreKeys[{i}]"), text)?;
            let key = OneTimePreKeyPublic::from_bytes(&bytes)
                .map_err(|e| ServiceError::InvalidKeys(format!("oneTimePreKeys[{i}]: {e}")))?;
            Ok((key.id(), bytes))
        })
        .collect::<Result<Vec<_>, ServiceError>>()?;
    let certificate = trust::check_certificate(caller, &identity, &upload.certificate)?;
    Ok((PublishedKeys { identity: identity_bytes, signed_prekey: signed_bytes, one_time }, certificate))
}

/// `PUT /api/v1/keys`.
pub(crate) async fn publish(state: &AppState, caller: &Caller, upload: KeyUpload) -> Result<KeyCount, ServiceError> {
    let (keys, certificate) = verify_upload(caller, &upload)?;
    let known = state.store.devices(&caller.user).await?;
    if !known.iter().any(|d| d.device_id == caller.device) {
        return Err(ServiceError::UnknownDevice(caller.user.clone(), caller.device));
    }
    let first_publish = known.iter().any(|d| d.device_id == caller.device && d.identity.is_none());
    // The certificate first: one by another user identity is refused before anything changes.
    let user_identity_news = trust::store_certificate(state, caller, certificate, upload.reset_user_identity).await?;
    let outcome = match state.store.publish_keys(&caller.user, caller.device, keys).await?.await {
        Ok(outcome) => outcome,
        Err(StoreError::DeviceNotFound(user, device)) => return Err(ServiceError::UnknownDevice(user, device)),
        Err(StoreError::TooManyPrekeys { would_hold, max }) => {
            return Err(ServiceError::InvalidKeys(format!(
                "the device would hold {would_hold} one-time prekeys; the limit is {max}"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    if outcome.identity_changed || first_publish || user_identity_news {
        if outcome.identity_changed {
            info!(user = %caller.user, device = %caller.device, "device identity changed");
        }
        notify_partners(state, &caller.user, caller.device).await;
    }
    Ok(KeyCount { device_id: caller.device, one_time_pre_keys: outcome.one_time_prekeys })
}

/// Sends `keys.changed` to the live sessions of everyone `user` has a conversation with, and to
/// the user's own other devices.
async fn notify_partners(state: &AppState, user: &UserId, device: DeviceId) {
    let frame = ServerFrame::KeysChanged { user_id: user.clone(), device_id: device };
    let peers = match state.store.conversation_peers(user).await {
        Ok(peers) => peers,
        Err(e) => {
            warn!(error = %e, "could not tell conversation partners about new keys");
            return;
        }
    };
    for peer in peers.iter().filter(|peer| peer.is_on(&state.server_name) && *peer != user) {
        push::to_user(state, peer, &frame, None).await;
    }
    push::to_user(state, user, &frame, Some(device)).await;
}

/// `GET /api/v1/keys/{userId}`.
pub(crate) async fn claim(state: &AppState, caller: &Caller, user: &UserId) -> Result<KeyBundles, ServiceError> {
    if user.is_on(&state.server_name) {
        claim_local(state, user).await
    } else {
        state.peers.claim_keys(&caller.user, user, true).await
    }
}

/// `GET /api/v1/keys/{userId}/devices`.
pub(crate) async fn devices(state: &AppState, caller: &Caller, user: &UserId) -> Result<KeyBundles, ServiceError> {
    if user.is_on(&state.server_name) {
        devices_local(state, user).await
    } else {
        state.peers.claim_keys(&caller.user, user, false).await
    }
}

/// The devices of a user of this node with their identity and signed prekey, claiming nothing.
pub(crate) async fn devices_local(state: &AppState, user: &UserId) -> Result<KeyBundles, ServiceError> {
    if !state.users.exists(user).await? {
        return Err(ServiceError::UnknownUser(user.clone()));
    }
    let keys = state.store.device_keys(user).await?;
    let devices = keys.into_iter().map(bundle).collect::<Result<Vec<_>, ServiceError>>()?;
    trust::attach(state, user, devices).await
}

/// Claims bundles of a user of this node (for a local caller or a peer's query).
pub(crate) async fn claim_local(state: &AppState, user: &UserId) -> Result<KeyBundles, ServiceError> {
    if !user.is_on(&state.server_name) {
        return Err(ServiceError::UnknownServer(user.server_name()));
    }
    if !state.users.exists(user).await? {
        return Err(ServiceError::UnknownUser(user.clone()));
    }
    // Past the user's budget, whoever asks gets the signed prekey only, and the one-time
    // prekeys stay for later.
    if !state.prekey_budget.take(user) {
        debug!(%user, "one-time prekey budget spent: serving signed prekeys only");
        return devices_local(state, user).await;
    }
    let claimed = state.store.claim_keys(user).await?.await?;
    let devices = claimed.into_iter().map(bundle).collect::<Result<Vec<_>, ServiceError>>()?;
    trust::attach(state, user, devices).await
}

/// Builds the bundle a client decodes from what the store held (verified when it was stored).
fn bundle(keys: ClaimedKeys) -> Result<DeviceBundle, ServiceError> {
    let corrupt = |e: kith_crypto::CryptoError| ServiceError::Internal(format!("stored key does not decode: {e}"));
    let identity = PublicIdentity::from_bytes(&keys.identity).map_err(corrupt)?;
    let signed = SignedPreKeyPublic::from_bytes(&keys.signed_prekey).map_err(corrupt)?;
    let one_time = keys.one_time.as_deref().map(OneTimePreKeyPublic::from_bytes).transpose().map_err(corrupt)?;
    let bundle = PreKeyBundle::new(identity, signed, one_time);
    Ok(DeviceBundle { device_id: keys.device_id, bundle: BASE64.encode(bundle.to_bytes()), certificate: None })
}

/// `GET /api/v1/keys/count`.
pub(crate) async fn count(state: &AppState, caller: &Caller) -> Result<KeyCount, ServiceError> {
    let one_time_pre_keys = state.store.prekey_count(&caller.user, caller.device).await?;
    Ok(KeyCount { device_id: caller.device, one_time_pre_keys })
}

/// `DELETE /api/v1/devices/{deviceId}`.
pub(crate) async fn remove_device(state: &AppState, caller: &Caller, device: DeviceId) -> Result<(), ServiceError> {
    if state.store.remove_device(&caller.user, device).await?.await? {
        info!(user = %caller.user, %device, "device removed");
        trust::forget_device(state, &caller.user, device).await?;
        // Partners fetch the device list again and stop writing to the device.
        notify_partners(state, &caller.user, device).await;
        // Its tokens stop working and its open connections close.
        state.users.forget_device(&caller.user, device);
        push::close_device(state, &caller.user, device).await;
        Ok(())
    } else {
        // The caller's own device exists (its token was checked): this is about the target,
        // so the answer is 404, not the 401 that tells a client its token is dead.
        Err(ServiceError::NoSuchDevice(caller.user.clone(), device))
    }
}
