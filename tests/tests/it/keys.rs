//! The key directory: devices publish verified keys with their certificate, senders claim
//! one-time prekeys exactly once, the account's user identity, certificates and signed
//! removals are served with the bundles, and partners hear when a device's identity changes.

use std::collections::HashSet;

use anyhow::Result;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use kith_client::{Authed, ClientError};
use kith_crypto::{DeviceCertificate, DeviceIdentity, OneTimePreKey, PreKeyBundle, SignedPreKey, UserIdentity};
use kith_proto::keys::{KeyUpload, RemovalUpload};
use kith_proto::{DeviceId, ErrorCode, ServerFrame};
use rand_core::UnwrapErr;

use crate::harness::{Attempt, Backend, PASSWORD, TestNode, frame_where, spend_allowance};

pub fn rng() -> UnwrapErr<getrandom::SysRng> {
    UnwrapErr(getrandom::SysRng)
}

/// The upload that publishes `identity` as `device`'s keys, certified by `user`.
pub fn keys_of(
    device: &Authed,
    user: &UserIdentity,
    identity: &DeviceIdentity,
    first_prekey: u32,
    prekeys: u32,
) -> Result<KeyUpload> {
    let signed = SignedPreKey::generate(1, identity, &mut rng());
    let one_time = OneTimePreKey::generate_batch(first_prekey, prekeys, &mut rng())?;
    let certificate = user.certify(device.user_id().as_str(), device.device_id().0, identity.public())?;
    Ok(KeyUpload {
        identity: BASE64.encode(identity.public().to_bytes()),
        signed_pre_key: BASE64.encode(signed.public().to_bytes()),
        one_time_pre_keys: one_time.iter().map(|k| BASE64.encode(k.public().to_bytes())).collect(),
        certificate: BASE64.encode(certificate.to_bytes()),
        reset_user_identity: false,
    })
}

/// A fresh device identity's upload for `device`, certified by `user`.
pub fn keys(device: &Authed, user: &UserIdentity, first_prekey: u32, prekeys: u32) -> Result<KeyUpload> {
    keys_of(device, user, &DeviceIdentity::generate(&mut rng()), first_prekey, prekeys)
}

/// The one-time prekey ids in a claim, per device, after checking every bundle verifies
/// against its certificate and the user identity served with it.
async fn claim(claimer: &Authed, user: &str) -> Result<Vec<(DeviceId, Option<u32>)>> {
    let bundles = claimer.claim_keys(user).await?;
    let user_identity =
        kith_crypto::UserIdentityPublic::from_bytes(&BASE64.decode(bundles.user_identity.as_deref().unwrap_or(""))?)?;
    bundles
        .devices
        .iter()
        .map(|d| {
            let bundle = PreKeyBundle::from_bytes(&BASE64.decode(&d.bundle)?)?;
            let certificate = DeviceCertificate::from_bytes(&BASE64.decode(d.certificate.as_deref().unwrap_or(""))?)?;
            let verified = bundle.verify(&certificate, &user_identity, bundles.user_id.as_str(), d.device_id.0)?;
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
    let bob_user = UserIdentity::generate(&mut rng());

    let count = bob_phone.publish_keys(&keys(&bob_phone, &bob_user, 0, 5)?).await?;
    assert_eq!((count.device_id, count.one_time_pre_keys), (DeviceId(0), 5));
    bob_laptop.publish_keys(&keys(&bob_laptop, &bob_user, 100, 2)?).await?;

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
    let bob_user = UserIdentity::generate(&mut rng());
    let mine = DeviceIdentity::generate(&mut rng());
    let other = DeviceIdentity::generate(&mut rng());
    let keys = |identity: &DeviceIdentity, first: u32, n: u32| keys_of(&bob, &bob_user, identity, first, n);

    // A signed prekey signed by another identity.
    let mut forged = keys(&mine, 0, 1)?;
    forged.signed_pre_key = keys(&other, 0, 0)?.signed_pre_key;
    let refused = bob.publish_keys(&forged).await;
    assert!(
        matches!(refused, Err(ClientError::Api { status: 422, code: ErrorCode::InvalidRequest, .. })),
        "{refused:?}"
    );

    let mut garbage = keys(&mine, 0, 1)?;
    garbage.identity = "not base64!".into();
    assert!(matches!(bob.publish_keys(&garbage).await, Err(ClientError::Api { status: 422, .. })));
    let mut flipped = keys(&mine, 0, 1)?;
    let mut bytes = BASE64.decode(&flipped.identity)?;
    bytes[10] ^= 1;
    flipped.identity = BASE64.encode(bytes);
    assert!(matches!(bob.publish_keys(&flipped).await, Err(ClientError::Api { status: 422, .. })));
    let mut too_many = keys(&mine, 0, 101)?;
    too_many.one_time_pre_keys.truncate(101);
    assert!(matches!(bob.publish_keys(&too_many).await, Err(ClientError::Api { status: 400, .. })));
    // A certificate for another identity, another device, or none that verifies.
    let mut wrong_identity = keys(&mine, 0, 1)?;
    wrong_identity.certificate = keys(&other, 0, 0)?.certificate;
    let mut wrong_device = keys(&mine, 0, 1)?;
    wrong_device.certificate = BASE64.encode(bob_user.certify("bob@test", 9, mine.public())?.to_bytes());
    let mut bad_signature = keys(&mine, 0, 1)?;
    let mut bytes = BASE64.decode(&bad_signature.certificate)?;
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    bad_signature.certificate = BASE64.encode(bytes);
    for upload in [wrong_identity, wrong_device, bad_signature] {
        let refused = bob.publish_keys(&upload).await;
        assert!(matches!(refused, Err(ClientError::Api { status: 422, .. })), "{refused:?}");
    }

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
    bob.publish_keys(&keys(&bob, &UserIdentity::generate(&mut rng()), 0, 50)?).await?;
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
    let bob_user = UserIdentity::generate(&mut rng());
    bob.publish_keys(&keys(&bob, &bob_user, 0, 1)?).await?;
    alice.send_message("bob", "hi", None).await?;
    let mut alice_ws = alice.connect().await?;
    let mut carol_ws = carol.connect().await?;

    // Bob relinks the device: a new device identity certified by the same user identity.
    bob.publish_keys(&keys(&bob, &bob_user, 0, 1)?).await?;
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
    let bob_user = UserIdentity::generate(&mut rng());
    bob.publish_keys(&keys_of(&bob, &bob_user, &identity, 0, 5)?).await?;
    for _ in 0..3 {
        let listed = alice.device_keys("bob").await?;
        assert_eq!(listed.devices.len(), 1);
        let certificate =
            DeviceCertificate::from_bytes(&BASE64.decode(listed.devices[0].certificate.as_deref().unwrap_or(""))?)?;
        let bundle = PreKeyBundle::from_bytes(&BASE64.decode(&listed.devices[0].bundle)?)?.verify(
            &certificate,
            bob_user.public(),
            "bob@test",
            0,
        )?;
        assert_eq!(bundle.identity(), identity.public());
        assert!(bundle.bundle().one_time_prekey().is_none());
    }
    assert_eq!(bob.key_count().await?.one_time_pre_keys, 5);
    assert!(matches!(alice.device_keys("nobody").await, Err(ClientError::Api { status: 404, .. })));
    Ok(())
}

#[tokio::test]
async fn the_directory_keeps_one_user_identity_and_serves_it_with_certificates_and_removals() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    let bob_phone = node.user("bob").await?;
    let bob_laptop = node.client().device(DeviceId(1)).login("bob", PASSWORD).await?;
    let bob_user = UserIdentity::generate(&mut rng());
    let laptop_identity = DeviceIdentity::generate(&mut rng());
    bob_phone.publish_keys(&keys(&bob_phone, &bob_user, 0, 1)?).await?;
    bob_laptop.publish_keys(&keys_of(&bob_laptop, &bob_user, &laptop_identity, 10, 1)?).await?;
    let listed = alice.device_keys("bob").await?;
    assert_eq!(listed.user_identity, Some(BASE64.encode(bob_user.public().to_bytes())));
    assert!(listed.devices.iter().all(|d| d.certificate.is_some()), "{listed:?}");
    assert!(listed.removals.is_empty());

    // A device with a certificate by another identity is refused unless it asks to reset.
    let intruder = UserIdentity::generate(&mut rng());
    let mut reset = keys(&bob_laptop, &intruder, 20, 1)?;
    let refused = bob_laptop.publish_keys(&reset).await;
    assert!(
        matches!(refused, Err(ClientError::Api { status: 409, code: ErrorCode::UserIdentityConflict, .. })),
        "{refused:?}"
    );
    assert_eq!(alice.device_keys("bob").await?.user_identity, listed.user_identity, "nothing changed");

    // The phone removes the laptop with a signed removal: the node serves it and the laptop
    // is gone. A removal the node cannot tie to the account's identity is refused.
    let forged = intruder.remove("bob@test", 1, laptop_identity.public())?;
    let refused = bob_phone.publish_removal(&RemovalUpload { removal: BASE64.encode(forged.to_bytes()) }).await;
    assert!(matches!(refused, Err(ClientError::Api { status: 422, .. })), "{refused:?}");
    let removal = bob_user.remove("bob@test", 1, laptop_identity.public())?;
    bob_phone.publish_removal(&RemovalUpload { removal: BASE64.encode(removal.to_bytes()) }).await?;
    let listed = alice.device_keys("bob").await?;
    assert_eq!(listed.devices.iter().map(|d| d.device_id).collect::<Vec<_>>(), [DeviceId(0)]);
    assert_eq!(listed.removals, [BASE64.encode(removal.to_bytes())]);
    let gone = bob_laptop.key_count().await;
    assert!(matches!(gone, Err(ClientError::Api { status: 401, .. })), "the laptop's token is dead: {gone:?}");

    // Starting over: an explicit reset replaces the identity; partners hear of it.
    let mut alice_ws = alice.connect().await?;
    alice.send_message("bob", "hi", None).await?;
    reset = keys(&bob_phone, &intruder, 30, 1)?;
    reset.reset_user_identity = true;
    bob_phone.publish_keys(&reset).await?;
    assert_eq!(alice.device_keys("bob").await?.user_identity, Some(BASE64.encode(intruder.public().to_bytes())));
    frame_where(&mut alice_ws, |f| matches!(f, ServerFrame::KeysChanged { .. }).then_some(())).await?;
    Ok(())
}

#[tokio::test]
async fn past_a_users_prekey_budget_claims_get_the_signed_prekey_only_whoever_claims() -> Result<()> {
    const BUDGET: usize = 3;
    let node = TestNode::start_with(
        Backend::Sqlite,
        &["--key-claim-rate", "0", "--prekey-claim-budget", &BUDGET.to_string(), "--prekey-claim-window", "1h"],
    )
    .await?;
    let bob = node.user("bob").await?;
    bob.publish_keys(&keys(&bob, &UserIdentity::generate(&mut rng()), 0, 10)?).await?;
    // Four fresh accounts, as in the drain that was reported: together they get the budget.
    let mut claimers = Vec::new();
    for n in 0..4 {
        claimers.push(node.user(&format!("drain{n}")).await?);
    }
    let mut with_one_time = 0;
    for round in 0..3 {
        for claimer in &claimers {
            let devices = claim(claimer, "bob").await?;
            assert_eq!(devices.len(), 1, "round {round}: a bundle for bob's device all the same");
            with_one_time += usize::from(devices[0].1.is_some());
        }
    }
    assert_eq!(with_one_time, BUDGET, "one-time prekeys handed out past the budget");
    assert_eq!(bob.key_count().await?.one_time_pre_keys, 10 - BUDGET as u32, "the rest stay for later");
    Ok(())
}
