//! Receiving: the live connection, decrypting, storing and only then acknowledging.

use kith_proto::{ClientFrame, DeviceId, IncomingMessage, ServerFrame, UserId};

use super::{Event, Inbox, Messenger, MessengerError, SYNC_TIMEOUT};
use crate::envelope::{self, Content, Envelope, Payload};
use crate::history::{Body, HistoryEntry};
use crate::profile::Profile;
use crate::sessions::{KeyStore, Notice};

impl Messenger {
    /// Opens the WebSocket: first tops up prekeys and sends queued messages, then connects;
    /// the node marks the end of what was pending ([`Event::CaughtUp`]).
    ///
    /// # Errors
    /// Transport errors (`401` for an expired token), profile errors.
    pub async fn connect(&mut self) -> Result<Inbox, MessengerError> {
        self.replenish_prekeys().await?;
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
        let events = store_incoming(&self.profile, (&me, my_device), &message).await?;
        inbox.conn.send(&ClientFrame::Ack { message_id: message.message_id }).await?;
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

/// Decrypts (or finds undecryptable) and stores a message unless it was handled before; after
/// this returns it may be acknowledged. Plaintext is written first, then the state that says
/// the message is done: a crash in between brings the message again, and it decrypts again
/// from the state saved before it.
async fn store_incoming(
    profile: &Profile,
    (me, my_device): (&UserId, DeviceId),
    message: &IncomingMessage,
) -> Result<Vec<Event>, MessengerError> {
    let mut locked = profile.lock().await?;
    if locked.state.processed.contains(&message.message_id) {
        return Ok(Vec::new());
    }
    let (entry, notices) = open(&mut locked.state.keys, (me, my_device), message);
    if let Body::Undecryptable { reason } = &entry.body {
        tracing::warn!(message = %message.message_id, from = %message.sender_id, %reason, "undecryptable message");
    }
    locked.append_history(entry.peer(me), &entry)?;
    locked.state.processed.insert(message.message_id);
    locked.save()?;
    let mut events: Vec<Event> = notices.into_iter().map(Event::from).collect();
    events.push(Event::Message(entry));
    Ok(events)
}

/// Makes what it can of a message: the decrypted text, plain text marked as unencrypted, or
/// the reason it cannot be read. Changes the key store only when something decrypts.
fn open(keys: &mut KeyStore, me: (&UserId, DeviceId), message: &IncomingMessage) -> (HistoryEntry, Vec<Notice>) {
    let mut entry = HistoryEntry {
        message_id: message.message_id,
        timestamp: message.timestamp,
        from: message.sender_id.clone(),
        from_device: None,
        to: message.receiver_id.clone(),
        body: Body::Undecryptable { reason: String::new() },
    };
    let undecryptable = |reason: String| Body::Undecryptable { reason };
    let (body, notices) = match envelope::decode(&message.message) {
        Ok(Content::Plain(text)) => (Body::Message { text, encrypted: false }, Vec::new()),
        Err(e) => (undecryptable(e.to_string()), Vec::new()),
        Ok(Content::Encrypted(envelope)) => {
            entry.from_device = Some(envelope.from_device);
            open_envelope(keys, me, message, &envelope)
        }
    };
    entry.body = body;
    (entry, notices)
}

fn open_envelope(
    keys: &mut KeyStore,
    (me, my_device): (&UserId, DeviceId),
    message: &IncomingMessage,
    envelope: &Envelope,
) -> (Body, Vec<Notice>) {
    let sender = &message.sender_id;
    // Devices the sender wrote to that this profile does not know: its device lists are old.
    for r in &envelope.to {
        let relevant = &r.user_id == sender || &r.user_id == me;
        if relevant && !(&r.user_id == me && r.device_id == my_device) && !keys.knows(&r.user_id, r.device_id) {
            keys.mark_stale(&r.user_id);
        }
    }
    let Some(body) = envelope.body_for(me, my_device) else {
        return (
            Body::Undecryptable {
                reason: format!(
                    "not encrypted for this device ({my_device}); it may have been added after the message was sent"
                ),
            },
            Vec::new(),
        );
    };
    if sender == me && envelope.from_device == my_device {
        return (Body::Undecryptable { reason: "claims to come from this very device".into() }, Vec::new());
    }
    match keys.decrypt(sender, envelope.from_device, body) {
        Err(e) => (Body::Undecryptable { reason: e.to_string() }, Vec::new()),
        Ok((plaintext, notices)) => {
            let plaintext = kith_crypto::Zeroizing::new(plaintext);
            let body = match Payload::from_bytes(&plaintext) {
                Ok(payload) if payload.to == message.receiver_id => {
                    Body::Message { text: payload.text, encrypted: true }
                }
                Ok(payload) => Body::Undecryptable {
                    reason: format!(
                        "the message was written to {} but delivered as one to {}",
                        payload.to, message.receiver_id
                    ),
                },
                Err(e) => Body::Undecryptable { reason: e.to_string() },
            };
            (body, notices)
        }
    }
}

#[cfg(test)]
mod tests {
    use kith_crypto::PreKeyBundle;
    use kith_proto::{MessageId, Timestamp};
    use rand_core::UnwrapErr;

    use super::*;
    use crate::envelope::Recipient;
    use crate::state::{Account, Processed, State};

    fn user(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    /// A profile on disk for `who`'s device, without a node.
    async fn profile(dir: &std::path::Path, who: &UserId, device: DeviceId) -> Profile {
        let mut rng = UnwrapErr(getrandom::SysRng);
        let mut keys = KeyStore::generate(Timestamp::now(), &mut rng);
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
        let payload = Payload { to: to.clone(), text: text.into() }.to_bytes().unwrap();
        let mut copies = Vec::new();
        for (user_id, device_id) in locked.state.keys.recipients(to, (&me, device)).unwrap() {
            let body =
                locked.state.keys.encrypt(&user_id, device_id, &payload, &mut UnwrapErr(getrandom::SysRng)).unwrap();
            copies.push(Recipient { user_id, device_id, body });
        }
        let message = Envelope { from_device: device, to: copies }.encode().unwrap();
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
        )
        .verify()
        .unwrap();
        let (to_user, to_device) = (to_state.account.user_id.clone(), to_state.account.device_id);
        drop(to_state);
        let mut locked = from.lock().await.unwrap();
        let (me, my_device) = (locked.state.account.user_id.clone(), locked.state.account.device_id);
        locked
            .state
            .keys
            .apply_bundles(
                &to_user,
                (&me, my_device),
                &[(to_device, bundle)],
                Timestamp::now(),
                &mut UnwrapErr(getrandom::SysRng),
            )
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
        assert_eq!(store_incoming(&bob_profile, (&bob, bob_device), &first).await.unwrap().len(), 1);

        // Everything in memory is gone; the profile is read from disk again.
        drop(bob_profile);
        let bob_profile = Profile::new(&bob_dir);
        let second = send(&alice_profile, &bob, "two").await;
        let events = store_incoming(&bob_profile, (&bob, bob_device), &second).await.unwrap();
        assert!(matches!(&events[..], [Event::Message(e)] if e.text() == Some("two")), "{events:?}");

        // A crash after the plaintext was written but before the state was saved: the
        // message comes again and decrypts again, from the state saved before it.
        let third = send(&alice_profile, &bob, "three").await;
        let mut locked = bob_profile.lock().await.unwrap();
        let (entry, _) = open(&mut locked.state.keys, (&bob, bob_device), &third);
        assert_eq!(entry.text(), Some("three"));
        locked.append_history(&alice, &entry).unwrap();
        drop(locked);
        let events = store_incoming(&bob_profile, (&bob, bob_device), &third).await.unwrap();
        assert!(matches!(&events[..], [Event::Message(e)] if e.text() == Some("three")), "{events:?}");
        // A redelivery after it was saved is recognised without decrypting.
        assert!(store_incoming(&bob_profile, (&bob, bob_device), &third).await.unwrap().is_empty());

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
}
