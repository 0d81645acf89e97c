//! Secret signing keys: generation, PKCS#8 PEM text, signing.

use std::fmt;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use rand_core::{OsRng, RngCore};
use time::OffsetDateTime;
use verifier::{Claims, KeyId, LicenseId, PublicKey, UnsignedCertificate, UnsignedRevocationList, UnsignedToken};
use zeroize::Zeroizing;

use crate::KeyError;

/// An Ed25519 signing key. `Debug` shows only its key id; the secret is wiped from memory on drop (ed25519-dalek's
/// `zeroize` feature).
#[derive(Clone)]
pub struct SecretKey {
    key: SigningKey,
    public: PublicKey,
}

impl SecretKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        OsRng.try_fill_bytes(seed.as_mut()).map_err(|e| KeyError::Random(e.to_string()))?;
        SecretKey::from_seed(&seed)
    }

    /// The key for a 32-byte Ed25519 seed (RFC 8032 secret key).
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, KeyError> {
        SecretKey::from_signing_key(SigningKey::from_bytes(seed), None)
    }

    fn from_signing_key(key: SigningKey, path: Option<&std::path::Path>) -> Result<Self, KeyError> {
        let public = PublicKey::from_bytes(key.verifying_key().as_bytes())
            .map_err(|e| KeyError::InvalidKeyFile { path: path.map(Into::into), reason: e.to_string() })?;
        Ok(SecretKey { key, public })
    }

    /// The key id tokens signed with this key carry.
    pub fn key_id(&self) -> KeyId {
        self.public.key_id()
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Signs claims into token text (format v1).
    pub fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        let unsigned = UnsignedToken::new(self.key_id(), claims)?;
        let signature = self.key.sign(unsigned.message());
        Ok(unsigned.finish(&signature.to_bytes()))
    }

    /// Signs, as a root, a certificate of `key` for signing times `not_before..=not_after` (and only `scope`'s
    /// product, when given).
    pub fn certify(
        &self,
        key: &PublicKey,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        scope: Option<&str>,
    ) -> Result<String, KeyError> {
        let unsigned = UnsignedCertificate::new(self.key_id(), key, not_before, not_after, scope)?;
        Ok(unsigned.finish(&self.key.sign(unsigned.message()).to_bytes()))
    }

    /// Signs the revocation list number `sequence` of the `revoked` licenses, made at `issued_at`.
    pub fn sign_revocation_list(
        &self,
        sequence: u64,
        issued_at: OffsetDateTime,
        revoked: &[LicenseId],
    ) -> Result<String, KeyError> {
        let unsigned = UnsignedRevocationList::new(self.key_id(), sequence, issued_at, revoked)?;
        Ok(unsigned.finish(&self.key.sign(unsigned.message()).to_bytes()))
    }

    /// The key file text: an untrusted comment line naming the key id, then PKCS#8 PEM (`openssl pkey` reads it).
    pub fn to_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        // PKCS#8 v1 (seed only): OpenSSL 3.0 refuses the v2 form that also embeds the public key.
        let seed = KeypairBytes { secret_key: self.key.to_bytes(), public_key: None };
        let pem = seed
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError::InvalidKeyFile { path: None, reason: format!("cannot encode PKCS#8: {e}") })?;
        let mut text = Zeroizing::new(format!("untrusted comment: license signing key {} (secret)\n", self.key_id()));
        text.push_str(&pem);
        Ok(text)
    }

    /// Parses key file text made by [`SecretKey::to_pem`], or any PKCS#8 PEM Ed25519 key (`openssl genpkey -algorithm
    /// ed25519`). Lines before the PEM block are comments and are ignored.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        SecretKey::from_pem_at(text, None)
    }

    pub(crate) fn from_pem_at(text: &str, path: Option<&std::path::Path>) -> Result<Self, KeyError> {
        let invalid = |reason: String| KeyError::InvalidKeyFile { path: path.map(Into::into), reason };
        let pem = pem_block(text, "PRIVATE KEY").ok_or_else(|| invalid("no `BEGIN PRIVATE KEY` block".into()))?;
        let key = SigningKey::from_pkcs8_pem(pem).map_err(|e| invalid(format!("not a PKCS#8 Ed25519 key: {e}")))?;
        SecretKey::from_signing_key(key, path)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({}, ..)", self.key_id())
    }
}

/// The public key file text: an untrusted comment line naming the key id and its one-line form, then SPKI PEM.
pub fn public_key_pem(key: &PublicKey) -> Result<String, KeyError> {
    let verifying = key.verifying_key();
    let pem = verifying
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| KeyError::InvalidKeyFile { path: None, reason: format!("cannot encode SPKI: {e}") })?;
    Ok(format!("untrusted comment: license public key {} {key}\n{pem}", key.key_id()))
}

/// Parses an SPKI PEM public key (as written by [`public_key_pem`] or `openssl pkey -pubout`); leading comment lines
/// are ignored.
pub fn public_key_from_pem(text: &str) -> Result<PublicKey, KeyError> {
    let invalid = |reason: String| KeyError::InvalidKeyFile { path: None, reason };
    let pem = pem_block(text, "PUBLIC KEY").ok_or_else(|| invalid("no `BEGIN PUBLIC KEY` block".into()))?;
    let key = VerifyingKey::from_public_key_pem(pem).map_err(|e| invalid(format!("not an SPKI Ed25519 key: {e}")))?;
    PublicKey::from_bytes(key.as_bytes()).map_err(|e| invalid(e.to_string()))
}

/// The PEM block with this label, from its BEGIN line to the end of its END line.
fn pem_block<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)?;
    let stop = start + text[start..].find(&end)? + end.len();
    Some(&text[start..stop])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pem_round_trips_and_names_the_key_id() {
        let key = SecretKey::generate().unwrap();
        let pem = key.to_pem().unwrap();
        assert!(pem.starts_with(&format!("untrusted comment: license signing key {}", key.key_id())));
        assert_eq!(SecretKey::from_pem(&pem).unwrap().key_id(), key.key_id());
        let public = public_key_pem(key.public_key()).unwrap();
        assert!(public.contains("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(public_key_from_pem(&public).unwrap(), *key.public_key());
    }

    #[test]
    fn public_and_secret_files_are_not_confused() {
        let key = SecretKey::generate().unwrap();
        let public = public_key_pem(key.public_key()).unwrap();
        assert!(SecretKey::from_pem(&public).is_err());
        assert!(public_key_from_pem(&key.to_pem().unwrap()).is_err());
    }

    #[test]
    fn garbage_pem_is_an_error() {
        let err = SecretKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap_err();
        assert!(matches!(err, KeyError::InvalidKeyFile { .. }));
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        let key = SecretKey::from_seed(&[7; 32]).unwrap();
        assert_eq!(format!("{key:?}"), format!("SecretKey({}, ..)", key.key_id()));
    }
}
