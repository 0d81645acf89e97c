//! Token text: parsing into an untrusted token, signature verification into a trusted [`License`], and encoding.

use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Deref;

use base64::Engine as _;
use ed25519_dalek::Signature;

use crate::claims::{self, Claims};
use crate::format::*;
use crate::key::Trusted;
use crate::{ClaimsError, Error, KeyId, KeySet};

/// A token that parsed but whose signature has not been checked: only its version and key id may be read.
///
/// The bytes are kept behind the signing label so the signed message is one contiguous slice: verification then
/// needs no copy.
#[derive(Clone, Debug)]
pub struct UntrustedToken {
    /// `SIGNING_LABEL || header || claims || signature`.
    buf: Vec<u8>,
    key_id: KeyId,
}

impl UntrustedToken {
    /// Parses token text. Surrounding ASCII whitespace (a trailing newline in a file) is ignored; nothing else is.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let text = text.trim_ascii();
        if text.len() > MAX_TOKEN_LEN {
            return Err(Error::malformed("longer than 2048 bytes"));
        }
        let (version, body) = split_prefix(text)?;
        if version != u32::from(FORMAT_VERSION) {
            return Err(Error::UnsupportedVersion { version });
        }
        let mut buf = Vec::with_capacity(SIGNING_LABEL.len() + body.len() * 3 / 4 + 1);
        buf.extend_from_slice(SIGNING_LABEL);
        B64.decode_vec(body, &mut buf).map_err(|_| Error::malformed("not canonical base64url without padding"))?;
        let raw = &buf[SIGNING_LABEL.len()..];
        if raw.len() < HEADER_LEN + 1 + SIGNATURE_LEN {
            return Err(Error::malformed("too short"));
        }
        if raw[0] != FORMAT_VERSION {
            return Err(Error::malformed("header version does not match the prefix"));
        }
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&raw[1..HEADER_LEN]);
        Ok(UntrustedToken { buf, key_id: KeyId::from_bytes(id) })
    }

    /// The id of the key that (supposedly) signed this token.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Decodes the claims **without** checking the signature, for inspection tools (showing what a refused token
    /// says). Nothing may be decided on them: use [`UntrustedToken::verify`].
    pub fn untrusted_claims(&self) -> Result<Claims, Error> {
        claims::decode(&self.buf[SIGNING_LABEL.len() + HEADER_LEN..self.buf.len() - SIGNATURE_LEN])
    }

    /// Checks the signature with the trusted key named in the header, then decodes the claims; for a key trusted
    /// through a certificate, also that a certificate covers the token's `issued_at` and product.
    ///
    /// Uses `verify_strict`: non-canonical signatures and small-order points are refused, so a token has exactly one
    /// valid signature.
    pub fn verify(&self, keys: &KeySet) -> Result<License, Error> {
        let trusted = keys.trusted(self.key_id).ok_or(Error::UnknownKey { key_id: self.key_id })?;
        let (message, signature) = self.buf.split_at(self.buf.len() - SIGNATURE_LEN);
        let signature = Signature::from_slice(signature).map_err(|_| Error::BadSignature)?;
        trusted.key().verifying_key().verify_strict(message, &signature).map_err(|_| Error::BadSignature)?;
        let claims = claims::decode(&message[SIGNING_LABEL.len() + HEADER_LEN..])?;
        if let Trusted::Certified(_) = trusted {
            keys.check_certified(self.key_id, claims.issued_at, Some(&claims.product))?;
        }
        Ok(License { claims, key_id: self.key_id })
    }
}

/// Splits `lic<version>.<body>`; a missing or non-decimal version is malformed, any other number is reported as such.
fn split_prefix(text: &str) -> Result<(u32, &str), Error> {
    let rest = text.strip_prefix("lic").ok_or(Error::malformed("not a license token (expected `lic1.`)"))?;
    let (digits, body) = rest.split_once('.').ok_or(Error::malformed("not a license token (expected `lic1.`)"))?;
    let canonical = !digits.is_empty() && digits.len() <= 9 && digits.bytes().all(|c| c.is_ascii_digit());
    if !canonical || (digits.len() > 1 && digits.starts_with('0')) {
        return Err(Error::malformed("not a license token (expected `lic1.`)"));
    }
    let version = digits.parse().map_err(|_| Error::malformed("not a license token (expected `lic1.`)"))?;
    Ok((version, body))
}

/// Claims whose signature verified against a trusted key. Only [`UntrustedToken::verify`] makes one.
///
/// Dereferences to [`Claims`]; whether the license is usable *now* on *this* machine is the job of
/// [`crate::Validation`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct License {
    claims: Claims,
    key_id: KeyId,
}

impl License {
    /// The id of the key that signed the token.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The verified claims.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// Takes the verified claims out.
    pub fn into_claims(self) -> Claims {
        self.claims
    }
}

impl Deref for License {
    type Target = Claims;

    fn deref(&self) -> &Claims {
        &self.claims
    }
}

/// Header and claims ready to be signed: the signing side of the format (the `keys` crate uses it).
///
/// Sign [`UnsignedToken::message`] with Ed25519 and pass the signature to [`UnsignedToken::finish`].
#[derive(Clone, Debug)]
pub struct UnsignedToken {
    /// `SIGNING_LABEL || header || claims`.
    message: Vec<u8>,
}

impl UnsignedToken {
    /// Encodes the header for `key_id` and the claims, refusing claims that break the format's limits.
    pub fn new(key_id: KeyId, claims: &Claims) -> Result<Self, ClaimsError> {
        let payload = claims::encode(claims)?;
        let mut message = Vec::with_capacity(SIGNING_LABEL.len() + HEADER_LEN + payload.len());
        message.extend_from_slice(SIGNING_LABEL);
        message.push(FORMAT_VERSION);
        message.extend_from_slice(&key_id.to_bytes());
        message.extend_from_slice(&payload);
        Ok(UnsignedToken { message })
    }

    /// The exact bytes the Ed25519 signature covers: the signing label, the header and the claims.
    pub fn message(&self) -> &[u8] {
        &self.message
    }

    /// Appends the signature and returns the token text.
    pub fn finish(self, signature: &[u8; SIGNATURE_LEN]) -> String {
        let mut raw = self.message;
        raw.extend_from_slice(signature);
        let mut text = String::with_capacity(TOKEN_PREFIX.len() + raw.len() * 4 / 3 + 2);
        text.push_str(TOKEN_PREFIX);
        B64.encode_string(&raw[SIGNING_LABEL.len()..], &mut text);
        text
    }
}
