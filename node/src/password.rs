//! Password hashing: argon2id with the `argon2` crate's defaults (19 MiB, 2 passes, one lane,
//! OWASP's recommendation). Hashing is slow on purpose, so it runs on blocking threads, at most
//! one per core at a time, and never on the async runtime.

use std::sync::Arc;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params};
use kith_client_api::Password;
use kith_proto::Timestamp;
use tokio::sync::Semaphore;

/// Runs argon2id on blocking threads, bounded to the machine's cores.
#[derive(Debug)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    /// A hash of a random password: logins for unknown users verify against it, so that they
    /// take as long as logins with a wrong password.
    decoy: String,
}

/// Why a password could not be hashed or checked.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The stored hash is not an argon2id PHC string.
    #[error("not an argon2id PHC string: {0}")]
    Format(String),
    /// The hashing thread failed.
    #[error("hashing failed: {0}")]
    Failed(String),
}

impl Hasher {
    /// A hasher allowing `parallelism` concurrent hashes.
    ///
    /// # Errors
    /// If the decoy hash cannot be computed (a broken RNG).
    pub fn new(parallelism: usize) -> Result<Self, HashError> {
        let decoy = hash_blocking(&format!("decoy-{}", Timestamp::now().as_millis()))?;
        Ok(Self { permits: Arc::new(Semaphore::new(parallelism.max(1))), decoy })
    }

    /// Hashes a password to a PHC string.
    ///
    /// # Errors
    /// [`HashError::Failed`] if the RNG or the thread fails.
    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let password = password.expose().to_owned();
        self.run(move || hash_blocking(&password)).await?
    }

    /// Whether `password` matches `phc`; with `None`, checks against the decoy and says no.
    ///
    /// # Errors
    /// [`HashError::Failed`] if the thread fails.
    pub async fn verify(&self, password: &Password, phc: Option<&str>) -> Result<bool, HashError> {
        let known = phc.is_some();
        let phc = phc.unwrap_or(&self.decoy).to_owned();
        let password = password.expose().to_owned();
        let matches =
            self.run(move || Argon2::default().verify_password(password.as_bytes(), phc.as_str()).is_ok()).await?;
        Ok(known && matches)
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, HashError> {
        let _permit = self.permits.acquire().await.map_err(|e| HashError::Failed(e.to_string()))?;
        tokio::task::spawn_blocking(work).await.map_err(|e| HashError::Failed(e.to_string()))
    }
}

fn hash_blocking(password: &str) -> Result<String, HashError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| HashError::Failed(e.to_string()))
}

/// Checks that `phc` is an argon2id hash this node can verify, as `kith user import` requires.
///
/// # Errors
/// [`HashError::Format`] naming what is wrong.
pub fn check_imported_hash(phc: &str) -> Result<(), HashError> {
    let parsed = PasswordHash::new(phc).map_err(|e| HashError::Format(e.to_string()))?;
    if parsed.algorithm.as_str() != Algorithm::Argon2id.as_str() {
        return Err(HashError::Format(format!("algorithm is {}, expected argon2id", parsed.algorithm)));
    }
    Params::try_from(&parsed).map_err(|e| HashError::Format(format!("parameters: {e}")))?;
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err(HashError::Format("salt or hash missing".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_argon2id_phc_strings_are_importable() {
        let good = hash_blocking("correct horse battery staple").unwrap();
        check_imported_hash(&good).unwrap();
        let refused = |phc: &str, why: &str| match check_imported_hash(phc) {
            Err(HashError::Format(reason)) => assert!(reason.contains(why), "{phc}: {reason}"),
            other => panic!("{phc}: {other:?}"),
        };
        refused(&good.replacen("$argon2id$", "$argon2i$", 1), "algorithm is argon2i, expected argon2id");
        refused("$2b$12$abcdefghijklmnopqrstuv", "");
        refused("plaintext", "");
    }

    #[tokio::test]
    async fn verifies_right_and_wrong_passwords_and_unknown_users() {
        let hasher = Hasher::new(2).unwrap();
        let password = Password::parse("s3cret-password".into()).unwrap();
        let hash = hasher.hash(&password).await.unwrap();
        assert!(hasher.verify(&password, Some(&hash)).await.unwrap());
        let wrong = Password::parse("not-the-password".into()).unwrap();
        assert!(!hasher.verify(&wrong, Some(&hash)).await.unwrap());
        assert!(!hasher.verify(&password, None).await.unwrap());
    }
}
