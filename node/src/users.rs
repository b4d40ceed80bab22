//! Which user ids exist, answered from memory once seen: every send checks its receiver, and
//! accounts are never deleted, so a positive answer can be kept.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use kith_proto::{DeviceId, UserId};

use crate::store::{Store, StoreError};

/// Existence checks for local user ids and their devices.
#[derive(Debug)]
pub struct Users {
    store: Arc<dyn Store>,
    known: RwLock<HashSet<UserId>>,
    /// Devices known to exist; a removed device is forgotten here when it is removed.
    devices: RwLock<HashMap<UserId, HashSet<DeviceId>>>,
    /// Bumped on every removal, so a check that read the store before a removal does not
    /// remember the removed device afterwards.
    removals: AtomicU64,
}

impl Users {
    /// Checks against `store`, remembering what exists.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            known: RwLock::new(HashSet::new()),
            devices: RwLock::new(HashMap::new()),
            removals: AtomicU64::new(0),
        }
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

    /// Whether the user's device exists (every authenticated request asks, since a device may
    /// be removed while its tokens are still valid).
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn device_exists(&self, user: &UserId, device: DeviceId) -> Result<bool, StoreError> {
        let known =
            self.devices.read().unwrap_or_else(PoisonError::into_inner).get(user).is_some_and(|d| d.contains(&device));
        if known {
            return Ok(true);
        }
        let removals = self.removals.load(Ordering::Acquire);
        let exists = self.store.devices(user).await?.iter().any(|d| d.device_id == device);
        if exists {
            let mut devices = self.devices.write().unwrap_or_else(PoisonError::into_inner);
            if self.removals.load(Ordering::Acquire) == removals {
                devices.entry(user.clone()).or_default().insert(device);
            }
        }
        Ok(exists)
    }

    /// Forgets a removed device.
    pub fn forget_device(&self, user: &UserId, device: DeviceId) {
        let mut devices = self.devices.write().unwrap_or_else(PoisonError::into_inner);
        self.removals.fetch_add(1, Ordering::AcqRel);
        if let Some(known) = devices.get_mut(user) {
            known.remove(&device);
            if known.is_empty() {
                devices.remove(user);
            }
        }
    }
}
