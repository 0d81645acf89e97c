//! Why a licensing operation failed: one error type for the service, mapped to HTTP statuses and codes by
//! `http::error` and to messages by the CLI.

use keys::KeyError;
use time::OffsetDateTime;

use crate::license_key::LicenseKeyError;
use crate::store::{License, LicenseStatus, StoreError};

/// Why a license cannot be used right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unusable {
    /// Suspended by the vendor.
    Suspended,
    /// Revoked by the vendor.
    Revoked,
    /// Past its expiry.
    Expired,
}

/// Why a licensing operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The license key is malformed (caught before any lookup).
    #[error(transparent)]
    InvalidLicenseKey(#[from] LicenseKeyError),
    /// A field of the request is invalid.
    #[error("invalid {field}: {message}")]
    InvalidField {
        /// The field's name in the request.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// No license has this key or id.
    #[error("no license with this key or id exists")]
    LicenseNotFound,
    /// The machine is not activated on the license.
    #[error("this machine is not activated on the license")]
    NotActivated,
    /// The license is suspended, revoked or expired.
    #[error("the license is {}", match .0 { Unusable::Suspended => "suspended", Unusable::Revoked => "revoked", Unusable::Expired => "expired" })]
    Unusable(Unusable),
    /// The domain a domain license's activation or validation names cannot be used (docs/token-format.md §17.2).
    #[error("invalid domain: {0}")]
    InvalidDomain(verifier::DomainError),
    /// Every domain of a domain license is taken.
    #[error("{}; deactivate a domain first", if *.max_domains == 1 { "the 1 domain of the license is in use".to_string() } else { format!("all {} domains of the license are in use", .max_domains) })]
    DomainLimitReached {
        /// The license's domains (its `max_machines`).
        max_domains: u32,
        /// Active domains.
        domains_used: u32,
    },
    /// Every machine slot is taken.
    #[error("{}; deactivate a machine first", if *.max_machines == 1 { "the 1 machine slot of the license is in use".to_string() } else { format!("all {} machine slots of the license are in use", .max_machines) })]
    NoSlotLeft {
        /// The license's slots.
        max_machines: u32,
        /// Active machines.
        machines_used: u32,
    },
    /// The token is malformed, altered or not signed by this issuer.
    #[error("invalid token: {0}")]
    InvalidToken(verifier::Error),
    /// An activation request or deactivation code is mistyped ([`verifier::Error::MistypedCode`]) or not valid
    /// ([`verifier::Error::InvalidCode`]).
    #[error("{0}")]
    InvalidCode(verifier::Error),
    /// The deactivation code was redeemed before; nothing changed.
    #[error("this deactivation code was already redeemed at {} (it freed machine {fingerprint}); nothing changed", rfc3339(*.redeemed_at))]
    AlreadyRedeemed {
        /// The machine it freed then.
        fingerprint: String,
        /// When.
        redeemed_at: OffsetDateTime,
    },
    /// No machine of the code's license holds the token the code was made for: a code of another license, or of a
    /// token the machine has since replaced.
    #[error("no machine of the license holds the token this deactivation code is for (a code of another license, or of a token since replaced)")]
    UnknownDeactivationCode,
    /// The Idempotency-Key was used before with a different request.
    #[error("this Idempotency-Key was already used with a different request; use a new key for a new license")]
    IdempotencyConflict,
    /// The license's current status does not allow the change: a revoked license can be neither suspended nor
    /// reinstated (a revocation is final), also when the revocation won a race with this request.
    #[error("the license is {current}; it cannot be {}{}", verb(*.wanted), if *.current == LicenseStatus::Revoked { " (a revocation is final)" } else { "" })]
    StatusConflict {
        /// The status the license has now.
        current: LicenseStatus,
        /// The status the request asked for.
        wanted: LicenseStatus,
        /// The license as it is now, when known.
        license: Option<Box<License>>,
    },
    /// No policy has this name.
    #[error("no policy with this name exists")]
    PolicyNotFound,
    /// A policy with this name exists already.
    #[error("a policy with this name exists already; choose another name or update it")]
    PolicyExists,
    /// The policy cannot be deleted: licenses use it.
    #[error("{licenses} license{} use{} this policy; a policy is deleted only while no license uses it", if *.licenses == 1 { "" } else { "s" }, if *.licenses == 1 { "s" } else { "" })]
    PolicyInUse {
        /// How many.
        licenses: u64,
    },
    /// The machine's lease ended (it did not check in in time); its slot was freed. It must activate again.
    #[error("this machine's lease ended and its slot was freed; activate it again")]
    LeaseExpired,
    /// The license's policy does not allow offline (air-gapped) tokens.
    #[error("the license's policy does not allow offline activation")]
    OfflineNotAllowed,
    /// The license's deactivation limit is reached; nothing changed.
    #[error("the license allows {limit} deactivation{} per {}; the next is possible at {}", if *.limit == 1 { "" } else { "s" }, crate::config::format_duration_secs(*.period_secs), rfc3339(*.retry_at))]
    DeactivationLimit {
        /// The limit.
        limit: u32,
        /// Its window in seconds.
        period_secs: u64,
        /// When the oldest counted deactivation leaves the window.
        retry_at: OffsetDateTime,
    },
    /// No admin token has this id (or it is `ISSUER_ADMIN_TOKEN`, which only the environment can take away).
    #[error("no stored admin token has this id (ISSUER_ADMIN_TOKEN is revoked by removing it from the environment)")]
    AdminTokenNotFound,
    /// No webhook endpoint has this id.
    #[error("no webhook endpoint with this id exists")]
    WebhookNotFound,
    /// The endpoint has no delivery with this id.
    #[error("the webhook endpoint has no delivery with this id")]
    DeliveryNotFound,
    /// The webhook URL's address is refused by the outbound network rules (docs/webhooks.md).
    #[error("{0}")]
    WebhookUrlRefused(String),
    /// A network rule refuses the client's address (docs/network.md); recorded as an `ip.blocked` event.
    #[error("{blocked}")]
    IpBlocked {
        /// The address and the rule (or level) that refused it.
        blocked: Box<super::Blocked>,
        /// The license asked about, when the refusal came after it was found.
        license_id: Option<uuid::Uuid>,
    },
    /// No network rule has this id.
    #[error("no network rule with this id exists")]
    IpRuleNotFound,
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Signing(#[from] KeyError),
    /// The operating system's random source failed.
    #[error("the random source failed: {0}")]
    Random(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            // The trigger's StoreError::RevokedIsFinal comes only from a status change, whose transition maps it
            // to a StatusConflict naming the status it asked for (service/licenses.rs).
            StoreError::IdempotencyConflict => ServiceError::IdempotencyConflict,
            other => ServiceError::Store(other),
        }
    }
}

/// The past participle of the transition to `status`, for messages.
fn verb(status: LicenseStatus) -> &'static str {
    match status {
        LicenseStatus::Active => "reinstated",
        LicenseStatus::Suspended => "suspended",
        LicenseStatus::Revoked => "revoked",
    }
}

pub(super) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string())
}

pub(super) fn invalid(field: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::InvalidField { field, message: message.into() }
}
