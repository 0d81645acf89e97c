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
