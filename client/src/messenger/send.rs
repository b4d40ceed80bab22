//! Sending: encrypting for every reading device, saving, then handing the message to the node;
//! the outbox holds what the node has not confirmed yet. Also the control message that
//! announces a new session to a device whose session could not decrypt.

use kith_proto::{DeviceId, ErrorCode, UserId};
use rand_core::UnwrapErr;

use super::{Messenger, MessengerError, SentMessage, not_found};
use crate::ClientError;
use crate::envelope::{Control, Envelope, Payload, PayloadBody, Recipient};
use crate::history::{Body, HistoryEntry};
use crate::state::Outgoing;

fn client_message_id() -> String {
    let mut bytes = [0u8; 16];
    rand_core::Rng::fill_bytes(&mut UnwrapErr(getrandom::SysRng), &mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A refusal that sending again will not change (the message is dropped from the outbox).
fn permanent(e: &ClientError) -> bool {
    matches!(e, ClientError::Api { status: 400 | 403 | 404 | 413, .. })
}

impl Messenger {
    /// Encrypts `text` for every device of `to` and every other device of this user, saves
    /// the sessions, then sends it. Messages queued by an earlier failure go first.
    ///
    /// # Errors
    /// [`MessengerError::UnknownUser`]; [`crate::SessionError::IdentityChanged`] while `to`'s
    /// identity changed and was not accepted (see [`Messenger::trust`]);
    /// [`crate::SessionError::NoDevices`] when `to` has no certified device;
    /// [`crate::EnvelopeError::TooLarge`];
    /// [`MessengerError::Queued`] when the node could not be reached after the message was
    /// saved; transport and profile errors.
    pub async fn send(&mut self, to: &UserId, text: &str) -> Result<SentMessage, MessengerError> {
        // An unreachable node fails this message before it is encrypted.
        self.flush_outbox().await.map_err(|e| match e {
            MessengerError::Queued(e) => MessengerError::Client(e),
            other => other,
        })?;
        let (me, my_device) = self.me();
        let events = self.refresh_if_needed(&[to, &me]).await?;
        let outgoing = {
            let mut locked = self.profile.lock().await?;
            let keys = &mut locked.state.keys;
            let recipients = keys.recipients(to, (&me, my_device))?;
            let payload = kith_crypto::Zeroizing::new(Payload::text(to, text).to_bytes()?);
            let mut copies = Vec::with_capacity(recipients.len());
            for (user_id, device_id) in recipients {
                let body = keys.encrypt(&user_id, device_id, &payload, &mut self.rng)?;
                copies.push(Recipient { user_id, device_id, body });
            }
            // Dropping `locked` unsaved on an error discards the advanced sessions; nothing
            // they encrypted has left this process.
            let message = Envelope { from_device: my_device, to: copies, control: false }.encode()?;
            let outgoing =
                Outgoing { client_message_id: client_message_id(), to: to.clone(), text: text.to_owned(), message };
            locked.state.outbox.push(outgoing.clone());
            locked.save()?;
            outgoing
        };
        let entry = self.deliver(outgoing).await?;
        Ok(SentMessage { entry, events })
    }

    /// Sends `texts` to `to`, in order, encrypting all of them and saving the sessions once
    /// before any leaves, and recording them in the history once the node has them all (for
    /// pasted text and bulk sends, where one save per message would dominate). Returns them as
    /// stored.
    ///
    /// # Errors
    /// As [`Messenger::send`]; on [`MessengerError::Queued`] the ones the node confirmed are
    /// recorded and the rest stay in the outbox.
    pub async fn send_all(&mut self, to: &UserId, texts: &[String]) -> Result<Vec<HistoryEntry>, MessengerError> {
        self.flush_outbox().await.map_err(|e| match e {
            MessengerError::Queued(e) => MessengerError::Client(e),
            other => other,
        })?;
        let (me, my_device) = self.me();
        self.refresh_if_needed(&[to, &me]).await?;
        let queued = {
            let mut locked = self.profile.lock().await?;
            let keys = &mut locked.state.keys;
            let recipients = keys.recipients(to, (&me, my_device))?;
            let mut queued = Vec::with_capacity(texts.len());
            for text in texts {
                let payload = kith_crypto::Zeroizing::new(Payload::text(to, text).to_bytes()?);
                let mut copies = Vec::with_capacity(recipients.len());
                for (user_id, device_id) in &recipients {
                    let body = keys.encrypt(user_id, *device_id, &payload, &mut self.rng)?;
                    copies.push(Recipient { user_id: user_id.clone(), device_id: *device_id, body });
                }
                let message = Envelope { from_device: my_device, to: copies, control: false }.encode()?;
                queued.push(Outgoing {
                    client_message_id: client_message_id(),
                    to: to.clone(),
                    text: text.clone(),
                    message,
                });
            }
            locked.state.outbox.extend(queued.iter().cloned());
            locked.save()?;
            queued
        };
        let mut confirmed = Vec::with_capacity(queued.len());
        let mut refused = Vec::new();
        let mut stopped = None;
        for outgoing in &queued {
            match self.api.send_message(to.as_str(), &outgoing.message, Some(&outgoing.client_message_id)).await {
                Ok((_, response)) => confirmed.push((
                    outgoing.client_message_id.clone(),
                    HistoryEntry {
                        message_id: response.message_id,
                        timestamp: response.timestamp,
                        from: me.clone(),
                        from_device: Some(my_device),
                        to: to.clone(),
                        body: Body::Message { text: outgoing.text.clone(), encrypted: true },
                    },
                )),
                Err(e) if permanent(&e) => {
                    tracing::warn!(error = %e, "a message was refused; dropped");
                    refused.push(outgoing.client_message_id.clone());
                }
                Err(e) => {
                    stopped = Some(e);
                    break;
                }
            }
        }
        let mut locked = self.profile.lock().await?;
        let entries: Vec<HistoryEntry> = confirmed.iter().map(|(_, entry)| entry.clone()).collect();
        locked.append_history_all(to, &entries)?;
        for entry in &entries {
            locked.state.processed.insert(entry.message_id);
        }
        locked.state.outbox.retain(|o| {
            !confirmed.iter().any(|(id, _)| *id == o.client_message_id) && !refused.contains(&o.client_message_id)
        });
        locked.save()?;
        match stopped {
            Some(e) => Err(MessengerError::Queued(e)),
            None => Ok(entries),
        }
    }

    /// Sends what is in the outbox (messages saved but not confirmed by the node); returns how
    /// many went out. Ones the node refuses for good are dropped (and logged).
    ///
    /// # Errors
    /// [`MessengerError::Queued`] when the node cannot be reached; profile errors.
    pub async fn flush_outbox(&mut self) -> Result<usize, MessengerError> {
        let queued = self.profile.read()?.outbox;
        let mut sent = 0;
        for outgoing in queued {
            match self.deliver(outgoing).await {
                Ok(_) => sent += 1,
                Err(e @ (MessengerError::Queued(_) | MessengerError::Profile(_))) => return Err(e),
                Err(e) => tracing::warn!(error = %e, "a queued message was refused; dropped"),
            }
        }
        Ok(sent)
    }

    /// Sends a saved message and records it in the history once the node has it.
    async fn deliver(&mut self, outgoing: Outgoing) -> Result<HistoryEntry, MessengerError> {
        let result =
            self.api.send_message(outgoing.to.as_str(), &outgoing.message, Some(&outgoing.client_message_id)).await;
        let (me, my_device) = self.me();
        let mut locked = self.profile.lock().await?;
        let done = |locked: &mut crate::profile::Locked| {
            locked.state.outbox.retain(|o| o.client_message_id != outgoing.client_message_id);
        };
        match result {
            Ok((_, response)) => {
                let entry = HistoryEntry {
                    message_id: response.message_id,
                    timestamp: response.timestamp,
                    from: me,
                    from_device: Some(my_device),
                    to: outgoing.to.clone(),
                    body: Body::Message { text: outgoing.text.clone(), encrypted: true },
                };
                locked.append_history(&outgoing.to, &entry)?;
                locked.state.processed.insert(response.message_id);
                done(&mut locked);
                locked.save()?;
                Ok(entry)
            }
            Err(e) if permanent(&e) => {
                done(&mut locked);
                locked.save()?;
                if not_found(&e) && matches!(&e, ClientError::Api { code: ErrorCode::NotFound, .. }) {
                    return Err(MessengerError::UnknownUser(outgoing.to.to_string()));
                }
                Err(e.into())
            }
            Err(e) => Err(MessengerError::Queued(e)),
        }
    }

    /// Starts a new session with every device whose session could not decrypt (see
    /// [`crate::SessionError::is_stuck`]) and announces it with a control message, so that the
    /// device writes in the new session from then on; returns how many were announced. A
    /// failure is logged and retried the next time.
    pub(super) async fn send_resets(&mut self) -> Result<usize, MessengerError> {
        let due = self.profile.read()?.keys.resets_to_send();
        let mut sent = 0;
        for (user, device) in due {
            match self.send_reset(&user, device).await {
                Ok(()) => sent += 1,
                Err(e @ MessengerError::Profile(_)) => return Err(e),
                Err(e) => tracing::warn!(%user, %device, error = %e, "could not announce a new session; will retry"),
            }
        }
        Ok(sent)
    }

    async fn send_reset(&mut self, user: &UserId, device: DeviceId) -> Result<(), MessengerError> {
        // The refresh claims a bundle of the device and starts the new session.
        self.refresh(user).await?;
        let (_, my_device) = self.me();
        let message = {
            let mut locked = self.profile.lock().await?;
            let keys = &mut locked.state.keys;
            let payload = Payload { to: user.clone(), body: PayloadBody::Control(Control::SessionReset) }.to_bytes()?;
            let body = keys.encrypt(user, device, &payload, &mut self.rng)?;
            let envelope = Envelope {
                from_device: my_device,
                to: vec![Recipient { user_id: user.clone(), device_id: device, body }],
                control: true,
            };
            let message = envelope.encode()?;
            locked.save()?;
            message
        };
        self.api.send_message(user.as_str(), &message, Some(&client_message_id())).await?;
        let mut locked = self.profile.lock().await?;
        locked.state.keys.reset_sent(user, device);
        locked.save()?;
        tracing::info!(%user, %device, "announced a new session");
        Ok(())
    }
}
