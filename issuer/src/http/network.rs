//! Admin endpoints of the client network rules (docs/network.md): `/v1/ip-rules` and the addresses a license was
//! used from.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json as JsonResponse;
use serde::Deserialize;
use uuid::Uuid;

use super::admin::not_null;
use super::error::ApiError;
use super::extract::{AdminContext, Json, Path, Query};
use super::AppState;
use crate::service::{LicenseRef, NewIpRule, ServiceError};
use crate::store::IpScope;
use crate::views::{IpRuleView, IpRulesView, LicenseIpsView};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRequest {
    cidr: String,
    action: String,
    /// A license id or key: the rule applies to that license only.
    #[serde(default, deserialize_with = "not_null")]
    license: Option<String>,
    /// A policy name: the rule applies to its licenses.
    #[serde(default, deserialize_with = "not_null")]
    policy: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    note: Option<String>,
}

/// `POST /v1/ip-rules`: 201 with the rule; without `license` and `policy` it is global.
pub(crate) async fn create(
    State(state): State<AppState>,
    AdminContext(ctx): AdminContext,
    Json(req): Json<CreateRequest>,
) -> Result<(StatusCode, JsonResponse<IpRuleView>), ApiError> {
    let new =
        NewIpRule { cidr: req.cidr, action: req.action, license: req.license, policy: req.policy, note: req.note };
    let rule = state.licensing.create_ip_rule(new, &ctx).await?;
    Ok((StatusCode::CREATED, JsonResponse(IpRuleView::from(&rule))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    license: Option<String>,
    policy: Option<String>,
}

/// `GET /v1/ip-rules?license=&policy=`: the stored rules (of one license or policy), and the configured ones.
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<JsonResponse<IpRulesView>, ApiError> {
    let scope = match (q.license, q.policy) {
        (Some(_), Some(_)) => return Err(ApiError::invalid_field("license", "give a license or a policy, not both")),
        (Some(which), None) => {
            let license = state.licensing.license(&LicenseRef::parse(&which)?).await?;
            Some(IpScope::License(license.id))
        }
        (None, Some(name)) => Some(IpScope::Policy(state.licensing.policy(&name).await?.name)),
        (None, None) => None,
    };
    let rules = state.licensing.ip_rules(scope.as_ref()).await?;
    Ok(JsonResponse(IpRulesView::of(&rules, state.licensing.configured_ip_rules())))
}

/// `DELETE /v1/ip-rules/{id}`: 200 with the rule as it was; 404 `ip_rule_not_found`.
pub(crate) async fn delete(
    State(state): State<AppState>,
    AdminContext(ctx): AdminContext,
    Path(id): Path<String>,
) -> Result<JsonResponse<IpRuleView>, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::from(ServiceError::IpRuleNotFound))?;
    let rule = state.licensing.delete_ip_rule(id, &ctx).await?;
    Ok(JsonResponse(IpRuleView::from(&rule)))
}

/// `GET /v1/licenses/{id}/ips`: the addresses the license was used from, with first and last seen and counts.
pub(crate) async fn license_ips(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<JsonResponse<LicenseIpsView>, ApiError> {
    let (license, ips) = state.licensing.license_ips(&LicenseRef::parse(&id)?).await?;
    Ok(JsonResponse(LicenseIpsView::of(&license, ips)))
}
