//! Every error code the HTTP API can send, in one enum. [`ApiError`](super::ApiError) carries an [`ErrorCode`], so
//! no handler can send a code that is not listed here, and a test compares [`ErrorCode::ALL`] with the `Error.code`
//! enum of docs/openapi.json: a new code goes into the document in the same commit.

/// Declares [`ErrorCode`] and its list together, so the list cannot miss a variant.
macro_rules! error_codes {
    ($($variant:ident => $code:literal: $doc:literal,)*) => {
        /// A stable, machine-readable error code (the `code` of every error body).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $(#[doc = $doc] $variant,)*
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as sent.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }
        }
    };
}

error_codes! {
    MalformedJson => "malformed_json": "400: the body is not JSON.",
    BadRequest => "bad_request": "400: the request cannot be read (a path segment, a body that is not UTF-8, ...).",
    UnknownParameter => "unknown_parameter": "400: a query parameter this route does not know (a typo would else be ignored).",
    Unauthorized => "unauthorized": "401: the admin token is missing, wrong or revoked.",
    InsufficientScope => "insufficient_scope": "403: the admin token is read-scoped and the request would change something.",
    WebhookUrlRefused => "webhook_url_refused": "422: the webhook URL's address is refused by the outbound network rules (link-local, metadata, or `webhooks.*_networks`).",
    Suspended => "suspended": "403: the license is suspended.",
    Revoked => "revoked": "403: the license is revoked.",
    Expired => "expired": "403: the license has expired.",
    NotActivated => "not_activated": "403 (activate, refresh) or 404 (deactivate): the machine is not activated on the license.",
    OfflineNotAllowed => "offline_not_allowed": "403: the license's policy does not allow offline (air-gapped) activation.",
    LeaseExpired => "lease_expired": "403 (refresh): the machine's lease ended and its slot was freed; activate again.",
    IpBlocked => "ip_blocked": "403: a network rule refuses the client's address (activate, refresh, deactivate, offline endpoints; validate answers `IP_BLOCKED`).",
    DeactivationLimitReached => "deactivation_limit_reached": "403: the license's policy allows no more deactivations now; see `retry_at`.",
    LicenseNotFound => "license_not_found": "404: no license has this id or key.",
    PolicyNotFound => "policy_not_found": "404: no policy has this name.",
    AdminTokenNotFound => "admin_token_not_found": "404: no stored admin token has this id.",
    WebhookNotFound => "webhook_not_found": "404: no webhook endpoint has this id.",
    DeliveryNotFound => "delivery_not_found": "404: the webhook endpoint has no delivery with this id.",
    IpRuleNotFound => "ip_rule_not_found": "404: no network rule has this id.",
    MachineNotFound => "machine_not_found": "404: the license has no active machine with this fingerprint.",
    UnknownDeactivationCode => "unknown_deactivation_code": "404: no machine of the code's license holds the token it is for.",
    RouteNotFound => "route_not_found": "404: no such route.",
    MethodNotAllowed => "method_not_allowed": "405: the route does not take this method.",
    IdempotencyConflict => "idempotency_conflict": "409: the Idempotency-Key was used with another request.",
    StatusConflict => "status_conflict": "409: the license's status does not allow the change (a revoked license).",
    TooManyMachines => "too_many_machines": "409: every machine slot is taken.",
    DomainLimitReached => "domain_limit_reached": "409: every domain of a domain license is taken.",
    PolicyExists => "policy_exists": "409: a policy with this name exists already.",
    PolicyInUse => "policy_in_use": "409: licenses use the policy, so it cannot be deleted (`licenses` says how many).",
    AlreadyRedeemed => "already_redeemed": "409: the deactivation code was redeemed before.",
    BodyTimeout => "body_timeout": "408: the request body did not arrive within `http.body_timeout`.",
    BodyTooLarge => "body_too_large": "413: the body is larger than `max_body_bytes`.",
    UnsupportedMediaType => "unsupported_media_type": "415: the body is not sent as `application/json`.",
    InvalidField => "invalid_field": "422: a field is missing or invalid.",
    InvalidLicenseKey => "invalid_license_key": "422: the license key is malformed or looks mistyped.",
    InvalidToken => "invalid_token": "422: the token is malformed, altered or not signed by this issuer.",
    InvalidDomain => "invalid_domain": "422: the domain a domain license's activation or validation names is not a usable domain name (docs/token-format.md §17.2; the message says why).",
    MistypedCode => "mistyped_code": "422: an activation request or deactivation code has a typo.",
    InvalidCode => "invalid_code": "422: an activation request or deactivation code is not valid.",
    RateLimited => "rate_limited": "429: too many requests from this address; see `Retry-After`.",
    InternalError => "internal_error": "500: an internal error; the issuer logged the details.",
    StoreUnavailable => "store_unavailable": "503 (`/healthz`): the store does not answer.",
    SigningKeyNotCertified => "signing_key_not_certified": "503: the key ring has root keys and no certificate covers its signing key now (for this product); the operator must add one.",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
