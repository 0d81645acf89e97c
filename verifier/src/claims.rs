//! The claims a token carries, their limits, and their postcard encoding.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::format::limits::*;
use crate::{ClaimsError, Error};

/// Whether a token is for an online app (refreshes, has a hard expiry) or an air-gapped one (no token expiry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TokenKind {
    /// Issued to an online app: `refresh_after` and `token_expires_at` are set. Wire value 0.
    Online,
    /// Issued to an air-gapped machine: neither `refresh_after` nor `token_expires_at` is set. Wire value 1.
    Offline,
}

/// A license's id: 16 bytes, shown as a lowercase hyphenated UUID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LicenseId(pub [u8; 16]);

impl fmt::Display for LicenseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for LicenseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LicenseId({self})")
    }
}

impl FromStr for LicenseId {
    type Err = ClaimsError;

    /// Parses the hyphenated UUID form (either case), or 32 hex digits without hyphens.
    fn from_str(s: &str) -> Result<Self, ClaimsError> {
        let bad = ClaimsError {
            field: "license_id",
            problem: "expected a UUID such as 0190f5a4-7c1e-7a3b-9c4d-5e6f708192a3",
        };
        let hyphenated = s.len() == 36;
        if hyphenated && [8, 13, 18, 23].iter().any(|&i| s.as_bytes()[i] != b'-') {
            return Err(bad);
        }
        let digits: Vec<u8> = s.bytes().filter(|&c| !(hyphenated && c == b'-')).collect();
        if digits.len() != 32 {
            return Err(bad);
        }
        let mut id = [0u8; 16];
        for (i, pair) in digits.chunks_exact(2).enumerate() {
            let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
            id[i] = (hex(pair[0]).ok_or(bad)? << 4) | hex(pair[1]).ok_or(bad)?;
        }
        Ok(LicenseId(id))
    }
}

/// What a token says about a license and the machine it is bound to.
///
/// This is the signer's input and, inside [`crate::License`], the verifier's output. Times are whole seconds since
/// the Unix epoch on the wire; sub-second parts are dropped when encoding. The struct is exhaustive on purpose: a new
/// claim is a new format version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// Online or offline token.
    pub kind: TokenKind,
    /// The license's id in the issuer's store.
    pub license_id: LicenseId,
    /// The license key the customer was given.
    pub license_key: String,
    /// The licensee's email.
    pub email: String,
    /// The product the license is for; the app checks it against its own.
    pub product: String,
    /// Feature names the license unlocks, all different.
    pub entitlements: Vec<String>,
    /// Machine slots of the license (how many machines it may be active on).
    pub max_machines: u32,
    /// Fingerprint of the one machine this token is bound to.
    pub fingerprint: String,
    /// When the issuer signed the token (issuer's clock).
    pub issued_at: OffsetDateTime,
    /// When the license ends; `None` for a perpetual license.
    pub license_expires_at: Option<OffsetDateTime>,
    /// When an online app should fetch a fresh token; `None` for offline tokens.
    pub refresh_after: Option<OffsetDateTime>,
    /// Hard end of this token (refresh-after plus the offline grace); `None` for offline tokens.
    pub token_expires_at: Option<OffsetDateTime>,
}

impl Claims {
    /// Whether the license grants this entitlement.
    pub fn has_entitlement(&self, name: &str) -> bool {
        self.entitlements.iter().any(|e| e == name)
    }
}

/// The claims exactly as postcard encodes them; field order is the wire order.
#[derive(Serialize, Deserialize)]
pub(crate) struct WireClaims {
    kind: TokenKind,
    license_id: LicenseId,
    license_key: String,
    email: String,
    product: String,
    entitlements: Vec<String>,
    max_machines: u32,
    fingerprint: String,
    issued_at: u64,
    license_expires_at: Option<u64>,
    refresh_after: Option<u64>,
    token_expires_at: Option<u64>,
}

fn err(field: &'static str, problem: &'static str) -> ClaimsError {
    ClaimsError { field, problem }
}

fn to_secs(field: &'static str, t: OffsetDateTime) -> Result<u64, ClaimsError> {
    u64::try_from(t.unix_timestamp())
        .ok()
        .filter(|&s| s <= MAX_TIME)
        .ok_or(err(field, "must lie between 1970-01-01 and 9999-12-31"))
}

fn from_secs(s: u64) -> OffsetDateTime {
    // Callers check s <= MAX_TIME first, which is inside time's range; the fallback is never taken.
    OffsetDateTime::from_unix_timestamp(s as i64).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn is_graphic_ascii(s: &str) -> bool {
    s.bytes().all(|c| c.is_ascii_graphic())
}

fn is_name(s: &str, extra: &[u8]) -> bool {
    s.bytes().all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
}

/// Checks every limit of the format (docs/token-format.md, "Limits") on the wire form.
fn check(w: &WireClaims) -> Result<(), ClaimsError> {
    if w.license_key.is_empty() || w.license_key.len() > MAX_LICENSE_KEY_LEN || !is_graphic_ascii(&w.license_key) {
        return Err(err("license_key", "must be 1-64 printable ASCII characters without spaces"));
    }
    if w.email.len() < 3
        || w.email.len() > MAX_EMAIL_LEN
        || !w.email.contains('@')
        || w.email.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(err("email", "must be 3-254 bytes with an @ and no whitespace or control characters"));
    }
    if w.product.is_empty() || w.product.len() > MAX_PRODUCT_LEN || !is_name(&w.product, b"._-") {
        return Err(err("product", "must be 1-64 characters of A-Z a-z 0-9 . _ -"));
    }
    if w.entitlements.len() > MAX_ENTITLEMENTS {
        return Err(err("entitlements", "at most 16 entitlements"));
    }
    for (i, e) in w.entitlements.iter().enumerate() {
        if e.is_empty() || e.len() > MAX_ENTITLEMENT_LEN || !is_name(e, b"._-:") {
            return Err(err("entitlements", "each must be 1-32 characters of A-Z a-z 0-9 . _ - :"));
        }
        if w.entitlements[..i].contains(e) {
            return Err(err("entitlements", "must not repeat a name"));
        }
    }
    if w.max_machines == 0 {
        return Err(err("max_machines", "must be at least 1"));
    }
    if w.fingerprint.is_empty() || w.fingerprint.len() > MAX_FINGERPRINT_LEN || !is_graphic_ascii(&w.fingerprint) {
        return Err(err("fingerprint", "must be 1-128 printable ASCII characters without spaces"));
    }
    let times = [
        ("issued_at", Some(w.issued_at)),
        ("license_expires_at", w.license_expires_at),
        ("refresh_after", w.refresh_after),
        ("token_expires_at", w.token_expires_at),
    ];
    if let Some((field, _)) = times.iter().find(|(_, t)| t.is_some_and(|t| t > MAX_TIME)) {
        return Err(err(field, "must not be later than 9999-12-31T23:59:59Z"));
    }
    match (w.kind, w.refresh_after, w.token_expires_at) {
        (TokenKind::Online, Some(refresh), Some(expiry)) => {
            if refresh < w.issued_at {
                return Err(err("refresh_after", "must not be before issued_at"));
            }
            if expiry < refresh {
                return Err(err("token_expires_at", "must not be before refresh_after"));
            }
        }
        (TokenKind::Online, _, _) => {
            return Err(err("token_expires_at", "an online token needs refresh_after and token_expires_at"));
        }
        (TokenKind::Offline, None, None) => {}
        (TokenKind::Offline, _, _) => {
            return Err(err("token_expires_at", "an offline token has neither refresh_after nor token_expires_at"));
        }
    }
    Ok(())
}

impl WireClaims {
    pub(crate) fn from_claims(c: &Claims) -> Result<Self, ClaimsError> {
        let opt = |field, t: Option<OffsetDateTime>| t.map(|t| to_secs(field, t)).transpose();
        let w = WireClaims {
            kind: c.kind,
            license_id: c.license_id,
            license_key: c.license_key.clone(),
            email: c.email.clone(),
            product: c.product.clone(),
            entitlements: c.entitlements.clone(),
            max_machines: c.max_machines,
            fingerprint: c.fingerprint.clone(),
            issued_at: to_secs("issued_at", c.issued_at)?,
            license_expires_at: opt("license_expires_at", c.license_expires_at)?,
            refresh_after: opt("refresh_after", c.refresh_after)?,
            token_expires_at: opt("token_expires_at", c.token_expires_at)?,
        };
        check(&w)?;
        Ok(w)
    }

    fn into_claims(self) -> Claims {
        Claims {
            kind: self.kind,
            license_id: self.license_id,
            license_key: self.license_key,
            email: self.email,
            product: self.product,
            entitlements: self.entitlements,
            max_machines: self.max_machines,
            fingerprint: self.fingerprint,
            issued_at: from_secs(self.issued_at),
            license_expires_at: self.license_expires_at.map(from_secs),
            refresh_after: self.refresh_after.map(from_secs),
            token_expires_at: self.token_expires_at.map(from_secs),
        }
    }
}

/// Encodes claims to their postcard payload, refusing any that break the limits.
pub(crate) fn encode(claims: &Claims) -> Result<Vec<u8>, ClaimsError> {
    let wire = WireClaims::from_claims(claims)?;
    postcard::to_allocvec(&wire).map_err(|_| err("claims", "cannot be encoded"))
}

/// Decodes a postcard payload whose signature has already been verified.
///
/// Rejects trailing bytes, non-canonical encodings (overlong varints; postcard alone accepts them) and claims that
/// break the limits, so every accepted claim set has exactly one byte form.
pub(crate) fn decode(payload: &[u8]) -> Result<Claims, Error> {
    let (wire, rest) =
        postcard::take_from_bytes::<WireClaims>(payload).map_err(|_| Error::malformed("the claims do not decode"))?;
    if !rest.is_empty() {
        return Err(Error::malformed("trailing bytes after the claims"));
    }
    check(&wire).map_err(|e| Error::malformed(e.problem))?;
    let canonical = postcard::to_allocvec(&wire).map_err(|_| Error::malformed("the claims do not encode"))?;
    if canonical != payload {
        return Err(Error::malformed("the claims are not canonically encoded"));
    }
    Ok(wire.into_claims())
}
