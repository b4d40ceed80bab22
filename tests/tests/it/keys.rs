//! The key directory: devices publish verified keys, senders claim one-time prekeys exactly
//! once, and partners hear when a device's identity changes.

use std::collections::HashSet;

use anyhow::Result;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use kith_client::{Authed, ClientError};
use kith_crypto::{DeviceIdentity, OneTimePreKey, PreKeyBundle, SignedPreKey};
use kith_proto::keys::KeyUpload;
use kith_proto::{DeviceId, ErrorCode, ServerFrame};
use rand_core::UnwrapErr;

use crate::harness::{Attempt, Backend, PASSWORD, TestNode, frame_where, spend_allowance};

pub fn rng() -> UnwrapErr<getrandom::SysRng> {
    UnwrapErr(getrandom::SysRng)
}

/// A device's keys and the upload that publishes them.
pub fn keys(identity: &DeviceIdentity, first_prekey: u32, prekeys: u32) -> Result<KeyUpload> {
    let signed = SignedPreKey::generate(1, identity, &mut rng());
    let one_time = OneTimePreKey::generate_batch(first_prekey, prekeys, &mut rng())?;
    Ok(KeyUpload {
        identity: BASE64.encode(identity.public().to_bytes()),
        signed_pre_key: BASE64.encode(signed.public().to_bytes()),
        one_time_pre_keys: one_time.iter().map(|k| BASE64.encode(k.public().to_bytes())).collect(),
    })
}

/// The one-time prekey ids in a claim, per device, after checking every bundle verifies.
async fn claim(claimer: &Authed, user: &str) -> Result<Vec<(DeviceId, Option<u32>)>> {
    let bundles = claimer.claim_keys(user).await?;
    bundles
        .devices
        .iter()
        .map(|d| {
            let bundle = PreKeyBundle::from_bytes(&BASE64.decode(&d.bundle)?)?;
            let verified = bundle.verify()?;
            Ok((d.device_id, verified.bundle().one_time_prekey().map(|k| k.id())))
        })
        .collect()
}

#[tokio::test]
async fn devices_publish_verified_keys_and_each_one_time_prekey_is_claimed_once() -> Result<()> {
    let node = TestNode::start_with(Backend::Sqlite, &["--key-claim-rate", "0"]).await?;
    let alice = node.user("alice").await?;
    let bob_phone = node.user("bob").await?;
    let bob_laptop = node.client().device(DeviceId(1)).login("bob", PASSWORD).await?;
    assert!(alice.claim_keys("bob").await?.devices.is_empty(), "no keys published yet");

    let count = bob_phone.publish_keys(&keys(&DeviceIdentity::generate(&mut rng()), 0, 5)?).await?;
    assert_eq!((count.device_id, count.one_time_pre_keys), (DeviceId(0), 5));
    bob_laptop.publish_keys(&keys(&DeviceIdentity::generate(&mut rng()), 100, 2)?).await?;

    // Ten concurrent claims: each device's keys go out once each, then bundles carry none.
    let claims = futures_util::future::join_all((0..10).map(|_| claim(&alice, "bob"))).await;
    let mut seen = HashSet::new();
    let mut without = 0;
    for claim in claims {
        let claim = claim?;
        assert_eq!(claim.len(), 2, "a bundle per device");
        for (device, prekey) in claim {
            match prekey {
                Some(id) => assert!(seen.insert((device, id)), "prekey {id} of device {device} given twice"),
                None => without += 1,
            }
        }
    }
    assert_eq!(seen.len(), 7);
    assert_eq!(without, 13, "the rest fell back to the signed prekey");
    assert_eq!(bob_phone.key_count().await?.one_time_pre_keys, 0);
    assert_eq!(bob_laptop.key_count().await?.one_time_pre_keys, 0);
    Ok(())
}

#[tokio::test]
async fn forged_or_malformed_keys_are_refused() -> Result<()> {
    let node = TestNode::start().await?;
    let bob = node.user("bob").await?;
    let mine = DeviceIdentity::generate(&mut rng());
    let other = DeviceIdentity::generate(&mut rng());

    // A signed prekey signed by another identity.
    let mut forged = keys(&mine, 0, 1)?;
    forged.signed_pre_key = keys(&other, 0, 0)?.signed_pre_key;
    let refused = bob.publish_keys(&forged).await;
    assert!(
        matches!(refused, Err(ClientError::Api { status: 400, code: ErrorCode::InvalidRequest, .. })),
        "{refused:?}"
    );

    let mut garbage = keys(&mine, 0, 1)?;
    garbage.identity = "not base64!".into();
    assert!(matches!(bob.publish_keys(&garbage).await, Err(ClientError::Api { status: 400, .. })));
    let mut flipped = keys(&mine, 0, 1)?;
    let mut bytes = BASE64.decode(&flipped.identity)?;
    bytes[10] ^= 1;
    flipped.identity = BASE64.encode(bytes);
    assert!(matches!(bob.publish_keys(&flipped).await, Err(ClientError::Api { status: 400, .. })));
    let mut too_many = keys(&mine, 0, 101)?;
    too_many.one_time_pre_keys.truncate(101);
    assert!(matches!(bob.publish_keys(&too_many).await, Err(ClientError::Api { status: 400, .. })));

    // Nothing was stored by any of those.
    assert_eq!(bob.key_count().await?.one_time_pre_keys, 0);
    let alice = node.user("alice").await?;
    assert!(alice.claim_keys("bob").await?.devices.is_empty());
    assert!(matches!(alice.claim_keys("nobody").await, Err(ClientError::Api { status: 404, .. })));
    Ok(())
}

#[tokio::test]
async fn claims_are_rate_limited_per_caller_a_refused_claim_takes_nothing_and_others_still_claim() -> Result<()> {
    let (rate, burst) = (1, 3);
    let node = TestNode::start_with(
        Backend::Sqlite,
        &["--key-claim-rate", &rate.to_string(), "--key-claim-burst", &burst.to_string()],
    )
    .await?;
    let alice = node.user("alice").await?;
    let bob = node.user("bob").await?;
    let carol = node.user("carol").await?;
    bob.publish_keys(&keys(&DeviceIdentity::generate(&mut rng()), 0, 50)?).await?;
    let mut claimed = 0u32;
    spend_allowance(burst, rate, async |_| match alice.claim_keys("bob").await {
        Ok(bundles) => {
            claimed += u32::try_from(bundles.devices.len())?;
            Ok(Attempt::Accepted)
        }
        Err(ClientError::Api { status: 429, code: ErrorCode::RateLimited, .. }) => Ok(Attempt::Limited),
        Err(e) => Err(e.into()),
    })
    .await?;
    assert_eq!(bob.key_count().await?.one_time_pre_keys, 50 - claimed, "a refused claim takes nothing");
    // Carol has her own allowance.
    assert_eq!(claim(&carol, "bob").await?.len(), 1);
    assert_eq!(bob.key_count().await?.one_time_pre_keys, 50 - claimed - 1);
    Ok(())
}

#[tokio::test]
async fn partners_hear_when_a_device_identity_changes() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    let bob = node.user("bob").await?;
    let carol = node.user("carol").await?;
    bob.publish_keys(&keys(&DeviceIdentity::generate(&mut rng()), 0, 1)?).await?;
    alice.send_message("bob", "hi", None).await?;
    let mut alice_ws = alice.connect().await?;
    let mut carol_ws = carol.connect().await?;

    // Bob reinstalls: a new identity on the same device.
    bob.publish_keys(&keys(&DeviceIdentity::generate(&mut rng()), 0, 1)?).await?;
    let changed = frame_where(&mut alice_ws, |f| match f {
        ServerFrame::KeysChanged { user_id, device_id } => Some((user_id, device_id)),
        _ => None,
    })
    .await?;
    assert_eq!((changed.0.as_str(), changed.1), ("bob@test", DeviceId(0)));
    // Carol never talked to bob: she hears nothing. A message from bob is the next thing she sees.
    bob.send_message("carol", "first contact", None).await?;
    assert!(matches!(crate::harness::next_frame(&mut carol_ws).await?, ServerFrame::Message(_)));
    Ok(())
}

#[tokio::test]
async fn listing_devices_claims_no_one_time_prekey() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    let bob = node.user("bob").await?;
    let identity = DeviceIdentity::generate(&mut rng());
    bob.publish_keys(&keys(&identity, 0, 5)?).await?;
    for _ in 0..3 {
        let listed = alice.device_keys("bob").await?;
        assert_eq!(listed.devices.len(), 1);
        let bundle = PreKeyBundle::from_bytes(&BASE64.decode(&listed.devices[0].bundle)?)?.verify()?;
        assert_eq!(bundle.identity(), identity.public());
        assert!(bundle.bundle().one_time_prekey().is_none());
    }
    assert_eq!(bob.key_count().await?.one_time_pre_keys, 5);
    assert!(matches!(alice.device_keys("nobody").await, Err(ClientError::Api { status: 404, .. })));
    Ok(())
}
