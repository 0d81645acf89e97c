//! Standard Webhooks signatures (https://www.standardwebhooks.com): `webhook-signature` is `v1,<base64 of
//! HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>")>`, the key being the base64 part of the secret
//! `whsec_<base64 key>`; several space-separated signatures during a secret rotation.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::service::ServiceError;

/// The secret's prefix.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new secret: 32 random bytes.
pub(super) fn new_secret() -> Result<String, ServiceError> {
    use rand_core::{OsRng, RngCore};
    let mut key = [0u8; 32];
    OsRng.try_fill_bytes(&mut key).map_err(|e| ServiceError::Random(e.to_string()))?;
    Ok(format!("{SECRET_PREFIX}{}", STANDARD.encode(key)))
}

/// The `v1,<signature>` of one message with one secret; `None` when the secret is not a `whsec_` secret.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = STANDARD.decode(secret.strip_prefix(SECRET_PREFIX)?).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The example of the Standard Webhooks specification's reference implementations (their test suites).
    #[test]
    fn signs_the_standard_webhooks_reference_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(sign("not a secret", "a", 1, b""), None);
    }

    /// The vector of docs/webhooks.md: a payload in this issuer's format, and the second signature of a rotation.
    #[test]
    fn signs_the_documented_vector() {
        let body = concat!(
            r#"{"created_at":"2026-11-22T10:43:16Z","data":{"from":"active","license":{"created_at":"2026-11-22T10:40:00Z","#,
            r#""email":"ada@example.com","entitlements":["pro"],"expires_at":"2027-11-22T10:40:00Z","#,
            r#""id":"019aab5e-3c1a-7e55-9b1c-6f2d4a8e0b37","key":"JPYXY-P00YY-5RQQ8-4QEDA","max_machines":2,"#,
            r#""metadata":{"order":"1001"},"policy":null,"product":"acme-cad","status":"suspended","#,
            r#""updated_at":"2026-11-22T10:43:16Z"},"license_id":"019aab5e-3c1a-7e55-9b1c-6f2d4a8e0b37"},"#,
            r#""id":42,"type":"license.suspended"}"#,
        );
        assert_eq!(body.len(), 495);
        let new = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let old = "whsec_ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
        assert_eq!(
            sign(new, "42", 1795344196, body.as_bytes()).unwrap(),
            "v1,6HCZxWfQPzE+sAWw8Pr0ALomuFK8uw0dwUXesUDdtV8="
        );
        assert_eq!(
            sign(old, "42", 1795344196, body.as_bytes()).unwrap(),
            "v1,xOmb4PeWel7t0N1GKEBjlVE1rDLbmbGuHacCbbQLf0k="
        );
    }

    #[test]
    fn new_secrets_are_whsec_and_32_bytes() {
        let s = new_secret().unwrap();
        assert_eq!(STANDARD.decode(s.strip_prefix(SECRET_PREFIX).unwrap()).unwrap().len(), 32);
        assert_ne!(s, new_secret().unwrap());
    }
}
