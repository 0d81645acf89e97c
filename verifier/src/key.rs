//! Public keys, key ids and the set of trusted keys an app verifies against.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::str::FromStr;

use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use crate::format::{B64, KEY_ID_LABEL, KEY_ID_LEN, PUBLIC_KEY_PREFIX};
use crate::Error;

/// Identifies a signing key: the first 8 bytes of SHA-256 over a domain label and the 32-byte public key.
///
/// Derived, never random, so anyone holding the public key can recompute it. Shown as 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    /// The key id of an Ed25519 public key given as its 32 bytes.
    pub fn derive(public_key: &[u8; 32]) -> Self {
        let digest = Sha256::new().chain_update(KEY_ID_LABEL).chain_update(public_key).finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        KeyId(id)
    }

    /// Wraps raw key id bytes as read from a token header.
    pub const fn from_bytes(bytes: [u8; KEY_ID_LEN]) -> Self {
        KeyId(bytes)
    }

    /// The raw bytes, as written in a token header.
    pub const fn to_bytes(self) -> [u8; KEY_ID_LEN] {
        self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = Error;

    /// Parses 16 hex digits (either case).
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = Error::InvalidPublicKey { reason: "a key id is 16 hex digits" };
        let s = s.as_bytes();
        if s.len() != KEY_ID_LEN * 2 {
            return Err(bad);
        }
        let mut id = [0u8; KEY_ID_LEN];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            let hi = hex_digit(pair[0]).ok_or(Error::InvalidPublicKey { reason: "a key id is 16 hex digits" })?;
            let lo = hex_digit(pair[1]).ok_or(Error::InvalidPublicKey { reason: "a key id is 16 hex digits" })?;
            id[i] = (hi << 4) | lo;
        }
        Ok(KeyId(id))
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A trusted Ed25519 public key with its derived key id.
///
/// Its text form is one short line an app can embed as a constant: `lpk1.` then base64url (no padding) of the key id
/// (8 bytes) followed by the public key (32 bytes). The key id doubles as a check: a line with a typo is refused.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key_id: KeyId,
    key: VerifyingKey,
}

impl PublicKey {
    /// Accepts a 32-byte Ed25519 public key, refusing points that are not on the curve or of small order.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, Error> {
        let key = VerifyingKey::from_bytes(bytes)
            .map_err(|_| Error::InvalidPublicKey { reason: "not a valid Ed25519 point" })?;
        if key.is_weak() {
            return Err(Error::InvalidPublicKey { reason: "weak (small-order) Ed25519 key" });
        }
        Ok(PublicKey { key_id: KeyId::derive(bytes), key })
    }

    /// The key id tokens signed by this key carry.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The 32 raw bytes of the public key.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The underlying ed25519-dalek key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }
}

impl fmt::Display for PublicKey {
    /// The one-line text form, `lpk1.<base64url(key id || key)>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = [0u8; KEY_ID_LEN + 32];
        raw[..KEY_ID_LEN].copy_from_slice(&self.key_id.0);
        raw[KEY_ID_LEN..].copy_from_slice(self.key.as_bytes());
        let mut buf = [0u8; 54];
        let n = B64.encode_slice(raw, &mut buf).map_err(|_| fmt::Error)?;
        f.write_str(PUBLIC_KEY_PREFIX)?;
        f.write_str(core::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = Error;

    /// Parses the one-line text form; surrounding whitespace is ignored.
    fn from_str(s: &str) -> Result<Self, Error> {
        let body = s
            .trim()
            .strip_prefix(PUBLIC_KEY_PREFIX)
            .ok_or(Error::InvalidPublicKey { reason: "a public key line starts with `lpk1.`" })?;
        let mut raw = [0u8; KEY_ID_LEN + 32];
        // decode_slice refuses input that decodes to more than the buffer; the length check catches less.
        let n = B64
            .decode_slice(body, &mut raw)
            .map_err(|_| Error::InvalidPublicKey { reason: "the key is not canonical base64url of 40 bytes" })?;
        if n != raw.len() {
            return Err(Error::InvalidPublicKey { reason: "the key is not canonical base64url of 40 bytes" });
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&raw[KEY_ID_LEN..]);
        let pk = PublicKey::from_bytes(&key)?;
        if pk.key_id.0[..] != raw[..KEY_ID_LEN] {
            return Err(Error::InvalidPublicKey { reason: "key id check failed: the line is corrupted or mistyped" });
        }
        Ok(pk)
    }
}

/// The public keys an app trusts. Several keys at once let a vendor rotate its signing key: tokens signed by a
/// retired key keep verifying as long as its public key stays in the set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: Vec<PublicKey>,
}

impl KeySet {
    /// An empty set (every token is then refused with [`Error::UnknownKey`]).
    pub fn new() -> Self {
        KeySet { keys: Vec::new() }
    }

    /// Parses public key lines, for example a constant the app embeds.
    pub fn from_lines<S: AsRef<str>>(lines: &[S]) -> Result<Self, Error> {
        let mut set = KeySet::new();
        for line in lines {
            set.insert(line.as_ref().parse()?);
        }
        Ok(set)
    }

    /// Parses a key set text: one public key line per line; blank lines and lines starting with `#` are skipped.
    pub fn from_text(text: &str) -> Result<Self, Error> {
        let mut set = KeySet::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            set.insert(line.parse()?);
        }
        Ok(set)
    }

    /// Adds a key; adding a key already present does nothing.
    pub fn insert(&mut self, key: PublicKey) {
        if self.get(key.key_id()).is_none() {
            self.keys.push(key);
        }
    }

    /// The key with this id, if trusted.
    pub fn get(&self, key_id: KeyId) -> Option<&PublicKey> {
        // A handful of keys at most: a linear scan beats hashing here.
        self.keys.iter().find(|k| k.key_id == key_id)
    }

    /// The trusted keys, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.iter()
    }

    /// The number of trusted keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key set text: one public key line per key.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for k in &self.keys {
            out.push_str(&alloc::format!("{k}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const KEY: [u8; 32] = [
        0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a, 0x0e, 0xe1,
        0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a,
    ];

    #[test]
    fn public_key_line_round_trips() {
        let pk = PublicKey::from_bytes(&KEY).unwrap();
        let line = pk.to_string();
        assert!(line.starts_with("lpk1."));
        assert_eq!(line.len(), 5 + 54);
        assert_eq!(line.parse::<PublicKey>().unwrap(), pk);
    }

    #[test]
    fn mistyped_public_key_line_is_refused() {
        let line = PublicKey::from_bytes(&KEY).unwrap().to_string();
        let mut bytes = line.into_bytes();
        let i = bytes.len() - 3;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let err = String::from_utf8(bytes).unwrap().parse::<PublicKey>().unwrap_err();
        assert_eq!(err.code(), "invalid_public_key");
    }

    #[test]
    fn key_id_text_round_trips() {
        let id = KeyId::derive(&KEY);
        assert_eq!(id.to_string().parse::<KeyId>().unwrap(), id);
        assert!("xyz".parse::<KeyId>().is_err());
        assert!("zzzzzzzzzzzzzzzz".parse::<KeyId>().is_err());
    }

    #[test]
    fn small_order_key_is_refused() {
        // The identity point encodes as 1 followed by zeros: on the curve, but of small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(PublicKey::from_bytes(&identity).unwrap_err().code(), "invalid_public_key");
    }

    #[test]
    fn key_set_text_skips_comments_and_deduplicates() {
        let line = PublicKey::from_bytes(&KEY).unwrap().to_string();
        let text = alloc::format!("# trusted keys\n\n{line}\n{line}\n");
        let set = KeySet::from_text(&text).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(set.to_text(), alloc::format!("{line}\n"));
    }
}
