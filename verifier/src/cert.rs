//! Signing-key certificates: a vendor's root key vouches for a signing key over a window of time, optionally for one
//! product only. An app that embeds only the root trusts each new signing key once it holds the key's certificate,
//! which the issuer hands out beside every token, so rotating the signing key needs no app update.
//!
//! Text form (docs/token-format.md §13): `lkc1.` then base64url (no padding) of
//! `version || root key id || public key || not-before || not-after || scope length || scope || signature`.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use base64::Engine as _;
use ed25519_dalek::Signature;
use time::OffsetDateTime;

use crate::format::certificate::{FIXED_LEN, MAX_SCOPE_LEN, MAX_TEXT_LEN};
use crate::format::limits::MAX_TIME;
use crate::format::{B64, CERTIFICATE_LABEL, CERTIFICATE_PREFIX, FORMAT_VERSION, KEY_ID_LEN, SIGNATURE_LEN};
use crate::{Error, KeyId, KeySet, PublicKey};

/// A certificate that parsed but whose root signature has not been checked: only the root's key id may be read.
#[derive(Clone, Debug)]
pub struct UntrustedCertificate {
    /// `CERTIFICATE_LABEL || body || signature`: the signed message is one contiguous slice.
    buf: Vec<u8>,
    root: KeyId,
}

impl UntrustedCertificate {
    /// Parses certificate text. Surrounding ASCII whitespace is ignored, as for tokens; nothing else is.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidCertificate { reason };
        let text = text.trim_ascii();
        if text.len() > MAX_TEXT_LEN {
            return Err(invalid("longer than 512 bytes"));
        }
        let body = text.strip_prefix(CERTIFICATE_PREFIX).ok_or(invalid("not a v1 certificate (expected `lkc1.`)"))?;
        let mut buf = Vec::with_capacity(CERTIFICATE_LABEL.len() + body.len() * 3 / 4 + 1);
        buf.extend_from_slice(CERTIFICATE_LABEL);
        B64.decode_vec(body, &mut buf).map_err(|_| invalid("not canonical base64url without padding"))?;
        let raw = &buf[CERTIFICATE_LABEL.len()..];
        if raw.len() < FIXED_LEN + SIGNATURE_LEN {
            return Err(invalid("too short"));
        }
        if raw[0] != FORMAT_VERSION {
            return Err(invalid("version byte is not 1"));
        }
        let scope_len = usize::from(raw[FIXED_LEN - 1]);
        if scope_len > MAX_SCOPE_LEN {
            return Err(invalid("scope longer than 64 bytes"));
        }
        if raw.len() != FIXED_LEN + scope_len + SIGNATURE_LEN {
            return Err(invalid("length does not match the scope length"));
        }
        let root = KeyId::from_bytes(array(&raw[1..1 + KEY_ID_LEN]));
        Ok(UntrustedCertificate { buf, root })
    }

    /// The key id of the root that (supposedly) signed this certificate.
    pub fn root_key_id(&self) -> KeyId {
        self.root
    }

    /// Checks the root's signature with the root of that id in `keys`, then decodes the fields.
    pub fn verify(&self, keys: &KeySet) -> Result<Certificate, Error> {
        let root = keys.root(self.root).ok_or(Error::UnknownRoot { key_id: self.root })?;
        let (message, signature) = self.buf.split_at(self.buf.len() - SIGNATURE_LEN);
        let invalid = |reason| Error::InvalidCertificate { reason };
        let signature_bytes: [u8; SIGNATURE_LEN] = array(signature);
        root.public_key()
            .verifying_key()
            .verify_strict(message, &Signature::from_bytes(&signature_bytes))
            .map_err(|_| invalid("the root's signature does not verify: it was altered or not made by this root"))?;
        let raw = &message[CERTIFICATE_LABEL.len()..];
        let key = PublicKey::from_bytes(&array(&raw[9..41]))
            .map_err(|_| invalid("the certified key is not a valid Ed25519 public key"))?;
        let not_before = time_at(&raw[41..49]).ok_or(invalid("not-before is after 9999-12-31T23:59:59Z"))?;
        let not_after = time_at(&raw[49..57]).ok_or(invalid("not-after is after 9999-12-31T23:59:59Z"))?;
        if not_before > not_after {
            return Err(invalid("not-before is after not-after"));
        }
        let scope = match &raw[FIXED_LEN..] {
            [] => None,
            scope => Some(product_scope(scope).ok_or(invalid("the scope is not a product name"))?),
        };
        Ok(Certificate { root: self.root, key, not_before, not_after, scope, signature: signature_bytes })
    }
}

/// A signing key certified by a root: the root's signature verified. Only [`UntrustedCertificate::verify`] (through
/// [`KeySet::add_certificate`]) makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    root: KeyId,
    key: PublicKey,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    scope: Option<String>,
    signature: [u8; SIGNATURE_LEN],
}

impl Certificate {
    /// The root that signed it.
    pub fn root_key_id(&self) -> KeyId {
        self.root
    }

    /// The id of the certified signing key.
    pub fn key_id(&self) -> KeyId {
        self.key.key_id()
    }

    /// The certified signing key.
    pub fn public_key(&self) -> &PublicKey {
        &self.key
    }

    /// The earliest signing time covered (inclusive).
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// The latest signing time covered (inclusive).
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The one product the key may sign tokens for; `None`: every product.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// Whether this certificate covers something its key signed at `signed_at`, for `product` when given (a
    /// token's product; a revocation list has none). Order: scope, then the window's start, then its end.
    pub fn covers(&self, signed_at: OffsetDateTime, product: Option<&str>) -> Result<(), Error> {
        if let (Some(scope), Some(product)) = (&self.scope, product) {
            if scope != product {
                return Err(Error::CertificateScope { key_id: self.key_id(), scope: scope.clone() });
            }
        }
        if signed_at < self.not_before {
            return Err(Error::CertificateNotYetValid { key_id: self.key_id(), not_before: self.not_before });
        }
        if signed_at > self.not_after {
            return Err(Error::CertificateExpired { key_id: self.key_id(), not_after: self.not_after });
        }
        Ok(())
    }
}

impl fmt::Display for Certificate {
    /// The certificate text, `lkc1.<base64url(...)>`; the same text it was read from, apart from whitespace.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unsigned =
            UnsignedCertificate::new(self.root, &self.key, self.not_before, self.not_after, self.scope.as_deref())
                .map_err(|_| fmt::Error)?;
        f.write_str(&unsigned.finish(&self.signature))
    }
}

/// A certificate ready to be signed by a root: the signing side of the format (the `keys` crate uses it).
#[derive(Clone, Debug)]
pub struct UnsignedCertificate {
    /// `CERTIFICATE_LABEL || body`.
    message: Vec<u8>,
}

impl UnsignedCertificate {
    /// Encodes a certificate of `key` by the root `root` for signing times `not_before..=not_after` and, with a
    /// `scope`, for that product only. Refuses a window that ends before it starts or lies beyond year 9999, and a
    /// scope that is not a product name.
    pub fn new(
        root: KeyId,
        key: &PublicKey,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        scope: Option<&str>,
    ) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidCertificate { reason };
        let seconds = |t: OffsetDateTime| u64::try_from(t.unix_timestamp()).ok().filter(|s| *s <= MAX_TIME);
        let nb = seconds(not_before).ok_or(invalid("not-before is outside 1970..=9999"))?;
        let na = seconds(not_after).ok_or(invalid("not-after is outside 1970..=9999"))?;
        if nb > na {
            return Err(invalid("not-before is after not-after"));
        }
        let scope = scope.unwrap_or_default().as_bytes();
        if !scope.is_empty() && product_scope(scope).is_none() {
            return Err(invalid("the scope is not a product name"));
        }
        let mut message = Vec::with_capacity(CERTIFICATE_LABEL.len() + FIXED_LEN + scope.len());
        message.extend_from_slice(CERTIFICATE_LABEL);
        message.push(FORMAT_VERSION);
        message.extend_from_slice(&root.to_bytes());
        message.extend_from_slice(&key.to_bytes());
        message.extend_from_slice(&nb.to_be_bytes());
        message.extend_from_slice(&na.to_be_bytes());
        message.push(u8::try_from(scope.len()).map_err(|_| invalid("scope longer than 64 bytes"))?);
        message.extend_from_slice(scope);
        Ok(UnsignedCertificate { message })
    }

    /// The exact bytes the root's Ed25519 signature covers: the certificate label and the body.
    pub fn message(&self) -> &[u8] {
        &self.message
    }

    /// Appends the signature and returns the certificate text.
    pub fn finish(&self, signature: &[u8; SIGNATURE_LEN]) -> String {
        let mut raw = self.message[CERTIFICATE_LABEL.len()..].to_vec();
        raw.extend_from_slice(signature);
        let mut text = String::with_capacity(CERTIFICATE_PREFIX.len() + raw.len() * 4 / 3 + 2);
        text.push_str(CERTIFICATE_PREFIX);
        B64.encode_string(&raw, &mut text);
        text
    }
}

/// A product name as a scope (1–64 bytes of `A–Z a–z 0–9 . _ -`, the claims' product rule).
fn product_scope(bytes: &[u8]) -> Option<String> {
    let ok = (1..=MAX_SCOPE_LEN).contains(&bytes.len())
        && bytes.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    ok.then(|| bytes.iter().map(|&c| char::from(c)).collect())
}

/// A big-endian u64 of seconds since the epoch, within the format's time range.
pub(crate) fn time_at(bytes: &[u8]) -> Option<OffsetDateTime> {
    let seconds = u64::from_be_bytes(array(bytes));
    if seconds > MAX_TIME {
        return None;
    }
    OffsetDateTime::from_unix_timestamp(i64::try_from(seconds).ok()?).ok()
}

/// A fixed-size copy of a slice whose length the caller checked.
pub(crate) fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use alloc::string::ToString;

    use ed25519_dalek::{Signer as _, SigningKey};
    use time::macros::datetime;

    use super::*;
    use crate::RootKey;

    fn root() -> (SigningKey, RootKey) {
        let key = SigningKey::from_bytes(&[1; 32]);
        let root = RootKey::from_bytes(key.verifying_key().as_bytes()).unwrap();
        (key, root)
    }

    fn signing_key() -> PublicKey {
        PublicKey::from_bytes(SigningKey::from_bytes(&[2; 32]).verifying_key().as_bytes()).unwrap()
    }

    fn certify(root_key: &SigningKey, root: &RootKey, scope: Option<&str>) -> String {
        let unsigned = UnsignedCertificate::new(
            root.key_id(),
            &signing_key(),
            datetime!(2026-01-01 0:00 UTC),
            datetime!(2027-01-01 0:00 UTC),
            scope,
        )
        .unwrap();
        unsigned.finish(&root_key.sign(unsigned.message()).to_bytes())
    }

    #[test]
    fn a_certificate_round_trips_and_is_at_most_200_characters_unscoped() {
        let (key, root) = root();
        let text = certify(&key, &root, None);
        assert_eq!(text.len(), 168);
        let mut keys = KeySet::new();
        keys.insert_root(root);
        let certificate = keys.add_certificate(&text).unwrap().clone();
        assert_eq!(certificate.to_string(), text);
        assert_eq!(certificate.key_id(), signing_key().key_id());
        assert_eq!(certificate.scope(), None);
        let scoped = certify(&key, &keys.roots().next().unwrap().clone(), Some("acme-cad"));
        assert_eq!(scoped.len(), 179);
        assert_eq!(keys.add_certificate(&scoped).unwrap().scope(), Some("acme-cad"));
    }

    #[test]
    fn a_certificate_of_an_unknown_root_or_altered_is_refused() {
        let (key, root) = root();
        let text = certify(&key, &root, None);
        assert_eq!(KeySet::new().add_certificate(&text).unwrap_err().code(), "unknown_root");
        let mut keys = KeySet::new();
        keys.insert_root(root);
        let mut raw = B64.decode(text.strip_prefix("lkc1.").unwrap()).unwrap();
        raw[50] ^= 1; // inside not-after
        let altered = alloc::format!("lkc1.{}", B64.encode(raw));
        assert_eq!(keys.add_certificate(&altered).unwrap_err().code(), "invalid_certificate");
        for bad in ["", "lkc1.", "lkc2.AAAA", "lkc1.@@@@", &alloc::format!("{text}A")] {
            assert_eq!(keys.add_certificate(bad).unwrap_err().code(), "invalid_certificate", "{bad}");
        }
    }

    #[test]
    fn the_window_and_scope_are_checked_in_order() {
        let (key, root) = root();
        let mut keys = KeySet::new();
        keys.insert_root(root.clone());
        let c = keys.add_certificate(&certify(&key, &root, Some("acme-cad"))).unwrap().clone();
        assert!(c.covers(datetime!(2026-01-01 0:00 UTC), Some("acme-cad")).is_ok());
        assert!(c.covers(datetime!(2027-01-01 0:00 UTC), None).is_ok());
        assert_eq!(c.covers(datetime!(2027-01-01 0:00:01 UTC), None).unwrap_err().code(), "certificate_expired");
        assert_eq!(c.covers(datetime!(2025-12-31 23:59:59 UTC), None).unwrap_err().code(), "certificate_not_yet_valid");
        let err = c.covers(datetime!(2030-01-01 0:00 UTC), Some("acme-viewer")).unwrap_err();
        assert_eq!(err.code(), "certificate_scope", "scope before window");
    }

    #[test]
    fn bad_fields_are_refused_when_signing() {
        let (_, root) = root();
        let at = datetime!(2026-01-01 0:00 UTC);
        let key = signing_key();
        let new = |nb, na, scope: Option<&str>| UnsignedCertificate::new(root.key_id(), &key, nb, na, scope);
        assert!(new(at, at - time::Duration::SECOND, None).is_err());
        assert!(new(datetime!(1969-12-31 23:59:59 UTC), at, None).is_err());
        assert!(new(at, at, Some("not a product")).is_err());
        assert!(new(at, at, Some(&"p".repeat(65))).is_err());
        assert!(new(at, at, Some(&"p".repeat(64))).is_ok());
        assert!(new(at, at, Some("")).is_ok(), "an empty scope is no scope");
    }
}
