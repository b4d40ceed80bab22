//! Byte-level helpers shared by every encoding in the crate.
//!
//! Every encoding starts with [`VERSION`] and a kind byte, uses big-endian
//! integers and fixed-size fields, and is decoded with [`Reader`], which
//! never panics: every read is bounds-checked and reports what was short.

use core::fmt;

use zeroize::Zeroizing;

use crate::error::{CryptoError, Result};

/// The format version written as the first byte of every encoding: protocol version 2.
///
/// Version 1 encodings (an earlier trust model, without user identities) are refused with
/// [`CryptoError::UnsupportedVersion`]; see `docs/crypto.md`.
pub const VERSION: u8 = 2;

/// The longest user id (in UTF-8 bytes) a certificate, removal or link message may name.
pub const MAX_USER_ID_LEN: usize = 255;

/// Kind bytes (the second byte of every encoding).
pub(crate) mod kind {
    /// A Double Ratchet message on the wire.
    pub const MESSAGE: u8 = 0x01;
    /// A prekey message (session setup + first message) on the wire.
    pub const PREKEY_MESSAGE: u8 = 0x02;
    /// [`crate::PublicIdentity`].
    pub const PUBLIC_IDENTITY: u8 = 0x10;
    /// [`crate::DeviceIdentity`].
    pub const DEVICE_IDENTITY: u8 = 0x11;
    /// [`crate::SignedPreKey`].
    pub const SIGNED_PREKEY: u8 = 0x12;
    /// [`crate::SignedPreKeyPublic`].
    pub const SIGNED_PREKEY_PUBLIC: u8 = 0x13;
    /// [`crate::OneTimePreKey`].
    pub const ONE_TIME_PREKEY: u8 = 0x14;
    /// [`crate::OneTimePreKeyPublic`].
    pub const ONE_TIME_PREKEY_PUBLIC: u8 = 0x15;
    /// [`crate::PreKeyBundle`].
    pub const PREKEY_BUNDLE: u8 = 0x16;
    /// [`crate::Session`].
    pub const SESSION: u8 = 0x20;
    /// [`crate::ReplayRecord`].
    pub const REPLAY_RECORD: u8 = 0x21;
    /// [`crate::UserIdentity`].
    pub const USER_IDENTITY: u8 = 0x30;
    /// [`crate::UserIdentityPublic`].
    pub const USER_IDENTITY_PUBLIC: u8 = 0x31;
    /// [`crate::DeviceCertificate`].
    pub const DEVICE_CERTIFICATE: u8 = 0x32;
    /// [`crate::DeviceRemoval`].
    pub const DEVICE_REMOVAL: u8 = 0x33;
    /// [`crate::LinkRequest`].
    pub const LINK_REQUEST: u8 = 0x34;
    /// [`crate::LinkResponse`].
    pub const LINK_RESPONSE: u8 = 0x35;
}

/// Bounds-checked cursor over untrusted bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Starts reading `buf`, which encodes a `what`.
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, what }
    }

    /// Reads and checks the version and kind bytes.
    pub(crate) fn header(&mut self, expected_kind: u8) -> Result<()> {
        let version = self.u8()?;
        if version != VERSION {
            return Err(CryptoError::UnsupportedVersion { what: self.what, got: version, supported: VERSION });
        }
        let got = self.u8()?;
        if got != expected_kind {
            return Err(CryptoError::WrongKind { what: self.what, expected: expected_kind, got });
        }
        Ok(())
    }

    /// Takes the next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(CryptoError::Truncated { what: self.what, needed: n, available: self.buf.len() });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Takes the next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Takes the next `N` bytes as a secret that is wiped on drop.
    pub(crate) fn secret<const N: usize>(&mut self) -> Result<Zeroizing<[u8; N]>> {
        let mut out = Zeroizing::new([0u8; N]);
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads one byte.
    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    /// Reads a big-endian `u32`.
    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian `u64`.
    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Reads a user id: a big-endian `u16` length, then that many bytes of UTF-8, 1 to
    /// [`MAX_USER_ID_LEN`] of them.
    pub(crate) fn user_id(&mut self) -> Result<String> {
        let len = usize::from(u16::from_be_bytes(self.array()?));
        check_user_id_len(len)?;
        let bytes = self.take(len)?;
        core::str::from_utf8(bytes).map(str::to_owned).map_err(|_| CryptoError::InvalidUserId { len })
    }

    /// Reads a presence flag: 0 is false, 1 is true, anything else an error.
    pub(crate) fn flag(&mut self, what: &'static str) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(CryptoError::InvalidFlag { what, value }),
        }
    }

    /// Reads an optional big-endian `u32` (flag byte, then the value if 1).
    pub(crate) fn opt_u32(&mut self, what: &'static str) -> Result<Option<u32>> {
        if self.flag(what)? { Ok(Some(self.u32()?)) } else { Ok(None) }
    }

    /// Takes everything that is left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.buf)
    }

    /// Bytes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Succeeds only if every byte was read.
    pub(crate) fn finish(self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(CryptoError::TrailingBytes { what: self.what, extra: self.buf.len() })
        }
    }
}

/// Starts an encoding: version byte, kind byte, with room for `len` bytes.
pub(crate) fn writer(kind: u8, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    out.push(VERSION);
    out.push(kind);
    out
}

/// Starts an encoding that will hold secrets; wiped when dropped.
pub(crate) fn secret_writer(kind: u8, len: usize) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(writer(kind, len))
}

/// Checks a user id's length: 1 to [`MAX_USER_ID_LEN`] bytes.
pub(crate) fn check_user_id_len(len: usize) -> Result<()> {
    if len == 0 || len > MAX_USER_ID_LEN {
        return Err(CryptoError::InvalidUserId { len });
    }
    Ok(())
}

/// Appends a user id as a big-endian `u16` length and its UTF-8 bytes. The caller checked
/// the length with [`check_user_id_len`] when the value holding it was built.
pub(crate) fn put_user_id(out: &mut Vec<u8>, user_id: &str) {
    let len = u16::try_from(user_id.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(user_id.as_bytes());
}

/// Appends an optional `u32` as a flag byte followed by the value if present.
pub(crate) fn put_opt_u32(out: &mut Vec<u8>, value: Option<u32>) {
    match value {
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_be_bytes());
        }
        None => out.push(0),
    }
}

/// Formats bytes as lowercase hex: the one format public keys are printed in.
pub(crate) struct Hex<'a>(pub(crate) &'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reports_what_was_short() {
        let mut r = Reader::new(&[2, 0x10, 0, 0, 0, 7, 1], "thing");
        r.header(kind::PUBLIC_IDENTITY).unwrap();
        assert_eq!(r.u32().unwrap(), 7);
        assert_eq!(r.opt_u32("flag").unwrap_err(), CryptoError::Truncated { what: "thing", needed: 4, available: 0 });
        let mut r = Reader::new(&[2], "thing");
        assert_eq!(r.flag("flag").unwrap_err(), CryptoError::InvalidFlag { what: "flag", value: 2 });
        let r = Reader::new(&[0, 0], "thing");
        assert_eq!(r.finish().unwrap_err(), CryptoError::TrailingBytes { what: "thing", extra: 2 });
        let mut r = Reader::new(&[1, 0, 0, 0, 0, 0, 0, 0], "thing");
        assert_eq!(r.u64().unwrap(), 1 << 56);
    }

    #[test]
    fn user_ids_are_length_prefixed_utf8_of_bounded_length() {
        let mut out = Vec::new();
        put_user_id(&mut out, "bob@t");
        assert_eq!(out, b"\x00\x05bob@t");
        assert_eq!(Reader::new(&out, "thing").user_id().unwrap(), "bob@t");
        assert_eq!(Reader::new(&[0, 0], "thing").user_id().unwrap_err(), CryptoError::InvalidUserId { len: 0 });
        assert_eq!(Reader::new(&[1, 0], "thing").user_id().unwrap_err(), CryptoError::InvalidUserId { len: 256 });
        assert_eq!(Reader::new(&[0, 1, 0xff], "thing").user_id().unwrap_err(), CryptoError::InvalidUserId { len: 1 });
    }

    #[test]
    fn hex_is_lowercase_and_unpadded() {
        assert_eq!(Hex(&[0x00, 0xab, 0x7f]).to_string(), "00ab7f");
        assert_eq!(format!("{:?}", Hex(&[0xff])), "ff");
    }
}
