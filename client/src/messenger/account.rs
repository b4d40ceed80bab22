//! Accounts: registering (which makes the account's user identity), logging in, starting over
//! with a new identity, and opening an existing profile. Adding a device to an account is
//! linking (`link.rs`), never a password alone.

use kith_proto::{DeviceId, Timestamp};
use rand_core::UnwrapErr;

use super::{Messenger, MessengerError, random_device_id};
use crate::profile::{Profile, ProfileError};
use crate::sessions::KeyStore;
use crate::state::{Account, Processed, State};
use crate::{Authed, Client};

impl Messenger {
    /// Creates an account on the node at `server` and a profile for this device in `profile`
    /// (which must not hold one) with a new user identity, then publishes the device's keys
    /// and certificate.
    ///
    /// `device` defaults to a random non-zero id.
    ///
    /// # Errors
    /// [`ProfileError::Taken`], the node's refusals (`username_taken` …), transport errors.
    pub async fn register(
        profile: Profile,
        server: &str,
        username: &str,
        password: &str,
        device: Option<DeviceId>,
    ) -> Result<Self, MessengerError> {
        profile.ensure_unused()?;
        let client = Client::with_trust(server, profile.trust())?.device(device.unwrap_or_else(random_device_id));
        let api = client.register(username, password).await?;
        Self::start(profile, api, false).await
    }

    /// Logs in. With an existing profile of the same user, keeps its keys and device (only the
    /// token changes).
    ///
    /// Without a profile, a password alone does not make a device of the account: that is
    /// linking ([`Messenger::link`]). Only with `new_identity` does it make a profile, with a
    /// new user identity that replaces the account's (for a user who lost every device): the
    /// account's contacts see the change loudly and write to nobody until they accept it, and
    /// the account's other devices are no longer trusted.
    ///
    /// # Errors
    /// [`MessengerError::NotLinked`] for a new profile without `new_identity`;
    /// [`ProfileError::Taken`] for a profile of another user or device; `invalid_credentials`,
    /// `too_many_devices`, transport errors.
    pub async fn login(
        profile: Profile,
        server: &str,
        username: &str,
        password: &str,
        device: Option<DeviceId>,
        new_identity: bool,
    ) -> Result<Self, MessengerError> {
        let existing = match profile.account() {
            Ok(account) => Some(account),
            Err(ProfileError::Missing(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let Some(account) = existing else {
            let client = Client::with_trust(server, profile.trust())?.device(device.unwrap_or_else(random_device_id));
            let api = client.login(username, password).await?;
            if !new_identity {
                return Err(MessengerError::NotLinked(api.user_id().clone()));
            }
            return Self::start(profile, api, true).await;
        };
        let taken = || profile.taken_by(&account);
        if account.user_id.name() != username || device.is_some_and(|d| d != account.device_id) {
            return Err(taken().into());
        }
        let api =
            Client::with_trust(server, profile.trust())?.device(account.device_id).login(username, password).await?;
        if api.user_id() != &account.user_id {
            return Err(taken().into());
        }
        let mut locked = profile.lock().await?;
        locked.state.account.token = api.token().to_owned();
        locked.state.account.server = api.base_url().to_owned();
        locked.save()?;
        drop(locked);
        let mut messenger = Self { profile, api, rng: UnwrapErr(getrandom::SysRng) };
        messenger.replenish_prekeys().await?;
        Ok(messenger)
    }

    /// A new profile with a new user identity for a freshly authenticated device, and its
    /// keys published; `reset` replaces the account's user identity on the node.
    async fn start(profile: Profile, api: Authed, reset: bool) -> Result<Self, MessengerError> {
        let mut rng = UnwrapErr(getrandom::SysRng);
        let keys = KeyStore::generate(api.user_id(), api.device_id(), Timestamp::now(), &mut rng)?;
        Self::start_with(profile, api, keys, reset).await
    }

    /// A new profile holding `keys` for a freshly authenticated device, and its keys published.
    pub(super) async fn start_with(
        profile: Profile,
        api: Authed,
        keys: KeyStore,
        reset: bool,
    ) -> Result<Self, MessengerError> {
        let rng = UnwrapErr(getrandom::SysRng);
        let state = State {
            account: Account {
                server: api.base_url().to_owned(),
                user_id: api.user_id().clone(),
                device_id: api.device_id(),
                token: api.token().to_owned(),
            },
            keys,
            processed: Processed::default(),
            outbox: Vec::new(),
            keys_published: false,
            reset_identity: reset,
        };
        profile.create(&state).await?;
        let mut messenger = Self { profile, api, rng };
        messenger.replenish_prekeys().await?;
        Ok(messenger)
    }

    /// Opens an existing profile, talking to the node it was made with, or to `server`.
    ///
    /// # Errors
    /// [`ProfileError::Missing`] and other profile errors; an invalid URL.
    pub fn open(profile: Profile, server: Option<&str>) -> Result<Self, MessengerError> {
        let account = profile.account()?;
        let client = Client::with_trust(server.unwrap_or(&account.server), profile.trust())?.device(account.device_id);
        let api = client.authed(kith_proto::rest::AuthResponse {
            user_id: account.user_id,
            device_id: account.device_id,
            token: account.token,
        });
        Ok(Self { profile, api, rng: UnwrapErr(getrandom::SysRng) })
    }
}
