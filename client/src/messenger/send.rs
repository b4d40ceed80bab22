//! Sending: encrypting for every reading device, saving, then handing the message to the node;
//! the outbox holds what the node has not confirmed yet.

use kith_proto::{ErrorCode, UserId};
use rand_core::UnwrapErr;

use super::{Messenger, MessengerError, SentMessage, not_found};
use crate::ClientError;
use crate::envelope::{Envelope, Payload, Recipient};
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
    /// [`MessengerError::UnknownUser`]; [`SessionError::IdentityChanged`] while a recipient
    /// device has an unaccepted new identity (see [`Messenger::trust`]);
    /// [`SessionError::NoDevices`] when `to` never published keys; [`EnvelopeError::TooLarge`];
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
            let payload = kith_crypto::Zeroizing::new(Payload { to: to.clone(), text: text.to_owned() }.to_bytes()?);
            let mut copies = Vec::with_capacity(recipients.len());
            for (user_id, device_id) in recipients {
                let body = keys.encrypt(&user_id, device_id, &payload, &mut self.rng)?;
                copies.push(Recipient { user_id, device_id, body });
            }
            // Dropping `locked` unsaved on an error discards the advanced sessions; nothing
            // they encrypted has left this process.
            let message = Envelope { from_device: my_device, to: copies }.encode()?;
            let outgoing =
                Outgoing { client_message_id: client_message_id(), to: to.clone(), text: text.to_owned(), message };
            locked.state.outbox.push(outgoing.clone());
            locked.save()?;
            outgoing
        };
        let entry = self.deliver(outgoing).await?;
        Ok(SentMessage { entry, events })
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
}
