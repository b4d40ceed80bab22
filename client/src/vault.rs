//! Encryption at rest of a profile: a key derived from a passphrase with argon2id seals the
//! state file and every history line with XChaCha20-Poly1305.
//!
//! `key.json` (written once, when the profile is made) holds what is needed to derive the key
//! again, and a check value that tells a wrong passphrase from a damaged file:
//!
//! ```json
//! {"version":1,"kdf":"argon2id","memoryKiB":19456,"iterations":2,"parallelism":1,
//!  "salt":"<16 bytes, base64>","check":"<sealed check string, base64>"}
//! ```
//!
//! A sealed value is `nonce (24 random bytes) || ciphertext || tag (16)`, with associated data
//! naming what it is (`kith-profile-state-v2`, `kith-profile-history-v2:<peer>`), so that one
//! sealed file cannot be passed off as another.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use kith_crypto::Zeroizing;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};

/// argon2id memory cost in KiB (the argon2 crate's default, OWASP's minimum for argon2id).
pub const KDF_MEMORY_KIB: u32 = 19 * 1024;
/// argon2id passes.
pub const KDF_ITERATIONS: u32 = 2;
/// argon2id lanes.
pub const KDF_PARALLELISM: u32 = 1;

/// What the check value seals: opening it proves the passphrase is right.
const CHECK: &[u8] = b"kith-profile-key-check";
const CHECK_AAD: &[u8] = b"kith-profile-key-check-v2";
const NONCE_LEN: usize = 24;

/// Why a vault could not be made or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// The passphrase does not open the profile.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// `key.json` or a sealed value is not of the documented form.
    #[error("{0}")]
    Malformed(String),
}

/// `key.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KeyFile {
    version: u32,
    kdf: String,
    #[serde(rename = "memoryKiB")]
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
    salt: String,
    check: String,
}

/// The profile key, wiped when dropped.
pub(crate) struct Vault {
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault(<key>)")
    }
}

fn derive(
    passphrase: &str,
    salt: &[u8],
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
) -> Result<Vault, VaultError> {
    let params = argon2::Params::new(memory_kib, iterations, parallelism, Some(32))
        .map_err(|e| VaultError::Malformed(format!("key parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase.as_bytes(), salt, key.as_mut())
        .map_err(|e| VaultError::Malformed(format!("key derivation: {e}")))?;
    Ok(Vault { key })
}

impl Vault {
    /// A new key from `passphrase` and a fresh salt, and the `key.json` that derives it again.
    pub(crate) fn create<R: CryptoRng + ?Sized>(passphrase: &str, rng: &mut R) -> Result<(Self, KeyFile), VaultError> {
        let mut salt = [0u8; 16];
        rng.fill_bytes(&mut salt);
        let vault = derive(passphrase, &salt, KDF_MEMORY_KIB, KDF_ITERATIONS, KDF_PARALLELISM)?;
        let check = vault.seal(CHECK_AAD, CHECK, rng)?;
        let file = KeyFile {
            version: 1,
            kdf: "argon2id".into(),
            memory_kib: KDF_MEMORY_KIB,
            iterations: KDF_ITERATIONS,
            parallelism: KDF_PARALLELISM,
            salt: BASE64.encode(salt),
            check: BASE64.encode(check),
        };
        Ok((vault, file))
    }

    /// The key `file` describes, from `passphrase`.
    ///
    /// # Errors
    /// [`VaultError::WrongPassphrase`]; [`VaultError::Malformed`] for a file of another form.
    pub(crate) fn open(passphrase: &str, file: &KeyFile) -> Result<Self, VaultError> {
        if file.version != 1 || file.kdf != "argon2id" {
            return Err(VaultError::Malformed(format!("key file version {} with {}", file.version, file.kdf)));
        }
        let salt = BASE64.decode(&file.salt).map_err(|e| VaultError::Malformed(format!("salt: {e}")))?;
        let check = BASE64.decode(&file.check).map_err(|e| VaultError::Malformed(format!("check: {e}")))?;
        let vault = derive(passphrase, &salt, file.memory_kib, file.iterations, file.parallelism)?;
        match vault.open_sealed(CHECK_AAD, &check) {
            Ok(opened) if opened.as_slice() == CHECK => Ok(vault),
            _ => Err(VaultError::WrongPassphrase),
        }
    }

    /// Seals `plaintext` with a fresh random nonce, authenticating `aad`.
    pub(crate) fn seal<R: CryptoRng + ?Sized>(
        &self,
        aad: &[u8],
        plaintext: &[u8],
        rng: &mut R,
    ) -> Result<Vec<u8>, VaultError> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let sealed = XChaCha20Poly1305::new(&chacha20poly1305::Key::from(*self.key))
            .encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad })
            .map_err(|_| VaultError::Malformed("encryption failed".into()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`Self::seal`] sealed with the same `aad`.
    ///
    /// # Errors
    /// [`VaultError::Malformed`] for a value that is too short or does not authenticate.
    pub(crate) fn open_sealed(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(VaultError::Malformed(format!("sealed value of {} bytes is too short", sealed.len())));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| VaultError::Malformed("nonce".into()))?;
        XChaCha20Poly1305::new(&chacha20poly1305::Key::from(*self.key))
            .decrypt(&XNonce::from(nonce), Payload { msg: ciphertext, aad })
            .map(Zeroizing::new)
            .map_err(|_| {
                VaultError::Malformed("a sealed value does not authenticate (damaged or not this profile's)".into())
            })
    }
}

#[cfg(test)]
mod tests {
    use rand_core::UnwrapErr;

    use super::*;

    #[test]
    fn the_passphrase_opens_what_it_sealed_and_nothing_else_does() {
        let mut rng = UnwrapErr(getrandom::SysRng);
        let (vault, file) = Vault::create("correct horse", &mut rng).unwrap();
        let sealed = vault.seal(b"state", b"secret state", &mut rng).unwrap();
        let again = Vault::open("correct horse", &file).unwrap();
        assert_eq!(again.open_sealed(b"state", &sealed).unwrap().as_slice(), b"secret state");
        assert!(again.open_sealed(b"history", &sealed).is_err(), "the associated data is bound");
        assert_eq!(Vault::open("wrong horse", &file).unwrap_err(), VaultError::WrongPassphrase);
        let json = serde_json::to_string(&file).unwrap();
        assert!(json.contains(r#""kdf":"argon2id","memoryKiB":19456,"iterations":2,"parallelism":1"#), "{json}");
        // Two seals of one plaintext differ (fresh nonces).
        assert_ne!(vault.seal(b"state", b"x", &mut rng).unwrap(), vault.seal(b"state", b"x", &mut rng).unwrap());
    }
}
