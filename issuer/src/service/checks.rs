//! The checks every operation shares: whether a license is usable, whether a license fits the token format, and the
//! limits on fingerprints and machine texts; admin token hashing.

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use verifier::format::limits::{MAX_FINGERPRINT_LEN, MAX_TIME};
use verifier::{Claims, Domain, KeyId, LicenseId, TokenKind, UnsignedToken, DOMAIN_BINDING_PREFIX};

use super::error::{invalid, Unusable};
use super::{ServiceError, MAX_MACHINE_TEXT_LEN};
use crate::store::{License, LicenseKind, LicenseStatus};

/// Whether the license may be used at `now`: revoked, then suspended, then expired.
pub(super) fn usable(license: &License, now: OffsetDateTime) -> Result<(), Unusable> {
    match license.status {
        LicenseStatus::Revoked => Err(Unusable::Revoked),
        LicenseStatus::Suspended => Err(Unusable::Suspended),
        LicenseStatus::Active if license.expires_at.is_some_and(|e| e <= now) => Err(Unusable::Expired),
        LicenseStatus::Active => Ok(()),
    }
}

/// Checks a license against the token format's limits (the verifier's own checks), so signing never fails later.
pub(super) fn check_license(license: &License) -> Result<(), ServiceError> {
    if license.metadata.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v)) {
        // PostgreSQL refuses NUL in text and jsonb; refusing it here keeps every backend's answer the same.
        return Err(invalid("metadata", "must not contain NUL (\\u0000) characters"));
    }
    if license.expires_at.is_some_and(|t| t.unix_timestamp() < 0 || t.unix_timestamp() as u64 > MAX_TIME) {
        return Err(invalid("expires_at", "must lie between 1970-01-01 and 9999-12-31"));
    }
    let claims = Claims {
        kind: TokenKind::Offline,
        license_id: LicenseId(license.id.into_bytes()),
        license_key: license.key.clone(),
        email: license.email.clone(),
        product: license.product.clone(),
        entitlements: license.entitlements.clone(),
        max_machines: license.max_machines,
        fingerprint: "check".into(),
        issued_at: license.created_at,
        license_expires_at: license.expires_at,
        refresh_after: None,
        token_expires_at: None,
    };
    UnsignedToken::new(KeyId::from_bytes([0; 8]), &claims).map(|_| ()).map_err(|e| {
        let field = match e.field {
            "license_expires_at" => "expires_at",
            "email" => "email",
            "product" => "product",
            "entitlements" => "entitlements",
            "max_machines" => "max_machines",
            _ => "license",
        };
        invalid(field, e.problem)
    })
}

/// Whether a JSON value holds a NUL character in any string, key or value, at any depth.
fn json_has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(json_has_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v)),
        _ => false,
    }
}

pub(super) fn check_fingerprint(fingerprint: &str) -> Result<(), ServiceError> {
    if fingerprint.is_empty()
        || fingerprint.len() > MAX_FINGERPRINT_LEN
        || !fingerprint.bytes().all(|c| c.is_ascii_graphic())
    {
        return Err(invalid("fingerprint", "must be 1-128 printable ASCII characters without spaces"));
    }
    Ok(())
}

/// The fingerprint an activation of `license` is stored and signed under: a machine's as given (checked), a
/// domain license's binding (`domain:` and the normalised domain, docs/token-format.md §17; the prefix may be given).
/// A machine fingerprint may not start with `domain:`, so a machine license never carries a domain binding.
pub(super) fn bound_fingerprint(license: &License, given: &str) -> Result<String, ServiceError> {
    match license.kind {
        LicenseKind::Domain => {
            let text = given.strip_prefix(DOMAIN_BINDING_PREFIX).unwrap_or(given);
            Domain::parse(text).map(|d| d.binding()).map_err(ServiceError::InvalidDomain)
        }
        LicenseKind::Machine => {
            check_fingerprint(given)?;
            if given.starts_with(DOMAIN_BINDING_PREFIX) {
                return Err(invalid(
                    "fingerprint",
                    "`domain:` starts the bindings of domain licenses; a machine fingerprint cannot start with it",
                ));
            }
            Ok(given.to_string())
        }
    }
}

/// The bindings that would cover the host a validation of a domain license names, most specific first.
pub(super) fn covering_bindings(given: &str) -> Result<Vec<String>, ServiceError> {
    let text = given.strip_prefix(DOMAIN_BINDING_PREFIX).unwrap_or(given);
    Domain::host(text).map(|host| host.covering_bindings()).map_err(ServiceError::InvalidDomain)
}

/// A loose check before the license (and so its kind) is known: a fingerprint or domain of a sane size (an empty
/// one is refused by the license's kind, in its words).
pub(super) fn check_fingerprint_size(given: &str) -> Result<(), ServiceError> {
    if given.len() > 1024 {
        return Err(invalid("fingerprint", "must be 1-128 printable ASCII characters, or a domain name"));
    }
    Ok(())
}

pub(super) fn check_machine_text(field: &'static str, value: Option<&str>) -> Result<(), ServiceError> {
    match value {
        Some(v) if v.len() > MAX_MACHINE_TEXT_LEN || v.chars().any(char::is_control) => {
            Err(invalid(field, "must be at most 128 bytes without control characters"))
        }
        _ => Ok(()),
    }
}

/// SHA-256 of an admin token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random admin token: `iat_` and 32 random bytes in base64url.
pub fn new_admin_token() -> Result<String, ServiceError> {
    use base64::Engine as _;
    use rand_core::{OsRng, RngCore};
    let mut bytes = [0u8; 32];
    OsRng.try_fill_bytes(&mut bytes).map_err(|e| ServiceError::Random(e.to_string()))?;
    Ok(format!("iat_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
