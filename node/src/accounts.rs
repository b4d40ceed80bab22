//! Accounts: registration and login (passwords are hashed by `password`).

use kith_client_api::{Password, ServiceError};
use kith_proto::{DeviceId, Timestamp, UserId, Username};

use crate::state::AppState;
use crate::store::{NewUser, StoreError};

/// `POST /api/v1/register`.
pub(crate) async fn register(
    state: &AppState,
    username: Username,
    password: Password,
    device: DeviceId,
) -> Result<UserId, ServiceError> {
    let user_id = UserId::new(username.clone(), state.server_name.clone());
    // Cheap check first, so a taken name costs no hashing; the insert below settles races.
    if state.users.exists(&user_id).await? {
        return Err(ServiceError::UsernameTaken(username));
    }
    let password_hash = state.hasher.hash(&password).await?;
    let user = NewUser { user_id: user_id.clone(), password_hash, created_at: Timestamp::now(), device };
    match state.store.create_user(user).await?.await {
        Ok(()) => {
            state.users.remember(&user_id);
            tracing::info!(user = %user_id, "account created");
            Ok(user_id)
        }
        Err(StoreError::UserExists(_)) => Err(ServiceError::UsernameTaken(username)),
        Err(e) => Err(e.into()),
    }
}

/// `POST /api/v1/login`: checks the password, then adds the device if it is new.
pub(crate) async fn login(
    state: &AppState,
    username: Username,
    password: Password,
    device: DeviceId,
) -> Result<UserId, ServiceError> {
    let user_id = UserId::new(username, state.server_name.clone());
    let record = state.store.user(&user_id).await?;
    let phc = record.as_ref().map(|r| r.password_hash.as_str());
    if !state.hasher.verify(&password, phc).await? {
        return Err(ServiceError::InvalidCredentials);
    }
    state.users.remember(&user_id);
    match state.store.add_device(&user_id, device, Timestamp::now()).await?.await {
        Ok(()) => Ok(user_id),
        Err(e @ StoreError::TooManyDevices { .. }) => Err(ServiceError::TooManyDevices(e.to_string())),
        Err(e) => Err(e.into()),
    }
}
