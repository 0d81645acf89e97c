//! Admin endpoints under `/v1/policies`, behind the admin token: create, list, read, update and delete policies
//! (docs/policies.md).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json as JsonResponse;
use serde::{Deserialize, Serialize};

use super::admin::{not_null, present};
use super::error::ApiError;
use super::extract::{AdminContext, Json, Path, Query};
use super::AppState;
use crate::config::parse_duration_secs;
use crate::store::{Overage, Policy, PolicyUpdate};
pub(crate) use crate::views::PolicyView;

/// A duration in a request: text such as `"12h"` or a number of seconds.
#[derive(Debug)]
pub(crate) enum DurationValue {
    /// Seconds.
    Secs(u64),
    /// Text with a unit.
    Text(String),
}

impl<'de> Deserialize<'de> for DurationValue {
    /// By hand rather than `#[serde(untagged)]`, whose error for a wrong type says only that no variant matched.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DurationValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as \"12h\" or \"7d\", or a whole number of seconds")
            }
            fn visit_u64<E: serde::de::Error>(self, secs: u64) -> Result<DurationValue, E> {
                Ok(DurationValue::Secs(secs))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<DurationValue, E> {
                Ok(DurationValue::Text(text.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl DurationValue {
    fn secs(&self, field: &'static str) -> Result<u64, ApiError> {
        match self {
            DurationValue::Secs(s) => Ok(*s),
            DurationValue::Text(t) => parse_duration_secs(t).map_err(|m| ApiError::invalid_field(field, m)),
        }
    }
}

fn secs_of(field: &'static str, value: Option<&DurationValue>) -> Result<Option<u64>, ApiError> {
    value.map(|v| v.secs(field)).transpose()
}

fn overage_of(text: &str) -> Result<Overage, ApiError> {
    text.parse().map_err(|m: String| ApiError::invalid_field("overage", m))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRequest {
    name: String,
    product: String,
    max_machines: u32,
    duration: Option<DurationValue>,
    #[serde(default)]
    entitlements: Vec<String>,
    refresh_interval: Option<DurationValue>,
    offline_grace: Option<DurationValue>,
    lease: Option<DurationValue>,
    #[serde(default)]
    floating: bool,
    #[serde(default, deserialize_with = "not_null")]
    overage: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    offline_allowed: Option<bool>,
    deactivation_limit: Option<u32>,
    #[serde(default, deserialize_with = "not_null")]
    deactivation_period: Option<DurationValue>,
    /// `machine` or `domain` (fixed once created); absent: `machine`.
    #[serde(default, deserialize_with = "not_null")]
    kind: Option<String>,
}

/// `POST /v1/policies`: 201 with the policy; 409 `policy_exists` for a taken name.
pub(crate) async fn create(
    State(state): State<AppState>,
    AdminContext(ctx): AdminContext,
    Json(req): Json<CreateRequest>,
) -> Result<(StatusCode, JsonResponse<PolicyView>), ApiError> {
    let mut policy = Policy::new(req.name, req.product, req.max_machines);
    policy.duration_secs = secs_of("duration", req.duration.as_ref())?;
    policy.entitlements = req.entitlements;
    if let Some(kind) = req.kind {
        policy.kind = kind.parse().map_err(|m: String| ApiError::invalid_field("kind", m))?;
    }
    policy.refresh_interval_secs = secs_of("refresh_interval", req.refresh_interval.as_ref())?;
    policy.offline_grace_secs = secs_of("offline_grace", req.offline_grace.as_ref())?;
    policy.lease_secs = secs_of("lease", req.lease.as_ref())?;
    policy.floating = req.floating;
    if let Some(o) = req.overage.as_deref() {
        policy.overage = overage_of(o)?;
    }
    if let Some(allowed) = req.offline_allowed {
        policy.offline_allowed = allowed;
    }
    policy.deactivation_limit = req.deactivation_limit;
    if let Some(period) = secs_of("deactivation_period", req.deactivation_period.as_ref())? {
        policy.deactivation_period_secs = period;
    }
    let created = state.licensing.create_policy(policy, &ctx).await?;
    Ok((StatusCode::CREATED, JsonResponse(created.into())))
}

/// No query parameters: an unknown one is 400, as on every list route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoQuery {}

#[derive(Debug, Serialize)]
pub(crate) struct ListResponse {
    policies: Vec<PolicyView>,
}

/// `GET /v1/policies`: every policy, by name.
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(NoQuery {}): Query<NoQuery>,
) -> Result<JsonResponse<ListResponse>, ApiError> {
    let policies = state.licensing.policies().await?;
    Ok(JsonResponse(ListResponse { policies: policies.into_iter().map(Into::into).collect() }))
}

/// `GET /v1/policies/{name}`.
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<JsonResponse<PolicyView>, ApiError> {
    Ok(JsonResponse(state.licensing.policy(&name).await?.into()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateRequest {
    #[serde(default, deserialize_with = "not_null")]
    max_machines: Option<u32>,
    #[serde(default, deserialize_with = "present")]
    duration: Option<Option<DurationValue>>,
    #[serde(default, deserialize_with = "not_null")]
    entitlements: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    refresh_interval: Option<Option<DurationValue>>,
    #[serde(default, deserialize_with = "present")]
    offline_grace: Option<Option<DurationValue>>,
    #[serde(default, deserialize_with = "present")]
    lease: Option<Option<DurationValue>>,
    #[serde(default, deserialize_with = "not_null")]
    floating: Option<bool>,
    #[serde(default, deserialize_with = "not_null")]
    overage: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    offline_allowed: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    deactivation_limit: Option<Option<u32>>,
    #[serde(default, deserialize_with = "not_null")]
    deactivation_period: Option<DurationValue>,
}

/// A nullable duration field of a PATCH: absent, `null` (cleared) or a value.
fn nullable_secs(field: &'static str, value: Option<Option<DurationValue>>) -> Result<Option<Option<u64>>, ApiError> {
    value.map(|v| secs_of(field, v.as_ref())).transpose()
}

/// `PATCH /v1/policies/{name}`: the fields given change (`null` clears a nullable one); the name and the product
/// never change. Rules reach the policy's licenses at their next request; grants only new licenses.
pub(crate) async fn update(
    State(state): State<AppState>,
    AdminContext(ctx): AdminContext,
    Path(name): Path<String>,
    Json(req): Json<UpdateRequest>,
) -> Result<JsonResponse<PolicyView>, ApiError> {
    let update = PolicyUpdate {
        max_machines: req.max_machines,
        duration_secs: nullable_secs("duration", req.duration)?,
        entitlements: req.entitlements,
        refresh_interval_secs: nullable_secs("refresh_interval", req.refresh_interval)?,
        offline_grace_secs: nullable_secs("offline_grace", req.offline_grace)?,
        lease_secs: nullable_secs("lease", req.lease)?,
        floating: req.floating,
        overage: req.overage.as_deref().map(overage_of).transpose()?,
        offline_allowed: req.offline_allowed,
        deactivation_limit: req.deactivation_limit,
        deactivation_period_secs: secs_of("deactivation_period", req.deactivation_period.as_ref())?,
    };
    Ok(JsonResponse(state.licensing.update_policy(&name, update, &ctx).await?.into()))
}

/// `DELETE /v1/policies/{name}`: 204; 409 `policy_in_use` (with `licenses`) while licenses use it.
pub(crate) async fn delete(
    State(state): State<AppState>,
    AdminContext(ctx): AdminContext,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.licensing.delete_policy(&name, &ctx).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations_are_text_or_whole_seconds_and_anything_else_says_so() {
        assert!(matches!(serde_json::from_str::<DurationValue>("90").unwrap(), DurationValue::Secs(90)));
        assert!(
            matches!(serde_json::from_str::<DurationValue>("\"2h\"").unwrap(), DurationValue::Text(t) if t == "2h")
        );
        for bad in ["-5", "1.5", "true", "[]"] {
            let e = serde_json::from_str::<DurationValue>(bad).unwrap_err().to_string();
            assert!(e.contains("a duration such as \"12h\""), "{bad}: {e}");
        }
    }
}
