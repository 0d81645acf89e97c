//! Admin endpoints of access and accountability: admin tokens (`/v1/admin-tokens`) and the audit log
//! (`/v1/events`, every event with its actor and client IP).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json as JsonResponse;
use serde::{Deserialize, Serialize};

use super::admin::{log_page_limit, next_after, EventsResponse};
use super::error::ApiError;
use super::extract::{AdminContext, Json, Path, Query};
use super::policies::NoQuery;
use super::AppState;
use crate::service::{LicenseRef, ServiceError};
use crate::store::{EventFilter, EventKind, Scope};
use crate::views::AdminTokenView;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTokenRequest {
    label: String,
    scope: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct CreatedToken {
    #[serde(flatten)]
    view: AdminTokenView,
    /// The secret, shown only in this answer.
    token: String,
}

/// `POST /v1/admin-tokens {"label", "scope": "read"|"write"}`: 201 with the token's secret in `token`.
pub(crate) async fn create_token(
    State(state): State<AppState>,
    AdminContext(ctx): AdminContext,
    Json(req): Json<CreateTokenRequest>,
) -> Result<(StatusCode, JsonResponse<CreatedToken>), ApiError> {
    let scope = req.scope.parse::<Scope>().map_err(|m| ApiError::invalid_field("scope", m))?;
    let (token, secret) = state.licensing.create_admin_token(&req.label, scope, &ctx).await?;
    Ok((StatusCode::CREATED, JsonResponse(CreatedToken { view: token.into(), token: secret })))
}

#[derive(Debug, Serialize)]
pub(crate) struct TokensResponse {
    admin_tokens: Vec<AdminTokenView>,
}

/// `GET /v1/admin-tokens`: every stored token (revoked ones too), never a secret.
pub(crate) async fn list_tokens(
    State(state): State<AppState>,
    Query(NoQuery {}): Query<NoQuery>,
) -> Result<JsonResponse<TokensResponse>, ApiError> {
    let admin_tokens = state.licensing.admin_tokens().await?.into_iter().map(Into::into).collect();
    Ok(JsonResponse(TokensResponse { admin_tokens }))
}

/// `DELETE /v1/admin-tokens/{id}`: revokes it (at once, on every instance); the token with its `revoked_at`.
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    AdminContext(ctx): AdminContext,
    Path(id): Path<String>,
) -> Result<JsonResponse<AdminTokenView>, ApiError> {
    Ok(JsonResponse(state.licensing.revoke_admin_token(&id, &ctx).await?.into()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
    license: Option<String>,
    after: Option<i64>,
    limit: Option<u32>,
}

/// `GET /v1/events?type=&license=&after=&limit=`: every event, oldest first; pass `next_after` as `after`.
pub(crate) async fn events(
    State(state): State<AppState>,
    Query(q): Query<EventsQuery>,
) -> Result<JsonResponse<EventsResponse>, ApiError> {
    let limit = log_page_limit(q.limit)?;
    let kind = match q.kind.as_deref() {
        Some(name) => Some(EventKind::from_type(name).ok_or_else(|| {
            ApiError::invalid_field("type", format!("`{name}` is not an event type (docs/webhooks.md lists them)"))
        })?),
        None => None,
    };
    let license_id = match q.license.as_deref() {
        Some(which) => {
            let which = LicenseRef::parse(which).map_err(|e| match e {
                ServiceError::InvalidField { message, .. } => ApiError::invalid_field("license", message),
                other => ApiError::from(other),
            })?;
            Some(state.licensing.license(&which).await?.id)
        }
        None => None,
    };
    let filter = EventFilter { kind, license_id, after: q.after.unwrap_or(0), limit };
    let found = state.licensing.audit_events(&filter).await?;
    let next_after = next_after(&found, limit, |e| e.id);
    Ok(JsonResponse(EventsResponse { events: found.into_iter().map(Into::into).collect(), next_after }))
}
