//! Key derivation and the AEAD, exactly as specified in `docs/crypto.md`.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{CryptoError, Result};

/// A 32-byte secret that is wiped when dropped.
pub(crate) type Secret32 = Zeroizing<[u8; 32]>;

/// HKDF info string of the session-setup (X3DH) key derivation.
pub(crate) const X3DH_INFO: &[u8] = b"kith-x3dh-v1";
/// HKDF info string of the root-chain step of the Double Ratchet.
pub(crate) const ROOT_INFO: &[u8] = b"kith-ratchet-root-v1";
/// HKDF info string that expands a message key into AEAD key and nonce.
pub(crate) const MESSAGE_INFO: &[u8] = b"kith-message-keys-v1";

/// HMAC input that derives a message key from a chain key.
const MESSAGE_KEY_SEED: u8 = 0x01;
/// HMAC input that derives the next chain key from a chain key.
const CHAIN_KEY_SEED: u8 = 0x02;

/// Length of the Poly1305 tag appended to every ciphertext.
pub(crate) const TAG_LEN: usize = 16;

fn hkdf<const N: usize>(salt: &[u8], ikm: &[u8], info: &[u8]) -> Result<Zeroizing<[u8; N]>> {
    let mut out = Zeroizing::new([0u8; N]);
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, out.as_mut())
        .map_err(|_| CryptoError::Internal("HKDF expand"))?;
    Ok(out)
}

/// HKDF-SHA256 of `N` bytes, for the constructions outside the ratchet (linking).
pub(crate) fn hkdf_bytes<const N: usize>(salt: &[u8], ikm: &[u8], info: &[u8]) -> Result<Zeroizing<[u8; N]>> {
    hkdf::<N>(salt, ikm, info)
}

/// ChaCha20-Poly1305 with the key and nonce in `key_nonce` (32 then 12 bytes).
pub(crate) fn seal_with(key_nonce: &[u8; 44], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let (key, nonce) = split::<32, 12, 44>(key_nonce);
    ChaCha20Poly1305::new(&Key::from(*key))
        .encrypt(&Nonce::from(*nonce), Payload { msg: plaintext, aad })
        .map_err(|_| CryptoError::Internal("AEAD encrypt"))
}

/// Opens what [`seal_with`] sealed; `None` if it does not authenticate.
pub(crate) fn open_with(key_nonce: &[u8; 44], aad: &[u8], ciphertext: &[u8]) -> Result<Option<Vec<u8>>> {
    let (key, nonce) = split::<32, 12, 44>(key_nonce);
    Ok(ChaCha20Poly1305::new(&Key::from(*key)).decrypt(&Nonce::from(*nonce), Payload { msg: ciphertext, aad }).ok())
}

fn split<const A: usize, const B: usize, const N: usize>(okm: &[u8; N]) -> (Zeroizing<[u8; A]>, Zeroizing<[u8; B]>) {
    let mut a = Zeroizing::new([0u8; A]);
    let mut b = Zeroizing::new([0u8; B]);
    a.copy_from_slice(&okm[..A]);
    b.copy_from_slice(&okm[A..A + B]);
    (a, b)
}

/// `SK = HKDF-SHA256(salt = 32 zero bytes, IKM = 32 x 0xFF || DH1 || DH2 ||
/// DH3 [|| DH4], info = "kith-x3dh-v1")`, 32 bytes.
pub(crate) fn x3dh(dh_outputs: &[&[u8; 32]]) -> Result<Secret32> {
    let mut ikm = Zeroizing::new(Vec::with_capacity(32 * (1 + dh_outputs.len())));
    ikm.extend_from_slice(&[0xFF; 32]);
    for dh in dh_outputs {
        ikm.extend_from_slice(dh.as_slice());
    }
    hkdf::<32>(&[0u8; 32], &ikm, X3DH_INFO)
}

/// `KDF_RK(rk, dh) = HKDF-SHA256(salt = rk, IKM = dh, info =
/// "kith-ratchet-root-v1")`, 64 bytes: new root key, then new chain key.
pub(crate) fn kdf_rk(root_key: &[u8; 32], dh_output: &[u8; 32]) -> Result<(Secret32, Secret32)> {
    let okm = hkdf::<64>(root_key, dh_output, ROOT_INFO)?;
    Ok(split::<32, 32, 64>(&okm))
}

fn hmac(key: &[u8; 32], input: u8) -> Result<Secret32> {
    let mut mac =
        <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key).map_err(|_| CryptoError::Internal("HMAC key"))?;
    mac.update(&[input]);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    Ok(out)
}

/// `KDF_CK(ck)`: message key `HMAC-SHA256(ck, 0x01)`, next chain key
/// `HMAC-SHA256(ck, 0x02)`.
pub(crate) fn kdf_ck(chain_key: &[u8; 32]) -> Result<(Secret32, Secret32)> {
    Ok((hmac(chain_key, MESSAGE_KEY_SEED)?, hmac(chain_key, CHAIN_KEY_SEED)?))
}

/// Expands a message key into the ChaCha20-Poly1305 key and nonce:
/// `HKDF-SHA256(salt = 32 zero bytes, IKM = mk, info =
/// "kith-message-keys-v1")`, 44 bytes: key (32) then nonce (12).
fn aead_for(message_key: &[u8; 32]) -> Result<(ChaCha20Poly1305, Nonce)> {
    let okm = hkdf::<44>(&[0u8; 32], message_key, MESSAGE_INFO)?;
    let (key, nonce) = split::<32, 12, 44>(&okm);
    let cipher = ChaCha20Poly1305::new(&Key::from(*key));
    Ok((cipher, Nonce::from(*nonce)))
}

/// Encrypts `plaintext` under a message key, authenticating `aad`.
/// Returns ciphertext followed by the 16-byte tag.
pub(crate) fn seal(message_key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let (cipher, nonce) = aead_for(message_key)?;
    cipher.encrypt(&nonce, Payload { msg: plaintext, aad }).map_err(|_| CryptoError::Internal("AEAD encrypt"))
}

/// Decrypts ciphertext-and-tag under a message key; `None` if it does not
/// authenticate.
pub(crate) fn open(message_key: &[u8; 32], aad: &[u8], ciphertext: &[u8]) -> Result<Option<Vec<u8>>> {
    let (cipher, nonce) = aead_for(message_key)?;
    Ok(cipher.decrypt(&nonce, Payload { msg: ciphertext, aad }).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn hkdf_matches_rfc5869_case_1() {
        let okm =
            hkdf::<42>(&unhex("000102030405060708090a0b0c"), &[0x0b; 22], &unhex("f0f1f2f3f4f5f6f7f8f9")).unwrap();
        assert_eq!(
            okm.to_vec(),
            unhex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
        );
    }

    #[test]
    fn chain_step_separates_message_and_chain_keys() {
        let (mk, ck) = kdf_ck(&[7; 32]).unwrap();
        assert_ne!(*mk, *ck);
        let (mk2, _) = kdf_ck(&ck).unwrap();
        assert_ne!(*mk, *mk2);
    }

    #[test]
    fn seal_and_open_bind_the_associated_data() {
        let sealed = seal(&[9; 32], b"ad", b"text").unwrap();
        assert_eq!(sealed.len(), 4 + TAG_LEN);
        assert_eq!(open(&[9; 32], b"ad", &sealed).unwrap().unwrap(), b"text");
        assert_eq!(open(&[9; 32], b"aD", &sealed).unwrap(), None);
        assert_eq!(open(&[8; 32], b"ad", &sealed).unwrap(), None);
    }
}
