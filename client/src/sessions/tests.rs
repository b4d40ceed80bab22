use kith_crypto::{DeviceIdentity, LinkCode, LinkRequest, LinkResponse, LinkSecret, PreKeyBundle, UserIdentity};
use rand_core::UnwrapErr;

use super::*;

pub(crate) fn rng() -> UnwrapErr<getrandom::SysRng> {
    UnwrapErr(getrandom::SysRng)
}

pub(crate) fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

/// A device's keys, as the directory would list them: bundle (with one one-time prekey if
/// `claim`) and certificate.
pub(crate) fn listed(store: &mut KeyStore, device: DeviceId, claim: bool) -> ListedDevice {
    let one_time = if claim { store.new_one_time_prekeys(1, &mut rng()).unwrap().pop() } else { None };
    let bundle =
        PreKeyBundle::new(store.identity.public().clone(), store.signed_prekeys[0].key.public().clone(), one_time);
    ListedDevice { device_id: device, keys: Ok((bundle, store.certificate.clone())) }
}

/// The listing of one user's devices as the directory would serve it.
pub(crate) fn listing(stores: &mut [(&mut KeyStore, DeviceId)], claim: bool) -> DeviceListing {
    let user_identity = stores.first().map(|(s, _)| *s.user.public());
    let devices = stores.iter_mut().map(|(s, d)| listed(s, *d, claim)).collect();
    DeviceListing { user_identity, devices, removals: Vec::new() }
}

fn now() -> Timestamp {
    Timestamp::now()
}

fn store(who: &UserId, device: u32) -> KeyStore {
    KeyStore::generate(who, DeviceId(device), now(), &mut rng()).unwrap()
}

#[test]
fn two_stores_talk_and_a_changed_user_identity_blocks_sending_until_accepted() {
    let (alice, bob) = (user("alice@t"), user("bob@t"));
    let mut a = store(&alice, 1);
    let mut b = store(&bob, 2);
    let notices =
        a.apply_listing(&bob, (&alice, DeviceId(1)), &listing(&mut [(&mut b, DeviceId(2))], true), now(), &mut rng());
    assert_eq!(notices.unwrap(), vec![], "first contact is quiet");
    assert_eq!(a.recipients(&bob, (&alice, DeviceId(1))).unwrap(), vec![(bob.clone(), DeviceId(2))]);
    let wire = a.encrypt(&bob, DeviceId(2), b"hi", &mut rng()).unwrap();
    let (plain, _) = b.decrypt(&alice, DeviceId(1), &bob, &wire, now()).unwrap();
    assert_eq!(plain.plaintext, b"hi");
    assert_eq!(b.users[&alice].identity, *a.user.public(), "bob pinned alice's identity from her first message");
    assert!(b.one_time_prekeys.is_empty(), "the one-time prekey was used up");
    assert!(matches!(
        b.decrypt(&alice, DeviceId(1), &bob, &wire, now()),
        Err(SessionError::Crypto(CryptoError::DuplicateMessage { .. }))
    ));
    let reply = b.encrypt(&alice, DeviceId(1), b"hello", &mut rng()).unwrap();
    assert_eq!(a.decrypt(&bob, DeviceId(2), &alice, &reply, now()).unwrap().0.plaintext, b"hello");

    // Bob starts over with a new identity on the same device.
    let mut b2 = store(&bob, 2);
    let notices = a
        .apply_listing(&bob, (&alice, DeviceId(1)), &listing(&mut [(&mut b2, DeviceId(2))], true), now(), &mut rng())
        .unwrap();
    assert_eq!(notices, vec![Notice::IdentityChanged(bob.clone())]);
    assert_eq!(a.status(&bob), IdentityStatus::Changed);
    assert_eq!(a.recipients(&bob, (&alice, DeviceId(1))), Err(SessionError::IdentityChanged { user: bob.clone() }));
    // The same news again is not repeated.
    let again = a
        .apply_listing(&bob, (&alice, DeviceId(1)), &listing(&mut [(&mut b2, DeviceId(2))], false), now(), &mut rng())
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
    assert!(a.accept(&bob));
    assert!(!a.accept(&bob), "nothing left to accept");
    assert!(a.devices_of(&bob, &alice).is_empty(), "devices of the old identity are forgotten");
    a.apply_listing(&bob, (&alice, DeviceId(1)), &listing(&mut [(&mut b2, DeviceId(2))], true), now(), &mut rng())
        .unwrap();
    let wire = a.encrypt(&bob, DeviceId(2), b"again", &mut rng()).unwrap();
    assert_eq!(b2.decrypt(&alice, DeviceId(1), &bob, &wire, now()).unwrap().0.plaintext, b"again");
}

#[test]
fn a_device_the_user_identity_did_not_certify_is_never_written_to_and_the_sender_says_why() {
    let (alice, bob) = (user("alice@t"), user("bob@t"));
    let mut a = store(&alice, 1);
    let mut b = store(&bob, 2);
    a.apply_listing(&bob, (&alice, DeviceId(1)), &listing(&mut [(&mut b, DeviceId(2))], true), now(), &mut rng())
        .unwrap();

    // The node adds devices to bob: one with no certificate, one certified by an identity the
    // node made, one carrying bob's real certificate for another device.
    let mut served = listing(&mut [(&mut b, DeviceId(2))], false);
    let ghost = DeviceIdentity::generate(&mut rng());
    let ghost_spk = kith_crypto::SignedPreKey::generate(1, &ghost, &mut rng());
    let ghost_bundle = PreKeyBundle::new(ghost.public().clone(), ghost_spk.public().clone(), None);
    let server_identity = UserIdentity::generate(&mut rng());
    served.devices.push(ListedDevice { device_id: DeviceId(66), keys: Err("it has no certificate".into()) });
    served.devices.push(ListedDevice {
        device_id: DeviceId(77),
        keys: Ok((ghost_bundle.clone(), server_identity.certify("bob@t", 77, ghost.public()).unwrap())),
    });
    served.devices.push(ListedDevice { device_id: DeviceId(88), keys: Ok((ghost_bundle, b.certificate.clone())) });
    let notices = a.apply_listing(&bob, (&alice, DeviceId(1)), &served, now(), &mut rng()).unwrap();
    let reasons: Vec<(u32, String)> = notices
        .iter()
        .map(|n| match n {
            Notice::UntrustedDevice { device, reason, .. } => (device.0, reason.clone()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert_eq!(reasons[0], (66, "it has no certificate".to_owned()));
    assert!(reasons[1].1.contains("signed by another identity"), "{reasons:?}");
    assert!(reasons[2].1.contains("another device id"), "{reasons:?}");
    assert_eq!(a.recipients(&bob, (&alice, DeviceId(1))).unwrap(), vec![(bob.clone(), DeviceId(2))]);

    // A first message from a device certified by another identity is read only with the loud
    // notice, and sending to bob stays blocked until alice accepts that identity.
    let mut mallory = store(&bob, 77);
    let alice_listing = listing(&mut [(&mut a, DeviceId(1))], true);
    mallory.apply_listing(&alice, (&bob, DeviceId(77)), &alice_listing, now(), &mut rng()).unwrap();
    let forged = mallory.encrypt(&alice, DeviceId(1), b"I am bob", &mut rng()).unwrap();
    let (_, notices) = a.decrypt(&bob, DeviceId(77), &alice, &forged, now()).unwrap();
    assert_eq!(notices, vec![Notice::IdentityChanged(bob.clone())]);
    assert_eq!(a.recipients(&bob, (&alice, DeviceId(1))), Err(SessionError::IdentityChanged { user: bob.clone() }));
    // A message whose certificate names another device than the envelope is not read at all.
    let err = a.decrypt(&bob, DeviceId(2), &alice, &forged, now()).unwrap_err();
    assert!(matches!(err, SessionError::UntrustedDevice { .. }), "{err:?}");
}

#[test]
fn a_linked_device_shares_the_user_identity_and_safety_numbers_stay() {
    let (alice, bob) = (user("alice@t"), user("bob@t"));
    let mut phone = store(&alice, 1);
    let mut b = store(&bob, 2);
    // Link the laptop through the documented exchange.
    let secret = LinkSecret::generate(&mut rng());
    let code = LinkCode::parse(&LinkCode { user_id: alice.to_string(), secret }.to_text()).unwrap();
    let laptop_identity = DeviceIdentity::generate(&mut rng());
    let request = LinkRequest::new(&code, 3, &laptop_identity, &mut rng()).unwrap();
    let opened = LinkRequest::open(&code.secret, request.bytes()).unwrap();
    let response = LinkResponse::new(&code.secret, &opened, &phone.user, &mut rng()).unwrap();
    let linked = LinkResponse::open(&code.secret, &request, response.bytes()).unwrap();
    let mut laptop = KeyStore::linked(laptop_identity, linked, now(), &mut rng());
    assert_eq!(laptop.user.public(), phone.user.public());

    // Bob sees both of alice's devices, certified by one identity: one safety number.
    let before = *b.users.get(&alice).map_or(phone.user.public(), |p| &p.identity);
    let alice_devices = listing(&mut [(&mut phone, DeviceId(1)), (&mut laptop, DeviceId(3))], true);
    let notices = b.apply_listing(&alice, (&bob, DeviceId(2)), &alice_devices, now(), &mut rng()).unwrap();
    assert!(notices.is_empty(), "{notices:?}");
    assert_eq!(b.users[&alice].identity, before);
    let mut to = b.recipients(&alice, (&bob, DeviceId(2))).unwrap();
    to.sort();
    assert_eq!(to, vec![(alice.clone(), DeviceId(1)), (alice.clone(), DeviceId(3))]);
    let wire = b.encrypt(&alice, DeviceId(3), b"to the laptop", &mut rng()).unwrap();
    assert_eq!(laptop.decrypt(&bob, DeviceId(2), &alice, &wire, now()).unwrap().0.plaintext, b"to the laptop");
}

#[test]
fn a_signed_removal_stops_writing_to_the_device_for_good() {
    let (alice, bob) = (user("alice@t"), user("bob@t"));
    let mut phone = store(&alice, 1);
    let mut other = store(&alice, 3);
    other.user = UserIdentity::from_bytes(&phone.user.to_bytes()).unwrap();
    other.certificate = phone.user.certify("alice@t", 3, other.identity.public()).unwrap();
    let mut b = store(&bob, 2);
    let both = listing(&mut [(&mut phone, DeviceId(1)), (&mut other, DeviceId(3))], true);
    b.apply_listing(&alice, (&bob, DeviceId(2)), &both, now(), &mut rng()).unwrap();
    assert_eq!(b.recipients(&alice, (&bob, DeviceId(2))).unwrap().len(), 2);

    // Alice's phone removes device 3; the node keeps serving it (with the removal).
    let removal = phone.user.remove("alice@t", 3, other.identity.public()).unwrap();
    let mut served = listing(&mut [(&mut phone, DeviceId(1)), (&mut other, DeviceId(3))], false);
    served.removals.push(removal);
    let notices = b.apply_listing(&alice, (&bob, DeviceId(2)), &served, now(), &mut rng()).unwrap();
    assert_eq!(notices, vec![Notice::DeviceRemoved(alice.clone(), DeviceId(3))]);
    assert_eq!(b.recipients(&alice, (&bob, DeviceId(2))).unwrap(), vec![(alice.clone(), DeviceId(1))]);
    // Served later without the removal, it is still not written to.
    let again = listing(&mut [(&mut phone, DeviceId(1)), (&mut other, DeviceId(3))], false);
    b.apply_listing(&alice, (&bob, DeviceId(2)), &again, now(), &mut rng()).unwrap();
    assert_eq!(b.recipients(&alice, (&bob, DeviceId(2))).unwrap(), vec![(alice.clone(), DeviceId(1))]);
    // And its messages are not read.
    let wire = {
        let bob_listing = listing(&mut [(&mut b, DeviceId(2))], true);
        other.apply_listing(&bob, (&alice, DeviceId(3)), &bob_listing, now(), &mut rng()).unwrap();
        other.encrypt(&bob, DeviceId(2), b"still here", &mut rng()).unwrap()
    };
    assert_eq!(
        b.decrypt(&alice, DeviceId(3), &bob, &wire, now()).unwrap_err(),
        SessionError::RemovedDevice { user: alice.clone(), device: DeviceId(3) }
    );
}

#[test]
fn crossed_session_setups_still_decrypt_both_ways() {
    let (alice, bob) = (user("alice@t"), user("bob@t"));
    let mut a = store(&alice, 1);
    let mut b = store(&bob, 2);
    let for_b = listing(&mut [(&mut b, DeviceId(2))], true);
    let for_a = listing(&mut [(&mut a, DeviceId(1))], true);
    a.apply_listing(&bob, (&alice, DeviceId(1)), &for_b, now(), &mut rng()).unwrap();
    b.apply_listing(&alice, (&bob, DeviceId(2)), &for_a, now(), &mut rng()).unwrap();
    let from_a = a.encrypt(&bob, DeviceId(2), b"a1", &mut rng()).unwrap();
    let from_b = b.encrypt(&alice, DeviceId(1), b"b1", &mut rng()).unwrap();
    assert_eq!(b.decrypt(&alice, DeviceId(1), &bob, &from_a, now()).unwrap().0.plaintext, b"a1");
    assert_eq!(a.decrypt(&bob, DeviceId(2), &alice, &from_b, now()).unwrap().0.plaintext, b"b1");
    for i in 0..3 {
        let m = a.encrypt(&bob, DeviceId(2), format!("a{i}").as_bytes(), &mut rng()).unwrap();
        assert_eq!(b.decrypt(&alice, DeviceId(1), &bob, &m, now()).unwrap().0.plaintext, format!("a{i}").as_bytes());
        let m = b.encrypt(&alice, DeviceId(1), format!("b{i}").as_bytes(), &mut rng()).unwrap();
        assert_eq!(a.decrypt(&bob, DeviceId(2), &alice, &m, now()).unwrap().0.plaintext, format!("b{i}").as_bytes());
    }
}

#[test]
fn a_replayed_prekey_less_first_message_is_refused_after_its_session_was_evicted() {
    let (alice, bob) = (user("alice@t"), user("bob@t"));
    let mut a = store(&alice, 1);
    let mut b = store(&bob, 2);
    // Bob's one-time prekeys ran out (or the node withheld them): the bundle has none.
    a.apply_listing(&bob, (&alice, DeviceId(1)), &listing(&mut [(&mut b, DeviceId(2))], false), now(), &mut rng())
        .unwrap();
    let first = a.encrypt(&bob, DeviceId(2), b"first", &mut rng()).unwrap();
    assert_eq!(b.decrypt(&alice, DeviceId(1), &bob, &first, now()).unwrap().0.plaintext, b"first");
    // Alice sets up MAX_SESSIONS_PER_DEVICE newer sessions: the first one is evicted on bob's side.
    for i in 0..MAX_SESSIONS_PER_DEVICE {
        a.devices.get_mut(&(bob.clone(), DeviceId(2))).unwrap().sessions.clear();
        a.apply_listing(&bob, (&alice, DeviceId(1)), &listing(&mut [(&mut b, DeviceId(2))], false), now(), &mut rng())
            .unwrap();
        let wire = a.encrypt(&bob, DeviceId(2), format!("newer {i}").as_bytes(), &mut rng()).unwrap();
        b.decrypt(&alice, DeviceId(1), &bob, &wire, now()).unwrap();
    }
    let sessions = &b.devices[&(alice.clone(), DeviceId(1))].sessions;
    assert_eq!(sessions.len(), MAX_SESSIONS_PER_DEVICE);
    let kith_crypto::MessageInfo::PreKey(info) = kith_crypto::inspect(&first).unwrap() else { panic!() };
    assert!(sessions.iter().all(|s| !s.matches_prekey_message(&info)), "the first session is gone");
    // The node delivers the first message again: refused, and nothing changes.
    let before = b.replays.clone();
    let err = b.decrypt(&alice, DeviceId(1), &bob, &first, now()).unwrap_err();
    assert_eq!(err, SessionError::Crypto(CryptoError::ReplayedFirstMessage { signed_prekey_id: 1 }));
    assert_eq!(b.replays, before);
    assert_eq!(b.devices[&(alice.clone(), DeviceId(1))].sessions.len(), MAX_SESSIONS_PER_DEVICE);
}

#[test]
fn signed_prekeys_rotate_and_old_ones_expire_with_their_replay_records() {
    let t0 = Timestamp::from_millis(1_000_000_000_000);
    let mut s = KeyStore::generate(&user("a@t"), DeviceId(1), t0, &mut rng()).unwrap();
    assert!(!s.rotate_signed_prekey_if_due(t0, &mut rng()));
    let t1 = Timestamp::from_millis(t0.as_millis() + SIGNED_PREKEY_ROTATION_MS);
    assert!(s.rotate_signed_prekey_if_due(t1, &mut rng()));
    assert_eq!(s.signed_prekeys.iter().map(|r| r.key.id()).collect::<Vec<_>>(), vec![2, 1]);
    let t2 = Timestamp::from_millis(t1.as_millis() + SIGNED_PREKEY_GRACE_MS + 1);
    assert!(s.rotate_signed_prekey_if_due(t2, &mut rng()));
    assert_eq!(s.signed_prekeys.iter().map(|r| r.key.id()).collect::<Vec<_>>(), vec![3, 2]);
}

#[test]
fn a_session_that_cannot_decrypt_is_marked_once_for_a_reset() {
    let (alice, bob) = (user("alice@t"), user("bob@t"));
    let mut a = store(&alice, 1);
    let mut b = store(&bob, 2);
    a.apply_listing(&bob, (&alice, DeviceId(1)), &listing(&mut [(&mut b, DeviceId(2))], true), now(), &mut rng())
        .unwrap();
    let first = a.encrypt(&bob, DeviceId(2), b"1", &mut rng()).unwrap();
    b.decrypt(&alice, DeviceId(1), &bob, &first, now()).unwrap();
    let reply = b.encrypt(&alice, DeviceId(1), b"r", &mut rng()).unwrap();
    a.decrypt(&bob, DeviceId(2), &alice, &reply, now()).unwrap();
    // Bob loses his sessions with alice (say, a restored backup); her next message cannot open.
    b.devices.get_mut(&(alice.clone(), DeviceId(1))).unwrap().sessions.clear();
    let lost = a.encrypt(&bob, DeviceId(2), b"2", &mut rng()).unwrap();
    let err = b.decrypt(&alice, DeviceId(1), &bob, &lost, now()).unwrap_err();
    assert!(err.is_stuck(), "{err:?}");
    assert!(b.mark_reset(&alice, DeviceId(1)), "the first failure is news");
    assert!(!b.mark_reset(&alice, DeviceId(1)), "later ones are not");
    assert_eq!(b.resets_to_send(), vec![(alice.clone(), DeviceId(1))]);
    // A refresh starts a new session with that device even though it has one.
    b.apply_listing(&alice, (&bob, DeviceId(2)), &listing(&mut [(&mut a, DeviceId(1))], true), now(), &mut rng())
        .unwrap();
    b.reset_sent(&alice, DeviceId(1));
    assert!(b.resets_to_send().is_empty());
    let announce = b.encrypt(&alice, DeviceId(1), b"reset", &mut rng()).unwrap();
    assert!(kith_crypto::is_prekey_message(&announce));
    assert_eq!(a.decrypt(&bob, DeviceId(2), &alice, &announce, now()).unwrap().0.plaintext, b"reset");
    // Alice now writes in the new session, which bob can read: healed.
    let healed = a.encrypt(&bob, DeviceId(2), b"3", &mut rng()).unwrap();
    assert_eq!(b.decrypt(&alice, DeviceId(1), &bob, &healed, now()).unwrap().0.plaintext, b"3");
    assert!(b.resets.is_empty());
    // Tampering is not a reason to reset.
    let mut tampered = a.encrypt(&bob, DeviceId(2), b"4", &mut rng()).unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(!b.decrypt(&alice, DeviceId(1), &bob, &tampered, now()).unwrap_err().is_stuck());
}
