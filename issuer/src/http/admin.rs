//! Admin endpoints under `/v1/licenses`, behind `Authorization: Bearer <admin token>` (policies: `policies`).

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json as JsonResponse;
use serde::{Deserialize, Deserializer, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::error::{ApiError, ErrorCode};
use super::extract::{AdminContext, Json, Path, Query};
use super::AppState;
use crate::config::parse_duration_secs;
use crate::service::{Expiry, LicenseRef, NewLicense, ServiceError};
use crate::store::Scope;
use crate::store::{Cursor, EffectiveStatus, LicenseFilter, LicenseUpdate};
pub(crate) use crate::views::{next_after, EventView};
pub(crate) use crate::views::{LicenseView, MachineView};

/// Default and largest page sizes of the list endpoints.
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

/// The page size of a log paged by id (events, deliveries): 1 to 1000, default 100.
pub(crate) fn log_page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit.unwrap_or(100) {
        n @ 1..=1000 => Ok(n),
        _ => Err(ApiError::invalid_field("limit", "must be between 1 and 1000")),
    }
}

/// Middleware: 401 unless the request carries an accepted admin token, 403 `insufficient_scope` when a read-scoped
/// token asks for anything but GET; the accepted [`Caller`] goes to the handler (the actor of its events).
pub(crate) async fn require_admin(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return ApiError::unauthorized("missing `Authorization: Bearer <admin token>` header").into_response();
    };
    let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return ApiError::unauthorized("the Authorization header must be `Bearer <admin token>`").into_response();
    };
    match state.licensing.authenticate(token).await {
        Ok(Some(caller)) => {
            if caller.scope == Scope::Read && !matches!(*request.method(), Method::GET | Method::HEAD) {
                let message = "this admin token is read-scoped: it can read but not change anything";
                return ApiError::new(StatusCode::FORBIDDEN, ErrorCode::InsufficientScope, message).into_response();
            }
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Ok(None) => ApiError::unauthorized("the admin token is not valid (unknown or revoked)").into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

fn parse_time(field: &'static str, text: &str) -> Result<OffsetDateTime, ApiError> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|_| ApiError::invalid_field(field, "expected an RFC 3339 time such as 2027-01-31T00:00:00Z"))
}

fn metadata_object(
    value: Option<serde_json::Value>,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, ApiError> {
    match value {
        None => Ok(None),
        Some(serde_json::Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(ApiError::invalid_field("metadata", "must be a JSON object")),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRequest {
    email: String,
    #[serde(default, deserialize_with = "not_null")]
    product: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    max_machines: Option<u32>,
    /// Absent: the policy's duration (or perpetual); `null`: perpetual, whatever the policy says.
    #[serde(default, deserialize_with = "present")]
    expires_at: Option<Option<String>>,
    duration: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    entitlements: Option<Vec<String>>,
    metadata: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "not_null")]
    policy: Option<String>,
    /// `machine` or `domain`; absent: the policy's kind (or `machine`).
    #[serde(default, deserialize_with = "not_null")]
    kind: Option<String>,
}

/// `POST /v1/licenses`: 201 with the new license; a retry with the same `Idempotency-Key` and body gets 200 and the
/// same license, with another body 409.
pub(crate) async fn create(
    State(state): State<AppState>,
    AdminContext(ctx): AdminContext,
    headers: HeaderMap,
    Json(req): Json<CreateRequest>,
) -> Result<(StatusCode, JsonResponse<LicenseView>), ApiError> {
    let expiry = match (req.expires_at, req.duration.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_field("expires_at", "give either expires_at or duration, not both"))
        }
        (Some(Some(t)), None) => Some(Expiry::At(parse_time("expires_at", &t)?)),
        (Some(None), None) => Some(Expiry::Never),
        (None, Some(d)) => {
            Some(Expiry::After(parse_duration_secs(d).map_err(|m| ApiError::invalid_field("duration", m))?))
        }
        (None, None) => None,
    };
    let idempotency_key = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str().map_err(|_| ApiError::invalid_field("Idempotency-Key", "must be visible ASCII"))?.to_string(),
        ),
        None => None,
    };
    let new = NewLicense {
        email: req.email,
        product: req.product,
        max_machines: req.max_machines,
        expiry,
        entitlements: req.entitlements,
        metadata: metadata_object(req.metadata)?.unwrap_or_default(),
        policy: req.policy,
        kind: req.kind.map(|k| k.parse().map_err(|m: String| ApiError::invalid_field("kind", m))).transpose()?,
    };
    let (license, created) = state.licensing.create_license(new, idempotency_key.as_deref(), &ctx).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, JsonResponse(LicenseView::at(license, ctx.now))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    email: Option<String>,
    email_prefix: Option<String>,
    product: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ListResponse {
    licenses: Vec<LicenseView>,
    next_cursor: Option<String>,
}

/// `GET /v1/licenses?email=&email_prefix=&product=&status=&limit=&cursor=`; an unknown parameter is 400.
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<JsonResponse<ListResponse>, ApiError> {
    let status =
        q.status.map(|s| s.parse::<EffectiveStatus>()).transpose().map_err(|m| ApiError::invalid_field("status", m))?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::invalid_field("limit", format!("must be between 1 and {MAX_PAGE}")));
    }
    let after = match q.cursor.as_deref() {
        Some(c) => Some(
            Cursor::decode(c).ok_or_else(|| ApiError::invalid_field("cursor", "not a cursor from a previous page"))?,
        ),
        None => None,
    };
    let now = state.licensing.now();
    let filter = LicenseFilter {
        email: q.email,
        email_prefix: q.email_prefix,
        product: q.product,
        status,
        now: Some(now),
        limit,
        after,
    };
    let page = state.licensing.list_licenses(&filter).await?;
    Ok(JsonResponse(ListResponse {
        licenses: page.licenses.into_iter().map(|l| LicenseView::at(l, now)).collect(),
        next_cursor: page.next.map(|c| c.encode()),
    }))
}

/// `GET /v1/licenses/{id}` (id or key).
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<JsonResponse<LicenseView>, ApiError> {
    let which = LicenseRef::parse(&id)?;
    Ok(JsonResponse(LicenseView::at(state.licensing.license(&which).await?, state.licensing.now())))
}

/// A field that may be left out but is never `null`: `None` only when it is absent (with `#[serde(default)]`); an
/// explicit `null` is refused like any other wrong type, rather than read as "left out".
pub(crate) fn not_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
pub(crate) fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateRequest {
    max_machines: Option<u32>,
    #[serde(default, deserialize_with = "present")]
    expires_at: Option<Option<String>>,
    duration: Option<String>,
    entitlements: Option<Vec<String>>,
    metadata: Option<serde_json::Value>,
}

/// `PATCH /v1/licenses/{id}`: fields given are replaced; `"expires_at": null` makes the license perpetual and
/// `duration` sets the expiry that long from now.
pub(crate) async fn update(
    State(state): State<AppState>,
    AdminContext(ctx): AdminContext,
    Path(id): Path<String>,
    Json(req): Json<UpdateRequest>,
) -> Result<JsonResponse<LicenseView>, ApiError> {
    let which = LicenseRef::parse(&id)?;
    let expires_at = match (req.expires_at, req.duration.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_field("expires_at", "give either expires_at or duration, not both"))
        }
        (Some(None), None) => Some(None),
        (Some(Some(t)), None) => Some(Some(parse_time("expires_at", &t)?)),
        (None, Some(d)) => {
            let secs = parse_duration_secs(d).map_err(|m| ApiError::invalid_field("duration", m))?;
            let at = i64::try_from(secs)
                .ok()
                .and_then(|s| ctx.now.replace_nanosecond(0).unwrap_or(ctx.now).checked_add(time::Duration::seconds(s)))
                .ok_or_else(|| ApiError::invalid_field("duration", "is too long"))?;
            Some(Some(at))
        }
        (None, None) => None,
    };
    let update = LicenseUpdate {
        max_machines: req.max_machines,
        expires_at,
        entitlements: req.entitlements,
        metadata: metadata_object(req.metadata)?,
    };
    Ok(JsonResponse(LicenseView::at(state.licensing.update_license(&which, update, &ctx).await?, ctx.now)))
}

/// `POST /v1/licenses/{id}/suspend`.
pub(crate) async fn suspend(
    State(state): State<AppState>,
    AdminContext(ctx): AdminContext,
    Path(id): Path<String>,
) -> Result<JsonResponse<LicenseView>, ApiError> {
    let which = LicenseRef::parse(&id)?;
    Ok(JsonResponse(LicenseView::at(state.licensing.suspend(&which, &ctx).await?, ctx.now)))
}

/// `POST /v1/licenses/{id}/reinstate`.
pub(crate) async fn reinstate(
    State(state): State<AppState>,
    AdminContext(ctx): AdminContext,
    Path(id): Path<String>,
) -> Result<JsonResponse<LicenseView>, ApiError> {
    let which = LicenseRef::parse(&id)?;
    Ok(JsonResponse(LicenseView::at(state.licensing.reinstate(&which, &ctx).await?, ctx.now)))
}

/// `POST /v1/licenses/{id}/revoke`.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    AdminContext(ctx): AdminContext,
    Path(id): Path<String>,
) -> Result<JsonResponse<LicenseView>, ApiError> {
    let which = LicenseRef::parse(&id)?;
    Ok(JsonResponse(LicenseView::at(state.licensing.revoke(&which, &ctx).await?, ctx.now)))
}

#[derive(Debug, Serialize)]
pub(crate) struct MachinesResponse {
    max_machines: u32,
    machines: Vec<MachineView>,
}

/// `GET /v1/licenses/{id}/machines`.
pub(crate) async fn machines(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<JsonResponse<MachinesResponse>, ApiError> {
    let which = LicenseRef::parse(&id)?;
    let (license, machines) = state.licensing.machines(&which).await?;
    Ok(JsonResponse(MachinesResponse {
        max_machines: license.max_machines,
        machines: machines.into_iter().map(Into::into).collect(),
    }))
}

/// `DELETE /v1/licenses/{id}/machines/{fingerprint}`: 204, or 404 `machine_not_found`.
pub(crate) async fn remove_machine(
    State(state): State<AppState>,
    AdminContext(ctx): AdminContext,
    Path((id, fingerprint)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let which = LicenseRef::parse(&id)?;
    match state.licensing.remove_machine(&which, &fingerprint, &ctx).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(ServiceError::NotActivated) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::MachineNotFound,
            "no machine with this fingerprint is activated on the license",
        )),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    after: Option<i64>,
    limit: Option<u32>,
}

#[derive(Debug, Serialize)]
pub(crate) struct EventsResponse {
    pub(crate) events: Vec<EventView>,
    pub(crate) next_after: Option<i64>,
}

/// `GET /v1/licenses/{id}/events?after=&limit=`: oldest first; pass `next_after` as `after` for the next page.
pub(crate) async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Result<JsonResponse<EventsResponse>, ApiError> {
    let which = LicenseRef::parse(&id)?;
    let limit = log_page_limit(q.limit)?;
    let events = state.licensing.events(&which, q.after.unwrap_or(0), limit).await?;
    let next_after = next_after(&events, limit, |e| e.id);
    Ok(JsonResponse(EventsResponse { events: events.into_iter().map(Into::into).collect(), next_after }))
}
