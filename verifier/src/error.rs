//! Errors of token verification and of the local helpers around it.

use core::fmt;

use time::OffsetDateTime;

use crate::KeyId;

/// Why a license token, a public key or a local helper was refused.
///
/// Every variant maps to a stable machine-readable [`Error::code`], the same string other-language verifiers and the
/// issuer's HTTP API use, so an app can branch on it without matching on message text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The text is not a well-formed v1 token (bad prefix, base64, length, header or claims encoding).
    #[error("the license token is malformed ({reason}); copy the whole token again")]
    Malformed {
        /// What exactly is wrong, for logs and support.
        reason: &'static str,
    },
    /// The token declares a format version this verifier does not implement.
    #[error("license token format version {version} is not supported by this verifier; update the app")]
    UnsupportedVersion {
        /// The version the token declares.
        version: u32,
    },
    /// The token was signed by a key that is not in the app's trusted key set.
    #[error("the license token was signed by unknown key {key_id}; update the app's trusted public keys")]
    UnknownKey {
        /// Key id named in the token header.
        key_id: KeyId,
    },
    /// The signature does not verify: the token was altered or not issued by the vendor.
    #[error("the license token's signature is invalid: it was altered or not issued by the vendor")]
    BadSignature,
    /// The token is for another product.
    #[error("the license token is for product `{found}`, not `{expected}`")]
    WrongProduct {
        /// The product the app expects.
        expected: alloc::string::String,
        /// The product named in the token.
        found: alloc::string::String,
    },
    /// The token is bound to another machine (for example it was copied from one).
    #[error("the license token is bound to another machine; activate this machine instead of copying a token")]
    WrongMachine,
    /// The token is not bound to a domain that covers the app's host: another domain, a machine, or a malformed
    /// binding.
    #[error("the license token is bound to another domain (or to a machine, not a domain)")]
    WrongDomain,
    /// The license itself has expired.
    #[error("the license expired at {expired_at}; renew it with the vendor")]
    LicenseExpired {
        /// When the license expired.
        expired_at: OffsetDateTime,
    },
    /// The token's offline grace period is over; an online app must refresh it.
    #[error(
        "the license token expired at {expired_at} (offline grace period over); connect to the internet to refresh it"
    )]
    TokenExpired {
        /// When the token expired.
        expired_at: OffsetDateTime,
    },
    /// The token was issued in the future relative to the given time, beyond the leeway: the clock is wrong.
    #[error("the license token is not valid before {issued_at}; check this machine's date and time")]
    NotYetValid {
        /// When the token was issued (issuer's clock).
        issued_at: OffsetDateTime,
    },
    /// The machine's clock is earlier than a time already seen on this machine, beyond the leeway.
    #[error(
        "this machine's clock was set back (now {now}, but {last_seen} was already seen); correct the date and time"
    )]
    ClockRolledBack {
        /// The latest trusted time recorded on this machine.
        last_seen: OffsetDateTime,
        /// The time the clock reports now.
        now: OffsetDateTime,
    },
    /// A public key (line or key set) could not be parsed or is not acceptable.
    #[error("invalid public key: {reason}")]
    InvalidPublicKey {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A signing-key certificate cannot be used: malformed, its signature does not verify, or its fields break a rule.
    #[error("the signing-key certificate is not valid ({reason}); get it again from the vendor")]
    InvalidCertificate {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A certificate is signed by a root key the app does not trust.
    #[error(
        "the certificate is signed by root key {key_id}, which this app does not trust; embed the vendor's root key"
    )]
    UnknownRoot {
        /// The root key id the certificate names.
        key_id: KeyId,
    },
    /// The token (or revocation list) was signed after its key's certificate had ended.
    #[error("key {key_id} signed this after its certificate ended at {not_after}")]
    CertificateExpired {
        /// The signing key.
        key_id: KeyId,
        /// The end of the certificate's window.
        not_after: OffsetDateTime,
    },
    /// The token (or revocation list) was signed before its key's certificate began.
    #[error("key {key_id} signed this before its certificate began at {not_before}")]
    CertificateNotYetValid {
        /// The signing key.
        key_id: KeyId,
        /// The start of the certificate's window.
        not_before: OffsetDateTime,
    },
    /// The token is for a product its key's certificate does not cover.
    #[error("key {key_id} is certified for product `{scope}` only, not for this token's product")]
    CertificateScope {
        /// The signing key.
        key_id: KeyId,
        /// The product the certificate covers.
        scope: alloc::string::String,
    },
    /// The license is on the vendor's revocation list.
    #[error("the license was revoked by the vendor")]
    LicenseRevoked,
    /// A revocation list cannot be used: malformed, or its signature does not verify.
    #[error("the revocation list is not valid ({reason}); get it again from the vendor")]
    InvalidRevocationList {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A revocation list is older than the one the app already holds.
    #[error(
        "revocation list {offered} is older than list {held}, which this app already holds; keeping the newer one"
    )]
    StaleRevocationList {
        /// The sequence number of the list held.
        held: u64,
        /// The sequence number of the list offered.
        offered: u64,
    },
    /// An activation request or deactivation code is not valid (wrong kind, version, length or content).
    #[error("the code is not valid: {reason}{}", if crate::offline::is_wrong_kind(reason) { "" } else { "; ask for a new one" })]
    InvalidCode {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An activation request or deactivation code fails its check characters: it was mistyped.
    #[error("the code was mistyped (its check characters do not match); compare it character by character")]
    MistypedCode,
    /// Claims given to the encoder break a limit of the format.
    #[error(transparent)]
    InvalidClaims(#[from] ClaimsError),
    /// Reading or writing a local state file (install id, clock guard) failed.
    #[cfg(feature = "std")]
    #[error("cannot use {}: {source}", path.display())]
    Io {
        /// The file involved.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A stable, machine-readable code for this error (snake_case), listed in docs/token-format.md.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Malformed { .. } => "malformed",
            Error::UnsupportedVersion { .. } => "unsupported_version",
            Error::UnknownKey { .. } => "unknown_key",
            Error::BadSignature => "bad_signature",
            Error::WrongProduct { .. } => "wrong_product",
            Error::WrongMachine => "wrong_machine",
            Error::WrongDomain => "wrong_domain",
            Error::LicenseExpired { .. } => "license_expired",
            Error::TokenExpired { .. } => "token_expired",
            Error::NotYetValid { .. } => "not_yet_valid",
            Error::ClockRolledBack { .. } => "clock_rolled_back",
            Error::InvalidPublicKey { .. } => "invalid_public_key",
            Error::InvalidCertificate { .. } => "invalid_certificate",
            Error::UnknownRoot { .. } => "unknown_root",
            Error::CertificateExpired { .. } => "certificate_expired",
            Error::CertificateNotYetValid { .. } => "certificate_not_yet_valid",
            Error::CertificateScope { .. } => "certificate_scope",
            Error::LicenseRevoked => "license_revoked",
            Error::InvalidRevocationList { .. } => "invalid_revocation_list",
            Error::StaleRevocationList { .. } => "stale_revocation_list",
            Error::InvalidCode { .. } => "invalid_code",
            Error::MistypedCode => "mistyped_code",
            Error::InvalidClaims(_) => "invalid_claims",
            #[cfg(feature = "std")]
            Error::Io { .. } => "io",
        }
    }

    pub(crate) fn malformed(reason: &'static str) -> Self {
        Error::Malformed { reason }
    }
}

/// A claim breaks one of the format's limits (see docs/token-format.md, "Limits").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimsError {
    /// The claim's name as in the spec, e.g. `email`.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl fmt::Display for ClaimsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid claim `{}`: {}", self.field, self.problem)
    }
}

impl core::error::Error for ClaimsError {}
