//! How the node's own errors reach the API: one mapping from store failures to
//! [`ServiceError`], so that handlers never decide it case by case.

use kith_client_api::ServiceError;

use crate::store::StoreError;

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Closed => Self::Unavailable("the store is shutting down".into()),
            StoreError::WriteFailed(reason) => Self::Unavailable(format!("write failed: {reason}")),
            StoreError::Database(
                ref db @ (sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)),
            ) => Self::Unavailable(db.to_string()),
            StoreError::MessageNotFound(id) => Self::UnknownMessage(id),
            StoreError::DeviceNotFound(user, device) => Self::UnknownDevice(user, device),
            e @ StoreError::TooManyDevices { .. } => Self::TooManyDevices(e.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<crate::password::HashError> for ServiceError {
    fn from(e: crate::password::HashError) -> Self {
        Self::Internal(e.to_string())
    }
}
