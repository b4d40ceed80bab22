//! Linking: a new device joins the account only with a code shown by a device the account
//! already has. The existing device shows the code ([`Messenger::link_offer`]) and waits
//! ([`Messenger::link_device`]); the new device, given the code and the account's password
//! (for the node), asks ([`Messenger::link`]). The two `kith-crypto` link messages travel
//! through the node as messages from the account to itself (see `docs/crypto.md`).

use std::time::Duration;

use kith_crypto::link::link_message_id;
use kith_crypto::{DeviceIdentity, LinkCode, LinkRequest, LinkResponse, LinkSecret, Zeroizing};
use kith_proto::{ClientFrame, DeviceId, ServerFrame, Timestamp, UserId};
use rand_core::UnwrapErr;

use super::{Event, Messenger, MessengerError, random_device_id};
use crate::envelope::{self, Content};
use crate::profile::Profile;
use crate::sessions::KeyStore;
use crate::{Client, ClientError};

/// How long either side of a link waits for the other by default.
pub const LINK_WAIT: Duration = Duration::from_secs(10 * 60);

/// A link code this device shows, and the secret it holds, for one link.
#[derive(Debug)]
pub struct LinkOffer {
    code: LinkCode,
}

impl LinkOffer {
    /// The code to show: `<user id>/<32 hex digits>`. It lets whoever types it (and knows the
    /// password) add a device to the account: show it only to its owner.
    pub fn code(&self) -> Zeroizing<String> {
        self.code.to_text()
    }
}

fn link_failed(e: impl std::fmt::Display) -> MessengerError {
    MessengerError::Link(e.to_string())
}

fn client_message_id() -> String {
    let mut bytes = [0u8; 16];
    rand_core::Rng::fill_bytes(&mut UnwrapErr(getrandom::SysRng), &mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Messenger {
    /// A fresh link code for adding a device to this account.
    pub fn link_offer(&mut self) -> LinkOffer {
        LinkOffer {
            code: LinkCode { user_id: self.user_id().to_string(), secret: LinkSecret::generate(&mut self.rng) },
        }
    }

    /// Waits (at most `wait`) for the request of the device given `offer`'s code, certifies
    /// it with the account's identity and sends it the certificate and the identity; returns
    /// the new device's id. Other messages arriving meanwhile are handled as usual.
    ///
    /// # Errors
    /// [`MessengerError::Link`] when no request came in time; transport and profile errors.
    pub async fn link_device(&mut self, offer: &LinkOffer, wait: Duration) -> Result<DeviceId, MessengerError> {
        let (me, my_device) = self.me();
        let link_id = offer.code.secret.link_id().map_err(link_failed)?;
        let deadline = tokio::time::Instant::now() + wait;
        let mut inbox = self.connect().await?;
        loop {
            let frame = tokio::time::timeout_at(deadline, inbox.next_frame())
                .await
                .map_err(|_| link_failed(format!("no device asked to be linked within {wait:?}")))??;
            for event in self.handle(&mut inbox, frame).await? {
                let Event::LinkMessage { bytes } = event else { continue };
                if link_message_id(&bytes) != Some(link_id) {
                    continue;
                }
                let opened = match LinkRequest::open(&offer.code.secret, &bytes) {
                    Ok(opened) => opened,
                    Err(e) => {
                        tracing::warn!(error = %e, "ignoring a link message that does not open");
                        continue;
                    }
                };
                if opened.user_id != me.as_str() || opened.device_id == my_device.0 {
                    tracing::warn!(device = opened.device_id, "ignoring a link request for another account or device");
                    continue;
                }
                let response = {
                    let keys = &self.profile.read()?.keys;
                    LinkResponse::new(&offer.code.secret, &opened, &keys.user, &mut self.rng).map_err(link_failed)?
                };
                let text = envelope::encode_link(response.bytes())?;
                self.api.send_message(me.as_str(), &text, Some(&client_message_id())).await?;
                let mut locked = self.profile.lock().await?;
                locked.state.keys.mark_stale(&me);
                locked.save()?;
                drop(locked);
                if let Err(e) = inbox.close().await {
                    tracing::debug!(error = %e, "closing after linking");
                }
                tracing::info!(device = opened.device_id, "linked a device");
                return Ok(DeviceId(opened.device_id));
            }
        }
    }

    /// The new device's side: logs in to `code`'s account at `server` with `password` (which
    /// only opens the node; it makes no trusted device), asks the device that shows the code
    /// to link this one, waits for the answer (at most `wait`), and makes a profile in
    /// `profile` with the account's identity and this device's certificate, then publishes
    /// the device's keys.
    ///
    /// # Errors
    /// [`MessengerError::Link`] for a malformed code, a code of another account, an answer
    /// that does not fit or none in time; [`crate::profile::ProfileError::Taken`]; the node's refusals
    /// (`invalid_credentials`, `too_many_devices`), transport errors.
    pub async fn link(
        profile: Profile,
        server: &str,
        code: &str,
        password: &str,
        device: Option<DeviceId>,
        wait: Duration,
    ) -> Result<Self, MessengerError> {
        let code = LinkCode::parse(code).map_err(link_failed)?;
        let user = UserId::parse(&code.user_id)?;
        profile.ensure_unused()?;
        let api = Client::with_trust(server, profile.trust())?
            .device(device.unwrap_or_else(random_device_id))
            .login(user.name(), password)
            .await?;
        if api.user_id() != &user {
            return Err(link_failed(format!(
                "the code is for {user}, but this server knows the account as {}",
                api.user_id()
            )));
        }
        let mut rng = UnwrapErr(getrandom::SysRng);
        let identity = DeviceIdentity::generate(&mut rng);
        let request = LinkRequest::new(&code, api.device_id().0, &identity, &mut rng).map_err(link_failed)?;
        let link_id = code.secret.link_id().map_err(link_failed)?;
        let mut conn = api.connect().await?;
        api.send_message(user.as_str(), &envelope::encode_link(request.bytes())?, Some(&client_message_id())).await?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, conn.next_frame())
                .await
                .map_err(|_| link_failed(format!("the device showing the code did not answer within {wait:?}")))??;
            let ServerFrame::Message(message) = frame else { continue };
            let Ok(Content::Link(bytes)) = envelope::decode(&message.message) else { continue };
            if message.sender_id != user || link_message_id(&bytes) != Some(link_id) {
                continue;
            }
            let linked = LinkResponse::open(&code.secret, &request, &bytes).map_err(link_failed)?;
            let keys = KeyStore::linked(identity, linked, Timestamp::now(), &mut rng);
            let messenger = Self::start_with(profile, api, keys, false).await?;
            // Other messages were left unacknowledged: they come again on the next connect.
            let acked: Result<(), ClientError> = conn.send(&ClientFrame::Ack { message_id: message.message_id }).await;
            if let Err(e) = acked.and(conn.close().await) {
                tracing::debug!(error = %e, "closing after being linked");
            }
            return Ok(messenger);
        }
    }
}
