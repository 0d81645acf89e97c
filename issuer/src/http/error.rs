//! The one error type of the HTTP API: a status, a stable machine-readable code and a message, sent as JSON.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub use super::codes::ErrorCode;
use crate::service::{ServiceError, Unusable};
use crate::store::License;

/// An error response: `{"code": "...", "message": "..."}` with an HTTP status.
///
/// Store, signing and other internal failures become a generic 500 `internal_error`; the full error is logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Stable code clients branch on, e.g. `invalid_license_key`.
    pub code: ErrorCode,
    /// A sentence for people.
    pub message: String,
    /// Seconds to wait before retrying (sent as `Retry-After`), for 429.
    pub retry_after: Option<u64>,
    /// More fields of the body beside `code` and `message` (e.g. the current `status` and `license` of a 409
    /// `status_conflict`).
    pub details: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    details: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after: None, details: None }
    }

    /// 404 for a route that does not exist.
    pub fn route_not_found() -> Self {
        ApiError::new(StatusCode::NOT_FOUND, ErrorCode::RouteNotFound, "no such route; see /v1/openapi.json")
    }

    /// 405 for a method a route does not support.
    pub fn method_not_allowed() -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::MethodNotAllowed,
            "this route does not support this method",
        )
    }

    /// 401 for a missing or wrong admin token.
    pub fn unauthorized(message: &str) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    /// 429 with the seconds to wait.
    pub fn rate_limited(retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited, "too many requests; retry later")
        }
    }

    /// 422 for an invalid field.
    pub fn invalid_field(field: &str, message: impl std::fmt::Display) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidField, format!("invalid {field}: {message}"))
    }

    /// A generic 500; `error` is logged in full, never sent.
    pub fn internal(error: &dyn std::error::Error) -> Self {
        let mut chain = error.to_string();
        let mut source = error.source();
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        tracing::error!(error = %chain, "internal error while handling a request");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::InternalError,
            "internal error; the issuer logged the details",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            axum::Json(Body { code: self.code.as_str(), message: &self.message, details: self.details.as_ref() });
        let mut response = (self.status, body).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        use StatusCode as S;
        match e {
            ServiceError::InvalidLicenseKey(k) => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, ErrorCode::InvalidLicenseKey, k.to_string())
            }
            ServiceError::InvalidField { field, message } => ApiError::invalid_field(field, message),
            ServiceError::LicenseNotFound => ApiError::new(S::NOT_FOUND, ErrorCode::LicenseNotFound, e.to_string()),
            ServiceError::NotActivated => ApiError::new(S::FORBIDDEN, ErrorCode::NotActivated, e.to_string()),
            ServiceError::Unusable(why) => {
                let code = match why {
                    Unusable::Suspended => ErrorCode::Suspended,
                    Unusable::Revoked => ErrorCode::Revoked,
                    Unusable::Expired => ErrorCode::Expired,
                };
                ApiError::new(S::FORBIDDEN, code, e.to_string())
            }
            ServiceError::NoSlotLeft { .. } => ApiError::new(S::CONFLICT, ErrorCode::TooManyMachines, e.to_string()),
            ServiceError::InvalidToken(_) => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, ErrorCode::InvalidToken, e.to_string())
            }
            ServiceError::InvalidCode(ref err) => {
                let code = if matches!(err, verifier::Error::MistypedCode) {
                    ErrorCode::MistypedCode
                } else {
                    ErrorCode::InvalidCode
                };
                ApiError::new(S::UNPROCESSABLE_ENTITY, code, e.to_string())
            }
            ServiceError::AlreadyRedeemed { .. } => {
                ApiError::new(S::CONFLICT, ErrorCode::AlreadyRedeemed, e.to_string())
            }
            ServiceError::UnknownDeactivationCode => {
                ApiError::new(S::NOT_FOUND, ErrorCode::UnknownDeactivationCode, e.to_string())
            }
            ServiceError::IdempotencyConflict => {
                ApiError::new(S::CONFLICT, ErrorCode::IdempotencyConflict, e.to_string())
            }
            ServiceError::StatusConflict { current, ref license, .. } => {
                // The state the request lost to, so a client need not ask again.
                let mut details = serde_json::Map::new();
                details.insert("status".into(), current.as_str().into());
                if let Some(license) = license {
                    // A status conflict is about a revoked license, revoked at any time: no clock needed for it.
                    let now = time::OffsetDateTime::now_utc();
                    let view = super::admin::LicenseView::at(License::clone(license), now);
                    details.insert("license".into(), serde_json::to_value(view).unwrap_or_default());
                }
                ApiError {
                    details: Some(details),
                    ..ApiError::new(S::CONFLICT, ErrorCode::StatusConflict, e.to_string())
                }
            }
            ServiceError::PolicyNotFound => ApiError::new(S::NOT_FOUND, ErrorCode::PolicyNotFound, e.to_string()),
            ServiceError::PolicyExists => ApiError::new(S::CONFLICT, ErrorCode::PolicyExists, e.to_string()),
            ServiceError::PolicyInUse { licenses } => {
                let mut details = serde_json::Map::new();
                details.insert("licenses".into(), licenses.into());
                ApiError { details: Some(details), ..ApiError::new(S::CONFLICT, ErrorCode::PolicyInUse, e.to_string()) }
            }
            ServiceError::LeaseExpired => ApiError::new(S::FORBIDDEN, ErrorCode::LeaseExpired, e.to_string()),
            ServiceError::OfflineNotAllowed => ApiError::new(S::FORBIDDEN, ErrorCode::OfflineNotAllowed, e.to_string()),
            ServiceError::DeactivationLimit { limit, period_secs, retry_at } => {
                let mut details = serde_json::Map::new();
                details.insert("deactivation_limit".into(), limit.into());
                details.insert("deactivation_period".into(), crate::config::format_duration_secs(period_secs).into());
                let at = retry_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
                details.insert("retry_at".into(), at.into());
                ApiError {
                    details: Some(details),
                    ..ApiError::new(S::FORBIDDEN, ErrorCode::DeactivationLimitReached, e.to_string())
                }
            }
            ServiceError::AdminTokenNotFound => {
                ApiError::new(S::NOT_FOUND, ErrorCode::AdminTokenNotFound, e.to_string())
            }
            ServiceError::WebhookNotFound => ApiError::new(S::NOT_FOUND, ErrorCode::WebhookNotFound, e.to_string()),
            ServiceError::DeliveryNotFound => ApiError::new(S::NOT_FOUND, ErrorCode::DeliveryNotFound, e.to_string()),
            ServiceError::WebhookUrlRefused(_) => {
                let mut details = serde_json::Map::new();
                details.insert("field".into(), "url".into());
                ApiError {
                    details: Some(details),
                    ..ApiError::new(S::UNPROCESSABLE_ENTITY, ErrorCode::WebhookUrlRefused, e.to_string())
                }
            }
            ServiceError::InvalidDomain(why) => {
                let mut details = serde_json::Map::new();
                details.insert("domain_error".into(), why.code().into());
                ApiError {
                    details: Some(details),
                    ..ApiError::new(S::UNPROCESSABLE_ENTITY, ErrorCode::InvalidDomain, e.to_string())
                }
            }
            ServiceError::DomainLimitReached { .. } => {
                ApiError::new(S::CONFLICT, ErrorCode::DomainLimitReached, e.to_string())
            }
            // Nothing about the rule or the license: the `ip.blocked` event has the details.
            ServiceError::IpBlocked { .. } => ApiError::new(
                S::FORBIDDEN,
                ErrorCode::IpBlocked,
                "requests from this address are refused by a network rule",
            ),
            ServiceError::IpRuleNotFound => ApiError::new(S::NOT_FOUND, ErrorCode::IpRuleNotFound, e.to_string()),
            ServiceError::Store(ref err) => ApiError::internal(err),
            ServiceError::Signing(ref err @ keys::KeyError::Uncertified { .. }) => {
                // The operator's to fix, not the client's: said loudly in the log, plainly to the client.
                tracing::error!(error = %err, "refusing to sign: the signing key has no covering certificate");
                ApiError::new(S::SERVICE_UNAVAILABLE, ErrorCode::SigningKeyNotCertified, err.to_string())
            }
            ServiceError::Signing(ref err) => ApiError::internal(err),
            other => ApiError::internal(&other),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidField, e.body_text())
            }
            JsonRejection::JsonSyntaxError(e) => {
                ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::MalformedJson, e.body_text())
            }
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                "send the body as JSON with `Content-Type: application/json`",
            ),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::BodyTooLarge, "the request body is too large")
            }
            other => ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        let text = r.body_text();
        // The query types deny unknown fields; serde words that error "unknown field `x`, expected ...".
        if text.contains("unknown field") {
            ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::UnknownParameter, text.replace("field", "parameter"))
        } else {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidField, text)
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, r.body_text())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::StoreError;

    #[test]
    fn store_errors_become_a_generic_500_without_details() {
        let err = ApiError::from(ServiceError::Store(StoreError::Corrupt("secret table name".into())));
        assert_eq!(err.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(err.code, ErrorCode::InternalError);
        assert!(!err.message.contains("secret"), "{}", err.message);
    }

    #[test]
    fn client_mistakes_map_to_4xx_codes() {
        let cases = [
            (ServiceError::LicenseNotFound, StatusCode::NOT_FOUND, "license_not_found"),
            (ServiceError::Unusable(Unusable::Revoked), StatusCode::FORBIDDEN, "revoked"),
            (ServiceError::NoSlotLeft { max_machines: 3, machines_used: 3 }, StatusCode::CONFLICT, "too_many_machines"),
            (ServiceError::IdempotencyConflict, StatusCode::CONFLICT, "idempotency_conflict"),
            (
                ServiceError::StatusConflict {
                    current: crate::store::LicenseStatus::Revoked,
                    wanted: crate::store::LicenseStatus::Active,
                    license: None,
                },
                StatusCode::CONFLICT,
                "status_conflict",
            ),
            (
                ServiceError::InvalidCode(verifier::Error::MistypedCode),
                StatusCode::UNPROCESSABLE_ENTITY,
                "mistyped_code",
            ),
            (
                ServiceError::InvalidCode(verifier::Error::InvalidCode { reason: "x" }),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_code",
            ),
            (ServiceError::UnknownDeactivationCode, StatusCode::NOT_FOUND, "unknown_deactivation_code"),
        ];
        for (e, status, code) in cases {
            let api = ApiError::from(e);
            assert_eq!((api.status, api.code.as_str()), (status, code));
        }
    }

    #[test]
    fn every_error_code_the_server_can_send_is_in_the_openapi_document() {
        let doc: serde_json::Value = serde_json::from_str(super::super::OPENAPI_JSON).unwrap();
        let listed: Vec<&str> = doc["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let sent: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        let missing: Vec<_> = sent.iter().filter(|c| !listed.contains(c)).collect();
        let stale: Vec<_> = listed.iter().filter(|c| !sent.contains(c)).collect();
        assert!(missing.is_empty() && stale.is_empty(), "not in openapi.json: {missing:?}; never sent: {stale:?}");
        // Every code is also described in a response of some route.
        let text = super::super::OPENAPI_JSON;
        let undescribed: Vec<_> = sent.iter().filter(|c| !text.contains(&format!("`{c}`"))).collect();
        assert!(undescribed.is_empty(), "no response description names {undescribed:?}");
    }
}
