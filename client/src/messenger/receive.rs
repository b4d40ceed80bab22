//! Receiving: the live connection, decrypting, storing and only then acknowledging; sessions
//! that cannot decrypt any more are replaced (the user sees one line, not silence); link
//! messages go to the linking flow.

use kith_proto::{ClientFrame, DeviceId, IncomingMessage, ServerFrame, Timestamp, UserId};

use super::{Event, Inbox, Messenger, MessengerError, SYNC_TIMEOUT};
use crate::envelope::{self, Content, Envelope, Payload, PayloadBody};
use crate::history::{Body, HistoryEntry};
use crate::profile::Profile;
use crate::sessions::{KeyStore, Notice};

impl Messenger {
    /// Opens the WebSocket: first tops up prekeys, drops skipped keys that are too old,
    /// announces new sessions still due and sends queued messages, then connects; the node
    /// marks the end of what was pending ([`Event::CaughtUp`]).
    ///
    /// # Errors
    /// Transport errors (`401` for an expired token), profile errors.
    pub async fn connect(&mut self) -> Result<Inbox, MessengerError> {
        self.replenish_prekeys().await?;
        {
            let mut locked = self.profile.lock().await?;
            let expired = locked.state.keys.expire_skipped_keys(Timestamp::now());
            if expired > 0 {
                tracing::info!(expired, "dropped skipped message keys that were too old");
                locked.save()?;
            }
        }
        self.send_resets().await?;
        self.flush_outbox().await?;
        let conn = self.api.connect().await?;
        Ok(Inbox { conn, synced: false })
    }

    /// Waits for the next frame and handles it.
    ///
    /// # Errors
    /// As [`Inbox::next_frame`] and [`Messenger::handle`].
    pub async fn next_events(&mut self, inbox: &mut Inbox) -> Result<Vec<Event>, MessengerError> {
        let frame = inbox.next_frame().await?;
        self.handle(inbox, frame).await
    }

    /// Handles one frame from the node: a message is decrypted (or found undecryptable),
    /// stored, and then acknowledged; `keys.changed` refreshes that user's devices.
    ///
    /// # Errors
    /// Profile errors (the message is then not acknowledged, and comes again), transport
    /// errors while acknowledging.
    pub async fn handle(&mut self, inbox: &mut Inbox, frame: ServerFrame) -> Result<Vec<Event>, MessengerError> {
        match frame {
            ServerFrame::Message(message) => self.receive(inbox, message).await,
            ServerFrame::KeysChanged { user_id, device_id } => {
                tracing::info!(user = %user_id, device = %device_id, "keys changed");
                match self.refresh(&user_id).await {
                    Ok(events) => Ok(events),
                    Err(e) => {
                        tracing::warn!(user = %user_id, error = %e, "could not fetch changed keys; will retry before sending");
                        let mut locked = self.profile.lock().await?;
                        locked.state.keys.mark_stale(&user_id);
                        locked.save()?;
                        Ok(Vec::new())
                    }
                }
            }
            ServerFrame::Synced => {
                inbox.synced = true;
                Ok(vec![Event::CaughtUp])
            }
            ServerFrame::Receipt { message_id, status, .. } => Ok(vec![Event::Receipt { message_id, status }]),
            ServerFrame::Error { code, message, .. } => Ok(vec![Event::ServerError { code, message }]),
            ServerFrame::Presence(_) | ServerFrame::Sent { .. } => Ok(Vec::new()),
        }
    }

    async fn receive(&mut self, inbox: &mut Inbox, message: IncomingMessage) -> Result<Vec<Event>, MessengerError> {
        let (me, my_device) = self.me();
        let (events, reset) = store_incoming(&self.profile, (&me, my_device), &message).await?;
        inbox.conn.send(&ClientFrame::Ack { message_id: message.message_id }).await?;
        if reset {
            self.send_resets().await?;
        }
        Ok(events)
    }

    /// Receives everything pending (decrypting, storing and acknowledging it) and returns what
    /// happened; for commands that do not stay connected.
    ///
    /// # Errors
    /// As [`Messenger::connect`] and [`Messenger::handle`]; [`MessengerError::Timeout`].
    pub async fn sync(&mut self) -> Result<Vec<Event>, MessengerError> {
        let mut inbox = self.connect().await?;
        let mut events = Vec::new();
        while !inbox.synced {
            let frame = tokio::time::timeout(SYNC_TIMEOUT, inbox.next_frame())
                .await
                .map_err(|_| MessengerError::Timeout(SYNC_TIMEOUT))??;
            events.extend(self.handle(&mut inbox, frame).await?);
        }
        // The node takes each ack into its store queue before it reads the next frame, so the
        // acks sent above are recorded even though the connection closes now.
        if let Err(e) = inbox.close().await {
            tracing::debug!(error = %e, "closing after sync");
        }
        Ok(events)
    }

    /// The stored history of the conversation with `peer` (without fetching anything).
    ///
    /// # Errors
    /// Profile errors.
    pub fn history(&self, peer: &UserId) -> Result<Vec<HistoryEntry>, MessengerError> {
        Ok(self.profile.history(peer)?)
    }
}

/// What a message turned out to be, for storing.
#[derive(Debug)]
enum Opened {
    /// Something to keep in the history and show: a text, a plain message, or why it could
    /// not be read.
    Entry(HistoryEntry),
    /// Nothing to show: a control message, a control envelope for another device, or another
    /// failure of a session already being replaced (the first one was shown).
    Quiet,
    /// A link message.
    Link(Vec<u8>),
}

/// Decrypts (or finds undecryptable) and stores a message unless it was handled before; after
/// this returns it may be acknowledged. Plaintext is written first, then the state that says
/// the message is done: a crash in between brings the message again, and it decrypts again
/// from the state saved before it. Also says whether a new session must be announced.
async fn store_incoming(
    profile: &Profile,
    (me, my_device): (&UserId, DeviceId),
    message: &IncomingMessage,
) -> Result<(Vec<Event>, bool), MessengerError> {
    let mut locked = profile.lock().await?;
    if locked.state.processed.contains(&message.message_id) {
        return Ok((Vec::new(), false));
    }
    let (opened, notices) = open(&mut locked.state.keys, (me, my_device), message, Timestamp::now());
    let mut events: Vec<Event> = notices.into_iter().map(Event::from).collect();
    match opened {
        Opened::Entry(entry) => {
            if let Body::Undecryptable { reason } = &entry.body {
                tracing::warn!(message = %message.message_id, from = %message.sender_id, %reason, "undecryptable message");
            }
            locked.append_history(entry.peer(me), &entry)?;
            events.push(Event::Message(entry));
        }
        Opened::Quiet => tracing::debug!(message = %message.message_id, "nothing to show"),
        Opened::Link(bytes) => events.push(Event::LinkMessage { bytes }),
    }
    let reset = !locked.state.keys.resets_to_send().is_empty();
    locked.state.processed.insert(message.message_id);
    locked.save()?;
    Ok((events, reset))
}

/// Makes what it can of a message: the decrypted text, plain text marked as unencrypted, the
/// reason it cannot be read, nothing (control), or a link message. Changes the key store only
/// when something decrypts, or to note a session that must be replaced.
fn open(
    keys: &mut KeyStore,
    me: (&UserId, DeviceId),
    message: &IncomingMessage,
    now: Timestamp,
) -> (Opened, Vec<Notice>) {
    let mut entry = HistoryEntry {
        message_id: message.message_id,
        timestamp: message.timestamp,
        from: message.sender_id.clone(),
        from_device: None,
        to: message.receiver_id.clone(),
        body: Body::Undecryptable { reason: String::new() },
    };
    let undecryptable = |reason: String| Some(Body::Undecryptable { reason });
    let (body, notices) = match envelope::decode(&message.message) {
        Ok(Content::Plain(text)) => (Some(Body::Message { text, encrypted: false }), Vec::new()),
        Ok(Content::Link(bytes)) => {
            // Only another device of this very account may talk to us about linking.
            return if &message.sender_id == me.0 && &message.receiver_id == me.0 {
                (Opened::Link(bytes), Vec::new())
            } else {
                (Opened::Quiet, Vec::new())
            };
        }
        Err(e) => (undecryptable(e.to_string()), Vec::new()),
        Ok(Content::Encrypted(envelope)) => {
            entry.from_device = Some(envelope.from_device);
            open_envelope(keys, me, message, &envelope, now)
        }
    };
    match body {
        Some(body) => {
            entry.body = body;
            (Opened::Entry(entry), notices)
        }
        None => (Opened::Quiet, notices),
    }
}

fn open_envelope(
    keys: &mut KeyStore,
    (me, my_device): (&UserId, DeviceId),
    message: &IncomingMessage,
    envelope: &Envelope,
    now: Timestamp,
) -> (Option<Body>, Vec<Notice>) {
    let sender = &message.sender_id;
    // Devices the sender wrote to that this profile does not know: its device lists are old.
    for r in &envelope.to {
        let relevant = &r.user_id == sender || &r.user_id == me;
        if relevant && !(&r.user_id == me && r.device_id == my_device) && !keys.knows(&r.user_id, r.device_id) {
            keys.mark_stale(&r.user_id);
        }
    }
    let Some(body) = envelope.body_for(me, my_device) else {
        if envelope.control {
            return (None, Vec::new());
        }
        let reason =
            format!("not encrypted for this device ({my_device}); it may have been added after the message was sent");
        return (Some(Body::Undecryptable { reason }), Vec::new());
    };
    if sender == me && envelope.from_device == my_device {
        return (Some(Body::Undecryptable { reason: "claims to come from this very device".into() }), Vec::new());
    }
    match keys.decrypt(sender, envelope.from_device, me, body, now) {
        Err(e) if e.is_stuck() => {
            // The session cannot decrypt anything from that device any more: a new one is set
            // up and announced. The user hears of it once.
            if keys.mark_reset(sender, envelope.from_device) {
                let reason = format!("{e}; a new session with that device is being set up");
                (Some(Body::Undecryptable { reason }), Vec::new())
            } else {
                tracing::info!(%sender, device = %envelope.from_device, error = %e, "another message of a session being replaced");
                (None, Vec::new())
            }
        }
        Err(e) => (Some(Body::Undecryptable { reason: e.to_string() }), Vec::new()),
        Ok((decrypted, notices)) => {
            let plaintext = kith_crypto::Zeroizing::new(decrypted.plaintext);
            let body = match Payload::from_bytes(&plaintext) {
                Ok(payload) if payload.to != message.receiver_id => Some(Body::Undecryptable {
                    reason: format!(
                        "the message was written to {} but delivered as one to {}",
                        payload.to, message.receiver_id
                    ),
                }),
                Ok(Payload { body: PayloadBody::Text(text), .. }) => Some(Body::Message { text, encrypted: true }),
                Ok(Payload { body: PayloadBody::Control(control), .. }) => {
                    tracing::info!(%sender, device = %envelope.from_device, ?control, "control message");
                    None
                }
                Err(e) => Some(Body::Undecryptable { reason: e.to_string() }),
            };
            (body, notices)
        }
    }
}

#[cfg(test)]
mod tests {
    use kith_crypto::PreKeyBundle;
    use kith_proto::MessageId;
    use rand_core::UnwrapErr;

    use super::*;
    use crate::envelope::Recipient;
    use crate::sessions::{DeviceListing, ListedDevice};
    use crate::state::{Account, Processed, State};

    fn user(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    /// A profile on disk for `who`'s device, without a node.
    async fn profile(dir: &std::path::Path, who: &UserId, device: DeviceId) -> Profile {
        let mut rng = UnwrapErr(getrandom::SysRng);
        let mut keys = KeyStore::generate(who, device, Timestamp::now(), &mut rng).unwrap();
        keys.new_one_time_prekeys(5, &mut rng).unwrap();
        let state = State {
            account: Account {
                server: "http://127.0.0.1:1".into(),
                user_id: who.clone(),
                device_id: device,
                token: "t".into(),
            },
            keys,
            processed: Processed::default(),
            outbox: Vec::new(),
            keys_published: true,
            reset_identity: false,
        };
        let profile = Profile::new(dir);
        profile.create(&state).await.unwrap();
        profile
    }

    /// Encrypts `text` from the profile's device to `to`'s devices, saving first, and returns
    /// the message as the node would deliver it.
    async fn send(from: &Profile, to: &UserId, text: &str) -> IncomingMessage {
        let mut locked = from.lock().await.unwrap();
        let me = locked.state.account.user_id.clone();
        let device = locked.state.account.device_id;
        let payload = Payload::text(to, text).to_bytes().unwrap();
        let mut copies = Vec::new();
        for (user_id, device_id) in locked.state.keys.recipients(to, (&me, device)).unwrap() {
            let body =
                locked.state.keys.encrypt(&user_id, device_id, &payload, &mut UnwrapErr(getrandom::SysRng)).unwrap();
            copies.push(Recipient { user_id, device_id, body });
        }
        let message = Envelope { from_device: device, to: copies, control: false }.encode().unwrap();
        locked.save().unwrap();
        IncomingMessage {
            message_id: MessageId::now(),
            sender_id: me,
            receiver_id: to.clone(),
            message,
            timestamp: Timestamp::now(),
        }
    }

    /// Gives `from` a session with `to`'s device, from `to`'s bundle as the node would serve
    /// it (claiming one of its one-time prekeys, or none).
    async fn start_session(from: &Profile, to: &Profile, claim_one_time: bool) {
        let to_state = to.read().unwrap();
        let one_time = claim_one_time
            .then(|| to_state.keys.one_time_prekeys.values().next().map(|k| k.public().clone()))
            .flatten();
        let bundle = PreKeyBundle::new(
            to_state.keys.identity.public().clone(),
            to_state.keys.signed_prekeys[0].key.public().clone(),
            one_time,
        );
        let listing = DeviceListing {
            user_identity: Some(*to_state.keys.user.public()),
            devices: vec![ListedDevice {
                device_id: to_state.account.device_id,
                keys: Ok((bundle, to_state.keys.certificate.clone())),
            }],
            removals: Vec::new(),
        };
        let to_user = to_state.account.user_id.clone();
        drop(to_state);
        let mut locked = from.lock().await.unwrap();
        let (me, my_device) = (locked.state.account.user_id.clone(), locked.state.account.device_id);
        locked
            .state
            .keys
            .apply_listing(&to_user, (&me, my_device), &listing, Timestamp::now(), &mut UnwrapErr(getrandom::SysRng))
            .unwrap();
        locked.save().unwrap();
    }

    fn texts(profile: &Profile, peer: &UserId) -> Vec<String> {
        profile.history(peer).unwrap().iter().map(|e| e.text().unwrap_or("<undecryptable>").to_owned()).collect()
    }

    #[tokio::test]
    async fn a_reloaded_profile_decrypts_the_next_message_and_a_crash_before_saving_loses_nothing() {
        let temp = tempfile::tempdir().unwrap();
        let (alice, bob) = (user("alice@t"), user("bob@t"));
        let (alice_device, bob_device) = (DeviceId(1), DeviceId(2));
        let alice_profile = profile(&temp.path().join("alice"), &alice, alice_device).await;
        let bob_dir = temp.path().join("bob");
        let bob_profile = profile(&bob_dir, &bob, bob_device).await;

        // Alice claims bob's bundle (as from the node) and starts a session.
        start_session(&alice_profile, &bob_profile, true).await;

        let first = send(&alice_profile, &bob, "one").await;
        assert_eq!(store_incoming(&bob_profile, (&bob, bob_device), &first).await.unwrap().0.len(), 1);

        // Everything in memory is gone; the profile is read from disk again.
        drop(bob_profile);
        let bob_profile = Profile::new(&bob_dir);
        let second = send(&alice_profile, &bob, "two").await;
        let (events, _) = store_incoming(&bob_profile, (&bob, bob_device), &second).await.unwrap();
        assert!(matches!(&events[..], [Event::Message(e)] if e.text() == Some("two")), "{events:?}");

        // A crash after the plaintext was written but before the state was saved: the
        // message comes again and decrypts again, from the state saved before it.
        let third = send(&alice_profile, &bob, "three").await;
        let mut locked = bob_profile.lock().await.unwrap();
        let (Opened::Entry(entry), _) = open(&mut locked.state.keys, (&bob, bob_device), &third, Timestamp::now())
        else {
            panic!("a message")
        };
        assert_eq!(entry.text(), Some("three"));
        locked.append_history(&alice, &entry).unwrap();
        drop(locked);
        let (events, _) = store_incoming(&bob_profile, (&bob, bob_device), &third).await.unwrap();
        assert!(matches!(&events[..], [Event::Message(e)] if e.text() == Some("three")), "{events:?}");
        // A redelivery after it was saved is recognised without decrypting.
        assert!(store_incoming(&bob_profile, (&bob, bob_device), &third).await.unwrap().0.is_empty());

        let fourth = send(&alice_profile, &bob, "four").await;
        store_incoming(&bob_profile, (&bob, bob_device), &fourth).await.unwrap();
        assert_eq!(texts(&bob_profile, &alice), ["one", "two", "three", "four"]);
    }

    #[tokio::test]
    async fn tampered_plain_and_misaddressed_messages_are_reported_not_fatal() {
        let temp = tempfile::tempdir().unwrap();
        let (alice, bob, carol) = (user("alice@t"), user("bob@t"), user("carol@t"));
        let alice_profile = profile(&temp.path().join("alice"), &alice, DeviceId(1)).await;
        let bob_profile = profile(&temp.path().join("bob"), &bob, DeviceId(2)).await;
        start_session(&alice_profile, &bob_profile, false).await;
        let me = (&bob, DeviceId(2));

        let mut tampered = send(&alice_profile, &bob, "tampered").await;
        let Ok(Content::Encrypted(mut envelope)) = envelope::decode(&tampered.message) else { panic!("an envelope") };
        let last = envelope.to[0].body.len() - 1;
        envelope.to[0].body[last] ^= 1;
        tampered.message = envelope.encode().unwrap();
        let plain =
            IncomingMessage { message: "from an old client".into(), message_id: MessageId::now(), ..tampered.clone() };
        let mut misaddressed = send(&alice_profile, &bob, "for bob").await;
        misaddressed.receiver_id = carol.clone();
        misaddressed.message_id = MessageId::now();
        let fine = send(&alice_profile, &bob, "still fine").await;

        for message in [&tampered, &plain, &misaddressed, &fine] {
            store_incoming(&bob_profile, me, message).await.unwrap();
        }
        let history = bob_profile.history(&alice).unwrap();
        assert!(
            matches!(&history[0].body, Body::Undecryptable { reason } if reason.contains("authentication")),
            "{history:?}"
        );
        assert_eq!(history[1].body, Body::Message { text: "from an old client".into(), encrypted: false });
        // The misaddressed one is filed under its sender and says what is wrong.
        assert!(
            matches!(&history[2].body, Body::Undecryptable { reason } if reason.contains("written to bob@t")),
            "{history:?}"
        );
        assert_eq!(history[3].text(), Some("still fine"));
    }

    #[tokio::test]
    async fn a_session_that_cannot_decrypt_is_reported_once_and_replaced() {
        let temp = tempfile::tempdir().unwrap();
        let (alice, bob) = (user("alice@t"), user("bob@t"));
        let alice_profile = profile(&temp.path().join("alice"), &alice, DeviceId(1)).await;
        let bob_profile = profile(&temp.path().join("bob"), &bob, DeviceId(2)).await;
        start_session(&alice_profile, &bob_profile, true).await;
        let me = (&bob, DeviceId(2));
        store_incoming(&bob_profile, me, &send(&alice_profile, &bob, "before").await).await.unwrap();

        // Bob's sessions with alice are gone (a restored backup): her messages cannot open.
        let mut locked = bob_profile.lock().await.unwrap();
        locked.state.keys.devices.clear();
        locked.save().unwrap();
        drop(locked);
        let mut all = Vec::new();
        for text in ["lost 1", "lost 2", "lost 3"] {
            let (events, reset) =
                store_incoming(&bob_profile, me, &send(&alice_profile, &bob, text).await).await.unwrap();
            assert!(reset, "a new session is due");
            all.extend(events);
        }
        // One line, not three, and not silence.
        let history = bob_profile.history(&alice).unwrap();
        assert_eq!(history.len(), 2, "{history:?}");
        assert!(
            matches!(&history[1].body, Body::Undecryptable { reason } if reason.contains("a new session with that device is being set up")),
            "{history:?}"
        );
        assert_eq!(all.iter().filter(|e| matches!(e, Event::Message(_))).count(), 1, "{all:?}");

        // Bob starts the new session and announces it; alice takes it in without showing it.
        start_session(&bob_profile, &alice_profile, true).await;
        let announce = {
            let mut locked = bob_profile.lock().await.unwrap();
            let payload =
                Payload { to: alice.clone(), body: PayloadBody::Control(crate::envelope::Control::SessionReset) };
            let body = locked
                .state
                .keys
                .encrypt(&alice, DeviceId(1), &payload.to_bytes().unwrap(), &mut UnwrapErr(getrandom::SysRng))
                .unwrap();
            locked.state.keys.reset_sent(&alice, DeviceId(1));
            locked.save().unwrap();
            let envelope = Envelope {
                from_device: DeviceId(2),
                to: vec![Recipient { user_id: alice.clone(), device_id: DeviceId(1), body }],
                control: true,
            };
            IncomingMessage {
                message_id: MessageId::now(),
                sender_id: bob.clone(),
                receiver_id: alice.clone(),
                message: envelope.encode().unwrap(),
                timestamp: Timestamp::now(),
            }
        };
        let (events, _) = store_incoming(&alice_profile, (&alice, DeviceId(1)), &announce).await.unwrap();
        assert!(events.is_empty(), "{events:?}");
        assert!(alice_profile.history(&bob).unwrap().is_empty(), "control messages are not shown");
        // Alice's next message is in the new session: it decrypts, and the reset is over.
        let (events, reset) =
            store_incoming(&bob_profile, me, &send(&alice_profile, &bob, "healed").await).await.unwrap();
        assert!(!reset);
        assert!(matches!(&events[..], [Event::Message(e)] if e.text() == Some("healed")), "{events:?}");
        assert!(bob_profile.read().unwrap().keys.resets.is_empty());
    }
}
