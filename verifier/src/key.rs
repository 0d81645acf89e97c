//! Public keys, key ids and the set of trusted keys an app verifies against.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::str::FromStr;

use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use time::OffsetDateTime;

use crate::format::{B64, CERTIFICATE_PREFIX, KEY_ID_LABEL, KEY_ID_LEN, PUBLIC_KEY_PREFIX, ROOT_KEY_PREFIX};
use crate::{Certificate, Error, UntrustedCertificate};

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
    /// Accepts a 32-byte Ed25519 public key, refusing non-canonical encodings (y ≥ p) and points that are not on the
    /// curve or of small order.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, Error> {
        // RFC 8032 §5.1.3 refuses y ≥ p = 2^255 − 19, but ed25519-dalek reduces y mod p and accepts it, so one point
        // would have two key lines (and two key ids). y is the low 255 bits, little-endian; y ≥ p exactly when bits
        // 8..255 are all ones and the low byte is ≥ 0xed.
        let y_high_all_ones = bytes[31] & 0x7f == 0x7f && bytes[1..31].iter().all(|&b| b == 0xff);
        if y_high_all_ones && bytes[0] >= 0xed {
            return Err(Error::InvalidPublicKey { reason: "non-canonical Ed25519 point encoding (y is not below p)" });
        }
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

impl PublicKey {
    /// Writes the one-line text form under `prefix`: `<prefix><base64url(key id || key)>`.
    fn write_line(&self, prefix: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = [0u8; KEY_ID_LEN + 32];
        raw[..KEY_ID_LEN].copy_from_slice(&self.key_id.0);
        raw[KEY_ID_LEN..].copy_from_slice(self.key.as_bytes());
        let mut buf = [0u8; 54];
        let n = B64.encode_slice(raw, &mut buf).map_err(|_| fmt::Error)?;
        f.write_str(prefix)?;
        f.write_str(core::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)
    }

    /// Parses a one-line text form under `prefix` (§8 of docs/token-format.md); surrounding whitespace is ignored.
    fn parse_line(s: &str, prefix: &str, wrong_prefix: &'static str) -> Result<Self, Error> {
        let body = s.trim().strip_prefix(prefix).ok_or(Error::InvalidPublicKey { reason: wrong_prefix })?;
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

impl fmt::Display for PublicKey {
    /// The one-line text form, `lpk1.<base64url(key id || key)>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_line(PUBLIC_KEY_PREFIX, f)
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
        PublicKey::parse_line(s, PUBLIC_KEY_PREFIX, "a public key line starts with `lpk1.`")
    }
}

/// A vendor's root key: it signs no token, only certificates of signing keys ([`crate::Certificate`]). An app that
/// embeds the root trusts every signing key the root certified, so the vendor rotates signing keys without an app
/// update.
///
/// Its text form is a public key line under its own prefix, `lrk1.`, so a root is never mistaken for a signing key.
#[derive(Clone, PartialEq, Eq)]
pub struct RootKey(PublicKey);

impl RootKey {
    /// Accepts a 32-byte Ed25519 public key as a root, with the checks of [`PublicKey::from_bytes`].
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, Error> {
        PublicKey::from_bytes(bytes).map(RootKey)
    }

    /// The root's key id, which certificates name.
    pub fn key_id(&self) -> KeyId {
        self.0.key_id
    }

    /// The root's Ed25519 key.
    pub fn public_key(&self) -> &PublicKey {
        &self.0
    }
}

impl From<PublicKey> for RootKey {
    fn from(key: PublicKey) -> Self {
        RootKey(key)
    }
}

impl fmt::Display for RootKey {
    /// The one-line text form, `lrk1.<base64url(key id || key)>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.write_line(ROOT_KEY_PREFIX, f)
    }
}

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RootKey({self})")
    }
}

impl FromStr for RootKey {
    type Err = Error;

    /// Parses the one-line text form; surrounding whitespace is ignored.
    fn from_str(s: &str) -> Result<Self, Error> {
        PublicKey::parse_line(s, ROOT_KEY_PREFIX, "a root key line starts with `lrk1.`").map(RootKey)
    }
}

/// The keys an app trusts: signing keys trusted directly, root keys, and the signing keys those roots certified.
///
/// Several signing keys at once let a vendor rotate: tokens signed by a retired key keep verifying as long as its
/// public key stays in the set. With a root key in the set, a new signing key is trusted as soon as its certificate
/// is added ([`KeySet::add_certificate`]), which the issuer hands out beside every token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: Vec<PublicKey>,
    roots: Vec<RootKey>,
    certificates: Vec<Certificate>,
}

/// How a signing key is trusted.
pub(crate) enum Trusted<'a> {
    /// Directly: every signature by it counts.
    Plain(&'a PublicKey),
    /// Through certificates: a signature counts when one of its certificates covers what was signed.
    Certified(&'a PublicKey),
}

impl Trusted<'_> {
    pub(crate) fn key(&self) -> &PublicKey {
        match self {
            Trusted::Plain(key) | Trusted::Certified(key) => key,
        }
    }
}

impl KeySet {
    /// An empty set (every token is then refused with [`Error::UnknownKey`]).
    pub fn new() -> Self {
        KeySet::default()
    }

    /// Parses key lines, for example constants the app embeds: public key lines (`lpk1.`), root key lines (`lrk1.`)
    /// and certificates (`lkc1.`, checked against the roots among the lines, in any order).
    pub fn from_lines<S: AsRef<str>>(lines: &[S]) -> Result<Self, Error> {
        let mut set = KeySet::new();
        let mut certificates = Vec::new();
        for line in lines {
            set.insert_line(line.as_ref().trim(), &mut certificates)?;
        }
        for certificate in certificates {
            set.add_certificate(certificate)?;
        }
        Ok(set)
    }

    /// Parses a key set text: one key line per line (as [`KeySet::from_lines`]); blank lines and lines starting with
    /// `#` are skipped.
    pub fn from_text(text: &str) -> Result<Self, Error> {
        let lines: Vec<&str> =
            text.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')).collect();
        KeySet::from_lines(&lines)
    }

    fn insert_line<'t>(&mut self, line: &'t str, certificates: &mut Vec<&'t str>) -> Result<(), Error> {
        if line.starts_with(ROOT_KEY_PREFIX) {
            self.insert_root(line.parse()?);
        } else if line.starts_with(CERTIFICATE_PREFIX) {
            certificates.push(line);
        } else {
            self.insert(line.parse()?);
        }
        Ok(())
    }

    /// Adds a signing key, trusted directly; adding a key already present does nothing.
    pub fn insert(&mut self, key: PublicKey) {
        if self.get(key.key_id()).is_none() {
            self.keys.push(key);
        }
    }

    /// Adds a root key: signing keys it certifies are trusted once their certificates are added.
    pub fn insert_root(&mut self, root: RootKey) {
        if self.root(root.key_id()).is_none() {
            self.roots.push(root);
        }
    }

    /// Checks a certificate against the roots in the set and, when it verifies, trusts the signing key it certifies
    /// within its window and scope. Adding a certificate already present does nothing. Returns the certificate.
    ///
    /// Errors: [`Error::InvalidCertificate`], or [`Error::UnknownRoot`] when no root in the set signed it.
    pub fn add_certificate(&mut self, text: &str) -> Result<&Certificate, Error> {
        let certificate = UntrustedCertificate::parse(text)?.verify(self)?;
        let at = match self.certificates.iter().position(|c| *c == certificate) {
            Some(at) => at,
            None => {
                self.certificates.push(certificate);
                self.certificates.len() - 1
            }
        };
        Ok(&self.certificates[at])
    }

    /// The directly trusted signing key with this id.
    pub fn get(&self, key_id: KeyId) -> Option<&PublicKey> {
        // A handful of keys at most: a linear scan beats hashing here.
        self.keys.iter().find(|k| k.key_id == key_id)
    }

    /// The root key with this id.
    pub fn root(&self, key_id: KeyId) -> Option<&RootKey> {
        self.roots.iter().find(|r| r.key_id() == key_id)
    }

    /// How the signing key with this id is trusted, if at all. A key trusted directly needs no certificate.
    pub(crate) fn trusted(&self, key_id: KeyId) -> Option<Trusted<'_>> {
        if let Some(key) = self.get(key_id) {
            return Some(Trusted::Plain(key));
        }
        self.certificates.iter().find(|c| c.key_id() == key_id).map(|c| Trusted::Certified(c.public_key()))
    }

    /// Whether one of the certificates of `key_id` covers something it signed at `signed_at` (for a token, also for
    /// `product`). When none does, the failure of the certificate that ends last (the first added of those) is
    /// returned: the one a vendor would renew.
    pub(crate) fn check_certified(
        &self,
        key_id: KeyId,
        signed_at: OffsetDateTime,
        product: Option<&str>,
    ) -> Result<(), Error> {
        let mut last: Option<&Certificate> = None;
        for certificate in self.certificates.iter().filter(|c| c.key_id() == key_id) {
            if certificate.covers(signed_at, product).is_ok() {
                return Ok(());
            }
            if last.is_none_or(|l| certificate.not_after() > l.not_after()) {
                last = Some(certificate);
            }
        }
        match last {
            Some(certificate) => certificate.covers(signed_at, product),
            None => Err(Error::UnknownKey { key_id }),
        }
    }

    /// The directly trusted signing keys, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.iter()
    }

    /// The root keys, in insertion order.
    pub fn roots(&self) -> impl Iterator<Item = &RootKey> {
        self.roots.iter()
    }

    /// The certificates added, in insertion order.
    pub fn certificates(&self) -> impl Iterator<Item = &Certificate> {
        self.certificates.iter()
    }

    /// The number of directly trusted signing keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether nothing at all is trusted: no signing key, no root.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.roots.is_empty()
    }

    /// The key set text: signing keys, then roots, then certificates, one line each.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for k in &self.keys {
            out.push_str(&alloc::format!("{k}\n"));
        }
        for r in &self.roots {
            out.push_str(&alloc::format!("{r}\n"));
        }
        for c in &self.certificates {
            out.push_str(&alloc::format!("{c}\n"));
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
    fn non_canonical_point_encoding_is_refused() {
        // y = p + 3 (little-endian, sign bit clear): the point with y = 3, of large order. ed25519-dalek reduces y
        // mod p and accepts it, so the check must be ours.
        let mut non_canonical = [0xff; 32];
        non_canonical[0] = 0xf0;
        non_canonical[31] = 0x7f;
        let dalek = VerifyingKey::from_bytes(&non_canonical).unwrap();
        assert!(!dalek.is_weak());
        let err = PublicKey::from_bytes(&non_canonical).unwrap_err();
        assert!(matches!(err, Error::InvalidPublicKey { reason } if reason.contains("non-canonical")), "{err:?}");
        // The same with the sign bit set, and the canonical encoding of that point's y is accepted.
        non_canonical[31] = 0xff;
        assert!(VerifyingKey::from_bytes(&non_canonical).is_ok());
        assert_eq!(PublicKey::from_bytes(&non_canonical).unwrap_err().code(), "invalid_public_key");
        let mut canonical = [0u8; 32];
        canonical[0] = 3;
        assert!(PublicKey::from_bytes(&canonical).is_ok());
        // The boundary is p itself: y = p − 1 is canonical (and refused only for its small order), y = p is not.
        let mut p_minus_one = [0xff; 32];
        p_minus_one[0] = 0xec;
        p_minus_one[31] = 0x7f;
        let reason = |bytes: &[u8; 32]| match PublicKey::from_bytes(bytes) {
            Err(Error::InvalidPublicKey { reason }) => reason,
            other => panic!("{other:?}"),
        };
        assert!(reason(&p_minus_one).contains("small-order"));
        let mut p = p_minus_one;
        p[0] = 0xed;
        assert!(reason(&p).contains("non-canonical"));
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
