//! What makes a verified license usable here and now: product, machine binding and time checks.

use alloc::string::String;

use time::{Duration, OffsetDateTime};

use crate::{Error, KeySet, License, UntrustedToken};

/// Default leeway for clock differences between issuer and app, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 60;

/// The checks an app applies after the signature verified. Build with [`Validation::new`] and adjust fields.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Validation {
    /// The product this app is. A token for another product fails with [`Error::WrongProduct`]. Required.
    pub product: String,
    /// This machine's fingerprint. A token bound to another machine fails with [`Error::WrongMachine`].
    /// Default: the value given to `new`. `None` skips the machine check; only for server-side inspection.
    pub fingerprint: Option<String>,
    /// Seconds of clock difference tolerated on every time check. Default: [`DEFAULT_LEEWAY_SECS`] (60).
    pub leeway_secs: u64,
}

impl Validation {
    /// Checks for `product` on the machine with `fingerprint`, with the default leeway.
    pub fn new(product: impl Into<String>, fingerprint: impl Into<String>) -> Self {
        Validation { product: product.into(), fingerprint: Some(fingerprint.into()), leeway_secs: DEFAULT_LEEWAY_SECS }
    }

    /// Checks a verified license at `now`.
    ///
    /// Order: product, machine, not-yet-valid, license expiry, token expiry; the first failure is returned, so an
    /// expired license is reported as such even when its token also ran out.
    pub fn check(&self, license: &License, now: OffsetDateTime) -> Result<Status, Error> {
        if license.product != self.product {
            return Err(Error::WrongProduct { expected: self.product.clone(), found: license.product.clone() });
        }
        if let Some(fingerprint) = &self.fingerprint {
            if license.fingerprint != *fingerprint {
                return Err(Error::WrongMachine);
            }
        }
        let leeway = Duration::seconds(i64::try_from(self.leeway_secs).unwrap_or(i64::MAX));
        // Saturating: a huge leeway must not overflow into a panic.
        let earliest =
            now.checked_add(leeway).unwrap_or(OffsetDateTime::new_utc(time::Date::MAX, time::Time::MIDNIGHT));
        let latest = now.checked_sub(leeway).unwrap_or(OffsetDateTime::new_utc(time::Date::MIN, time::Time::MIDNIGHT));
        if license.issued_at > earliest {
            return Err(Error::NotYetValid { issued_at: license.issued_at });
        }
        if let Some(expired_at) = license.license_expires_at {
            if latest >= expired_at {
                return Err(Error::LicenseExpired { expired_at });
            }
        }
        if let Some(expired_at) = license.token_expires_at {
            if latest >= expired_at {
                return Err(Error::TokenExpired { expired_at });
            }
        }
        match license.refresh_after {
            Some(refresh_after) if now >= refresh_after => Ok(Status::RefreshDue),
            _ => Ok(Status::Valid),
        }
    }
}

/// What the app should do with a license that passed every check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// Use it; nothing to do.
    Valid,
    /// Use it, and fetch a fresh token from the issuer now (an online token past its refresh-after time). Failing to
    /// refresh is fine until the token expires.
    RefreshDue,
}

/// A token that verified and passed validation.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// The license the token carries.
    pub license: License,
    /// Whether a refresh is due.
    pub status: Status,
}

/// Parses, verifies and validates token text at the time `now`: the whole check an app makes.
pub fn verify_at(token: &str, keys: &KeySet, validation: &Validation, now: OffsetDateTime) -> Result<Verified, Error> {
    let license = UntrustedToken::parse(token)?.verify(keys)?;
    let status = validation.check(&license, now)?;
    Ok(Verified { license, status })
}

/// [`verify_at`] with the system clock. Pair it with [`crate::ClockGuard`] to catch a clock set back.
#[cfg(feature = "std")]
pub fn verify(token: &str, keys: &KeySet, validation: &Validation) -> Result<Verified, Error> {
    verify_at(token, keys, validation, OffsetDateTime::now_utc())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use alloc::string::ToString;
    use alloc::vec;

    use ed25519_dalek::{Signer as _, SigningKey};
    use time::macros::datetime;

    use super::*;
    use crate::{Claims, LicenseId, PublicKey, TokenKind, UnsignedToken};

    fn claims() -> Claims {
        Claims {
            kind: TokenKind::Online,
            license_id: LicenseId([9; 16]),
            license_key: "KEY".into(),
            email: "a@example.com".into(),
            product: "acme-cad".into(),
            entitlements: vec!["pro".into()],
            max_machines: 2,
            fingerprint: "this-machine".into(),
            issued_at: datetime!(2026-11-22 10:00 UTC),
            license_expires_at: Some(datetime!(2027-01-01 0:00 UTC)),
            refresh_after: Some(datetime!(2026-11-23 10:00 UTC)),
            token_expires_at: Some(datetime!(2026-11-30 10:00 UTC)),
        }
    }

    fn check_with(claims: &Claims, validation: &Validation, now: OffsetDateTime) -> Result<Status, Error> {
        let key = SigningKey::from_bytes(&[3; 32]);
        let public = PublicKey::from_bytes(key.verifying_key().as_bytes()).unwrap();
        let unsigned = UnsignedToken::new(public.key_id(), claims).unwrap();
        let token = unsigned.clone().finish(&key.sign(unsigned.message()).to_bytes());
        let keys = KeySet::from_lines(&[public.to_string()]).unwrap();
        verify_at(&token, &keys, validation, now).map(|v| v.status)
    }

    fn check(claims: &Claims, now: OffsetDateTime) -> Result<Status, Error> {
        check_with(claims, &Validation::new("acme-cad", "this-machine"), now)
    }

    #[test]
    fn fresh_token_is_valid() {
        assert_eq!(check(&claims(), datetime!(2026-11-22 12:00 UTC)).unwrap(), Status::Valid);
    }

    #[test]
    fn token_past_refresh_after_is_valid_with_refresh_due() {
        assert_eq!(check(&claims(), datetime!(2026-11-23 10:00 UTC)).unwrap(), Status::RefreshDue);
    }

    #[test]
    fn expired_token_is_rejected() {
        let err = check(&claims(), datetime!(2026-11-30 10:01 UTC)).unwrap_err();
        assert!(matches!(err, Error::TokenExpired { expired_at } if expired_at == datetime!(2026-11-30 10:00 UTC)));
    }

    #[test]
    fn expired_within_leeway_is_accepted() {
        assert_eq!(check(&claims(), datetime!(2026-11-30 10:00:59 UTC)).unwrap(), Status::RefreshDue);
    }

    #[test]
    fn expired_license_is_reported_before_expired_token() {
        let c = Claims { license_expires_at: Some(datetime!(2026-11-25 0:00 UTC)), ..claims() };
        assert_eq!(check(&c, datetime!(2026-12-10 0:00 UTC)).unwrap_err().code(), "license_expired");
    }

    #[test]
    fn perpetual_offline_token_is_valid_forever() {
        let c = Claims {
            kind: TokenKind::Offline,
            license_expires_at: None,
            refresh_after: None,
            token_expires_at: None,
            ..claims()
        };
        assert_eq!(check(&c, datetime!(9999-01-01 0:00 UTC)).unwrap(), Status::Valid);
    }

    #[test]
    fn token_from_the_future_is_not_yet_valid() {
        assert_eq!(check(&claims(), datetime!(2026-11-22 9:58 UTC)).unwrap_err().code(), "not_yet_valid");
        assert!(check(&claims(), datetime!(2026-11-22 9:59:30 UTC)).is_ok(), "inside the leeway");
    }

    #[test]
    fn wrong_product_and_machine_are_rejected() {
        let other_product = Claims { product: "acme-viewer".into(), ..claims() };
        let err = check(&other_product, datetime!(2026-11-22 12:00 UTC)).unwrap_err();
        assert!(matches!(err, Error::WrongProduct { ref found, .. } if found == "acme-viewer"));
        let other_machine = Claims { fingerprint: "elsewhere".into(), ..claims() };
        assert_eq!(check(&other_machine, datetime!(2026-11-22 12:00 UTC)).unwrap_err().code(), "wrong_machine");
    }

    #[test]
    fn huge_leeway_does_not_overflow() {
        let mut validation = Validation::new("acme-cad", "this-machine");
        validation.leeway_secs = u64::MAX;
        assert!(check_with(&claims(), &validation, datetime!(2026-11-22 12:00 UTC)).is_ok());
    }
}
