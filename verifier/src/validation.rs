//! What makes a verified license usable here and now: product, machine (or domain) binding and time checks.

use alloc::string::String;

use time::OffsetDateTime;

use crate::format::limits;
#[cfg(feature = "domain")]
use crate::{Domain, DomainError};
use crate::{Error, KeySet, License, RevocationList, UntrustedToken};

/// [`limits::MAX_TIME`] as a signed Unix time; it fits, being far below `i64::MAX`.
const MAX_TIME: i64 = limits::MAX_TIME as i64;

/// Default leeway for clock differences between issuer and app, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 60;

/// The checks an app applies after the signature verified. Build with [`Validation::new`] and adjust fields.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Validation {
    /// The product this app is. A token for another product fails with [`Error::WrongProduct`]. Required.
    pub product: String,
    /// This machine's fingerprint. A token bound to another machine fails with [`Error::WrongMachine`].
    /// Default: the value given to `new`. `None` skips the machine check; only for server-side inspection, or with
    /// `domain` set.
    pub fingerprint: Option<String>,
    /// The host a web app runs on. When set, the token must be domain-bound (a `domain:` fingerprint) to a domain
    /// that [covers](Domain::covers) it, or it fails with [`Error::WrongDomain`]. Default: `None` (no domain check);
    /// [`Validation::for_domain`] sets it.
    #[cfg(feature = "domain")]
    pub domain: Option<Domain>,
    /// Seconds of clock difference tolerated on every time check. Default: [`DEFAULT_LEEWAY_SECS`] (60).
    pub leeway_secs: u64,
    /// The newest revocation list the app holds: a token of a listed license fails with [`Error::LicenseRevoked`],
    /// before any other check. Default: none.
    pub revocation_list: Option<RevocationList>,
}

impl Validation {
    /// Checks for `product` on the machine with `fingerprint`, with the default leeway.
    pub fn new(product: impl Into<String>, fingerprint: impl Into<String>) -> Self {
        Validation {
            product: product.into(),
            fingerprint: Some(fingerprint.into()),
            #[cfg(feature = "domain")]
            domain: None,
            leeway_secs: DEFAULT_LEEWAY_SECS,
            revocation_list: None,
        }
    }

    /// Checks for `product` in a web app served at `host` (see [`Domain::host`]), with the default leeway and no
    /// machine check.
    #[cfg(feature = "domain")]
    pub fn for_domain(product: impl Into<String>, host: &str) -> Result<Self, DomainError> {
        Ok(Validation {
            product: product.into(),
            fingerprint: None,
            domain: Some(Domain::host(host)?),
            leeway_secs: DEFAULT_LEEWAY_SECS,
            revocation_list: None,
        })
    }

    /// Checks a verified license at `now`.
    ///
    /// Order: revocation list, product, machine, domain, not-yet-valid, license expiry, token expiry; the first failure
    /// is returned, so an expired license is reported as such even when its token also ran out.
    pub fn check(&self, license: &License, now: OffsetDateTime) -> Result<Status, Error> {
        if self.revocation_list.as_ref().is_some_and(|list| list.contains(&license.license_id)) {
            return Err(Error::LicenseRevoked);
        }
        if license.product != self.product {
            return Err(Error::WrongProduct { expected: self.product.clone(), found: license.product.clone() });
        }
        if let Some(fingerprint) = &self.fingerprint {
            if license.fingerprint != *fingerprint {
                return Err(Error::WrongMachine);
            }
        }
        #[cfg(feature = "domain")]
        if let Some(host) = &self.domain {
            // A machine fingerprint (no prefix) and a binding no conforming issuer signs (not normalised) are both
            // "not bound to this domain": the app cannot do anything different about either.
            let covered = matches!(Domain::from_binding(&license.fingerprint), Some(Ok(bound)) if bound.covers(host));
            if !covered {
                return Err(Error::WrongDomain);
            }
        }
        // Whole seconds: `unix_timestamp` truncates toward −∞, which changes no result because every claim time and
        // the leeway are integers. The arithmetic is then exact except for saturation, and saturation is harmless:
        // claim times lie in 0..=MAX_TIME, so an `earliest` clamped to MAX_TIME and a `latest` saturated far below 0
        // compare with them exactly as the true values would. (Saturating `latest` at 0 would not: `0 >= 0` would
        // call a license expiring at the epoch expired.)
        let now_secs = now.unix_timestamp();
        let leeway = i64::try_from(self.leeway_secs).unwrap_or(i64::MAX);
        let earliest = now_secs.saturating_add(leeway).min(MAX_TIME);
        let latest = now_secs.saturating_sub(leeway);
        if license.issued_at.unix_timestamp() > earliest {
            return Err(Error::NotYetValid { issued_at: license.issued_at });
        }
        if let Some(expired_at) = license.license_expires_at {
            if latest >= expired_at.unix_timestamp() {
                return Err(Error::LicenseExpired { expired_at });
            }
        }
        if let Some(expired_at) = license.token_expires_at {
            if latest >= expired_at.unix_timestamp() {
                return Err(Error::TokenExpired { expired_at });
            }
        }
        match license.refresh_after {
            Some(refresh_after) if now_secs >= refresh_after.unix_timestamp() => Ok(Status::RefreshDue),
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

    fn offline_claims(issued_at: OffsetDateTime, license_expires_at: Option<OffsetDateTime>) -> Claims {
        Claims {
            kind: TokenKind::Offline,
            issued_at,
            license_expires_at,
            refresh_after: None,
            token_expires_at: None,
            ..claims()
        }
    }

    fn with_leeway(leeway_secs: u64) -> Validation {
        Validation { leeway_secs, ..Validation::new("acme-cad", "this-machine") }
    }

    #[test]
    fn token_issued_at_the_last_representable_second_is_accepted_with_a_huge_leeway() {
        // now + leeway is past the end of the time range: it must count as later than every claim time, not as
        // 9999-12-31T00:00:00Z.
        let last = datetime!(9999-12-31 23:59:59 UTC);
        let c = offline_claims(last, None);
        assert_eq!(check_with(&c, &with_leeway(u64::MAX), datetime!(2026-11-22 12:00 UTC)).unwrap(), Status::Valid);
        let late_now = datetime!(9999-12-31 23:59:59.999_999_999 UTC);
        assert_eq!(check_with(&c, &with_leeway(1), late_now).unwrap(), Status::Valid);
        assert_eq!(check_with(&c, &with_leeway(0), late_now).unwrap(), Status::Valid);
    }

    #[test]
    fn not_yet_valid_boundary_near_the_end_of_the_time_range_is_exact() {
        let c = offline_claims(datetime!(9999-12-31 23:59:59 UTC), None);
        let now = datetime!(9999-12-31 23:58:59 UTC);
        assert_eq!(check_with(&c, &with_leeway(60), now).unwrap(), Status::Valid);
        assert_eq!(check_with(&c, &with_leeway(59), now).unwrap_err().code(), "not_yet_valid");
    }

    #[test]
    fn license_expiring_at_the_epoch_is_expired_only_by_exact_arithmetic() {
        // now - leeway below 0 must not saturate at 0: `0 >= 0` would call this license expired.
        let epoch = OffsetDateTime::UNIX_EPOCH;
        let c = offline_claims(epoch, Some(epoch));
        let now = datetime!(1970-01-01 0:00:30 UTC);
        assert_eq!(check_with(&c, &with_leeway(31), now).unwrap(), Status::Valid);
        assert_eq!(check_with(&c, &with_leeway(u64::MAX), now).unwrap(), Status::Valid);
        assert_eq!(check_with(&c, &with_leeway(30), now).unwrap_err().code(), "license_expired");
        let earliest_now = datetime!(-9999-01-01 0:00 UTC);
        assert_eq!(check_with(&c, &with_leeway(u64::MAX), earliest_now).unwrap(), Status::Valid);
    }

    #[test]
    fn sub_second_now_gives_the_same_results_as_whole_seconds() {
        let epoch = OffsetDateTime::UNIX_EPOCH;
        let c = offline_claims(epoch, Some(epoch));
        let half_before = datetime!(1969-12-31 23:59:59.5 UTC);
        assert_eq!(check_with(&c, &with_leeway(0), half_before).unwrap_err().code(), "not_yet_valid");
        assert_eq!(check_with(&c, &with_leeway(1), half_before).unwrap(), Status::Valid);
        assert_eq!(check_with(&c, &with_leeway(1), datetime!(1970-01-01 0:00:00.5 UTC)).unwrap(), Status::Valid);
        assert_eq!(
            check_with(&c, &with_leeway(1), datetime!(1970-01-01 0:00:01 UTC)).unwrap_err().code(),
            "license_expired"
        );
        assert_eq!(check_with(&c, &with_leeway(0), epoch).unwrap_err().code(), "license_expired");
        let issued = datetime!(2026-11-22 10:00 UTC);
        let c = offline_claims(issued, None);
        let just_before = datetime!(2026-11-22 9:58:59.999 UTC);
        assert_eq!(check_with(&c, &with_leeway(60), just_before).unwrap_err().code(), "not_yet_valid");
        assert_eq!(check_with(&c, &with_leeway(60), datetime!(2026-11-22 9:59 UTC)).unwrap(), Status::Valid);
    }

    #[test]
    fn refresh_is_due_from_the_refresh_after_second_on() {
        assert_eq!(check(&claims(), datetime!(2026-11-23 9:59:59.999 UTC)).unwrap(), Status::Valid);
        assert_eq!(check(&claims(), datetime!(2026-11-23 10:00 UTC)).unwrap(), Status::RefreshDue);
    }

    #[cfg(feature = "domain")]
    fn domain_bound(binding: &str) -> Claims {
        Claims { fingerprint: binding.into(), ..claims() }
    }

    #[cfg(feature = "domain")]
    fn check_domain(claims: &Claims, host: &str) -> Result<Status, Error> {
        check_with(claims, &Validation::for_domain("acme-cad", host).unwrap(), datetime!(2026-11-22 12:00 UTC))
    }

    #[cfg(feature = "domain")]
    #[test]
    fn domain_bound_token_is_accepted_for_a_covered_host() {
        let star = domain_bound("domain:*.example.com");
        assert_eq!(check_domain(&star, "Shop.Example.com.").unwrap(), Status::Valid);
        assert_eq!(check_domain(&star, "example.com").unwrap(), Status::Valid);
        let idn = domain_bound("domain:xn--bcher-kva.example");
        assert_eq!(check_domain(&idn, "BÜCHER.example").unwrap(), Status::Valid);
    }

    #[cfg(feature = "domain")]
    #[test]
    fn domain_bound_token_is_wrong_domain_for_another_host() {
        let exact = domain_bound("domain:example.com");
        assert!(matches!(check_domain(&exact, "shop.example.com"), Err(Error::WrongDomain)));
        let star = domain_bound("domain:*.example.com");
        assert_eq!(check_domain(&star, "badexample.com").unwrap_err().code(), "wrong_domain");
    }

    #[cfg(feature = "domain")]
    #[test]
    fn machine_bound_token_is_wrong_domain() {
        assert_eq!(check_domain(&claims(), "example.com").unwrap_err().code(), "wrong_domain");
        // The issuer refuses machine fingerprints with the prefix, so this one only shows that no guess is made.
        assert_eq!(check_domain(&domain_bound("example.com"), "example.com").unwrap_err().code(), "wrong_domain");
    }

    #[cfg(feature = "domain")]
    #[test]
    fn malformed_binding_is_wrong_domain() {
        for binding in ["domain:Example.com", "domain:example.com.", "domain:*.com", "domain:a_b.example.com"] {
            let err = check_domain(&domain_bound(binding), "example.com").unwrap_err();
            assert_eq!(err.code(), "wrong_domain", "{binding}");
        }
    }

    #[cfg(feature = "domain")]
    #[test]
    fn domain_token_is_wrong_machine_to_a_machine_check() {
        // What a v1 verifier without the domain check sees: an opaque fingerprint no machine has.
        let star = domain_bound("domain:*.example.com");
        assert_eq!(check(&star, datetime!(2026-11-22 12:00 UTC)).unwrap_err().code(), "wrong_machine");
    }

    #[cfg(feature = "domain")]
    #[test]
    fn domain_check_comes_after_product_and_before_time() {
        let other_product = Claims { product: "acme-viewer".into(), ..domain_bound("domain:example.com") };
        assert_eq!(check_domain(&other_product, "example.org").unwrap_err().code(), "wrong_product");
        let expired = Claims { license_expires_at: Some(datetime!(2026-01-01 0:00 UTC)), ..domain_bound("x.y") };
        assert_eq!(check_domain(&expired, "example.com").unwrap_err().code(), "wrong_domain");
    }

    #[cfg(feature = "domain")]
    #[test]
    fn for_domain_refuses_a_wildcard_host() {
        assert_eq!(Validation::for_domain("acme-cad", "*.example.com").unwrap_err(), DomainError::Wildcard);
        let v = Validation::for_domain("acme-cad", "Example.com").unwrap();
        assert_eq!((v.fingerprint, v.domain.unwrap().as_str()), (None, "example.com"));
    }

    #[test]
    fn huge_leeway_does_not_overflow() {
        let mut validation = Validation::new("acme-cad", "this-machine");
        validation.leeway_secs = u64::MAX;
        assert!(check_with(&claims(), &validation, datetime!(2026-11-22 12:00 UTC)).is_ok());
    }
}
