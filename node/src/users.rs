//! Which user ids exist, answered from memory once seen: every send checks its receiver, and
//! accounts are never deleted, so a positive answer can be kept.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};

use kith_proto::UserId;

use crate::store::{Store, StoreError};

/// Existence checks for local user ids.
#[derive(Debug)]
pub struct Users {
    store: Arc<dyn Store>,
    known: RwLock<HashSet<UserId>>,
}

impl Users {
    /// Checks against `store`, remembering what exists.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store, known: RwLock::new(HashSet::new()) }
    }

    /// Whether the account exists.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn exists(&self, user: &UserId) -> Result<bool, StoreError> {
        if self.known.read().unwrap_or_else(PoisonError::into_inner).contains(user) {
            return Ok(true);
        }
        let exists = self.store.user(user).await?.is_some();
        if exists {
            self.remember(user);
        }
        Ok(exists)
    }

    /// Records that the account exists (after registering it).
    pub fn remember(&self, user: &UserId) {
        self.known.write().unwrap_or_else(PoisonError::into_inner).insert(user.clone());
    }
}
