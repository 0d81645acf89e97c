//! Admin endpoints under `/v1/webhooks` (docs/webhooks.md): endpoints, secret rotation, deliveries and resends.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json as JsonResponse;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::admin::{log_page_limit, next_after, not_null};
use super::error::ApiError;
use super::extract::{AdminContext, Json, Path, Query};
use super::policies::NoQuery;
use super::AppState;
use crate::service::{NewWebhook, ServiceError};
use crate::views::{DeliveryView, WebhookView};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRequest {
    url: String,
    events: Vec<String>,
    #[serde(default, deserialize_with = "not_null")]
    description: Option<String>,
}

/// An endpoint id from the path; one that is not a UUID names no endpoint.
fn endpoint_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::from(ServiceError::WebhookNotFound))
}

/// `POST /v1/webhooks`: 201 with the endpoint and its `secret` (shown only here and on rotation).
pub(crate) async fn create(
    State(state): State<AppState>,
    AdminContext(ctx): AdminContext,
    Json(req): Json<CreateRequest>,
) -> Result<(StatusCode, JsonResponse<WebhookView>), ApiError> {
    let new = NewWebhook { url: req.url, events: req.events, description: req.description.unwrap_or_default() };
    let endpoint = state.licensing.create_webhook(new, &ctx).await?;
    Ok((StatusCode::CREATED, JsonResponse(WebhookView::at(endpoint, ctx.now, true))))
}

#[derive(Debug, Serialize)]
pub(crate) struct ListResponse {
    webhooks: Vec<WebhookView>,
}

/// `GET /v1/webhooks`: every endpoint, oldest first, without secrets.
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(NoQuery {}): Query<NoQuery>,
) -> Result<JsonResponse<ListResponse>, ApiError> {
    let now = state.licensing.now();
    let webhooks = state.licensing.webhooks().await?.into_iter().map(|e| WebhookView::at(e, now, false)).collect();
    Ok(JsonResponse(ListResponse { webhooks }))
}

/// `GET /v1/webhooks/{id}`.
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<JsonResponse<WebhookView>, ApiError> {
    let endpoint = state.licensing.webhook(endpoint_id(&id)?).await?;
    Ok(JsonResponse(WebhookView::at(endpoint, state.licensing.now(), false)))
}

/// `DELETE /v1/webhooks/{id}`: 204; its queued deliveries are dropped.
pub(crate) async fn delete(
    State(state): State<AppState>,
    AdminContext(ctx): AdminContext,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.licensing.delete_webhook(endpoint_id(&id)?, &ctx).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/webhooks/{id}/rotate-secret`: the endpoint with its new `secret`; the old one keeps signing beside it
/// until `previous_secret_until`.
pub(crate) async fn rotate_secret(
    State(state): State<AppState>,
    AdminContext(ctx): AdminContext,
    Path(id): Path<String>,
) -> Result<JsonResponse<WebhookView>, ApiError> {
    let endpoint = state.licensing.rotate_webhook_secret(endpoint_id(&id)?, &ctx).await?;
    Ok(JsonResponse(WebhookView::at(endpoint, ctx.now, true)))
}

/// `POST /v1/webhooks/{id}/enable`: a disabled endpoint gets deliveries again.
pub(crate) async fn enable(
    State(state): State<AppState>,
    AdminContext(ctx): AdminContext,
    Path(id): Path<String>,
) -> Result<JsonResponse<WebhookView>, ApiError> {
    let endpoint = state.licensing.enable_webhook(endpoint_id(&id)?, &ctx).await?;
    Ok(JsonResponse(WebhookView::at(endpoint, ctx.now, false)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeliveriesQuery {
    after: Option<i64>,
    limit: Option<u32>,
}

#[derive(Debug, Serialize)]
pub(crate) struct DeliveriesResponse {
    deliveries: Vec<DeliveryView>,
    next_after: Option<i64>,
}

/// `GET /v1/webhooks/{id}/deliveries?after=&limit=`: oldest first; pass `next_after` as `after` for the next page.
pub(crate) async fn deliveries(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<DeliveriesQuery>,
) -> Result<JsonResponse<DeliveriesResponse>, ApiError> {
    let limit = log_page_limit(q.limit)?;
    let found = state.licensing.deliveries(endpoint_id(&id)?, q.after.unwrap_or(0), limit).await?;
    let next_after = next_after(&found, limit, |d| d.id);
    Ok(JsonResponse(DeliveriesResponse { deliveries: found.into_iter().map(Into::into).collect(), next_after }))
}

/// `POST /v1/webhooks/{id}/deliveries/{delivery}/resend`: 202 with the new delivery of the same event.
pub(crate) async fn resend(
    State(state): State<AppState>,
    AdminContext(ctx): AdminContext,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<(StatusCode, JsonResponse<DeliveryView>), ApiError> {
    let delivery: i64 = delivery.parse().map_err(|_| ApiError::from(ServiceError::DeliveryNotFound))?;
    let queued = state.licensing.resend_delivery(endpoint_id(&id)?, delivery, &ctx).await?;
    Ok((StatusCode::ACCEPTED, JsonResponse(queued.into())))
}
