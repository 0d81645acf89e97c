//! The constants of token format v1, in one place. docs/token-format.md is the prose version of this file.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::engine::GeneralPurpose;

/// Base64url without padding; the engine refuses padding and non-zero trailing bits, so every byte string has exactly
/// one accepted text form.
pub(crate) const B64: GeneralPurpose = URL_SAFE_NO_PAD;

/// The format version this crate reads and writes.
pub const FORMAT_VERSION: u8 = 1;

/// Text prefix of a v1 token: `lic`, the version in decimal, and a dot.
pub const TOKEN_PREFIX: &str = "lic1.";

/// Text prefix of a v1 public key line.
pub const PUBLIC_KEY_PREFIX: &str = "lpk1.";

/// Text prefix of a v1 root key line: the vendor key that certifies signing keys, embedded in apps.
pub const ROOT_KEY_PREFIX: &str = "lrk1.";

/// Text prefix of a v1 signing-key certificate.
pub const CERTIFICATE_PREFIX: &str = "lkc1.";

/// Text prefix of a v1 revocation list.
pub const REVOCATION_LIST_PREFIX: &str = "lrl1.";

/// Domain-separation label a root signs in front of a certificate's body.
pub const CERTIFICATE_LABEL: &[u8] = b"license-key-certificate/v1\0";

/// Domain-separation label a signing key signs in front of a revocation list's body.
pub const REVOCATION_LIST_LABEL: &[u8] = b"license-revocation-list/v1\0";

/// Domain-separation label hashed in front of a license id to make its 8-byte revocation list entry.
pub const REVOKED_ID_LABEL: &[u8] = b"license-revoked-id/v1\0";

/// Domain-separation label signed in front of the header and claims.
pub const SIGNING_LABEL: &[u8] = b"license-token/v1\0";

/// Domain-separation label hashed in front of a public key to derive its key id.
pub const KEY_ID_LABEL: &[u8] = b"license-key-id/v1\0";

/// Length of a key id in bytes.
pub const KEY_ID_LEN: usize = 8;

/// Header length: version byte + key id.
pub const HEADER_LEN: usize = 1 + KEY_ID_LEN;

/// Ed25519 signature length.
pub const SIGNATURE_LEN: usize = 64;

/// Longest token text a verifier accepts, in bytes after trimming, prefix included. The largest claims the limits
/// allow make a 1,561-byte token, so the cap leaves room without letting a caller feed megabytes to the decoder.
pub const MAX_TOKEN_LEN: usize = 2048;

/// Certificate layout (format v1): version, root key id, certified key, not-before, not-after, scope length; then
/// the scope and the root's signature.
pub mod certificate {
    /// Bytes before the scope: version (1), root key id (8), public key (32), not-before (8), not-after (8),
    /// scope length (1).
    pub const FIXED_LEN: usize = 58;
    /// Longest product scope, in bytes (the longest product name).
    pub const MAX_SCOPE_LEN: usize = super::limits::MAX_PRODUCT_LEN;
    /// Longest certificate text accepted, in bytes after trimming (a 64-byte scope makes 253 characters).
    pub const MAX_TEXT_LEN: usize = 512;
}

/// Revocation list layout (format v1): version, signing key id, sequence, issued-at, count; then the sorted entries
/// and the signature.
pub mod revocation {
    /// Bytes before the entries: version (1), key id (8), sequence (8), issued-at (8), count (4).
    pub const FIXED_LEN: usize = 29;
    /// Bytes per revoked license: a truncated hash of its id.
    pub const ENTRY_LEN: usize = 8;
    /// Most entries a list may hold.
    pub const MAX_ENTRIES: usize = 1_000_000;
    /// Longest list text accepted, in bytes after trimming: the text of a list of [`MAX_ENTRIES`] entries.
    pub const MAX_TEXT_LEN: usize = 5 + (4 * (FIXED_LEN + ENTRY_LEN * MAX_ENTRIES + 64)).div_ceil(3);
}

/// Limits on claims; a signer refuses claims that break them and a verifier rejects tokens that carry them.
pub mod limits {
    /// License key: 1..=64 bytes of printable ASCII (no space).
    pub const MAX_LICENSE_KEY_LEN: usize = 64;
    /// Email: 3..=254 bytes of UTF-8 with an `@`, no whitespace or control characters.
    pub const MAX_EMAIL_LEN: usize = 254;
    /// Product: 1..=64 bytes of `A-Z a-z 0-9 . _ -`.
    pub const MAX_PRODUCT_LEN: usize = 64;
    /// At most this many entitlements, all different.
    pub const MAX_ENTITLEMENTS: usize = 16;
    /// Entitlement name: 1..=32 bytes of `A-Z a-z 0-9 . _ - :`.
    pub const MAX_ENTITLEMENT_LEN: usize = 32;
    /// Fingerprint: 1..=128 bytes of printable ASCII (no space).
    pub const MAX_FINGERPRINT_LEN: usize = 128;
    /// Latest representable time: 9999-12-31T23:59:59Z, in seconds since the Unix epoch.
    pub const MAX_TIME: u64 = 253_402_300_799;
}
