//! Public endpoints: the license key (or a token) is the credential.

use axum::extract::State;
use axum::Json as JsonResponse;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::error::{ApiError, ErrorCode};
use super::extract::{ClientIp, Json};
use super::AppState;
use crate::service::{Issued, ServiceError};
use crate::store::{EffectiveStatus, License, LicenseKind};
use verifier::{ActivationRequest, DeactivationCode};

/// What public responses say about a license.
#[derive(Debug, Serialize)]
pub(crate) struct LicenseSummary {
    id: String,
    product: String,
    email: String,
    /// The status as it stands now: an active license past its expiry is `expired`.
    status: EffectiveStatus,
    max_machines: u32,
    #[serde(with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
    entitlements: Vec<String>,
    /// What activations are bound to: `machine` or `domain`.
    kind: LicenseKind,
}

impl LicenseSummary {
    /// The summary of `l` with its status as it stands at `now`.
    fn at(l: &License, now: OffsetDateTime) -> Self {
        LicenseSummary {
            id: l.id.to_string(),
            product: l.product.clone(),
            email: l.email.clone(),
            status: l.effective_status(now),
            max_machines: l.max_machines,
            expires_at: l.expires_at,
            entitlements: l.entitlements.clone(),
            kind: l.kind,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ActivateRequest {
    key: String,
    fingerprint: String,
    name: Option<String>,
    platform: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct TokenResponse {
    token: String,
    #[serde(with = "time::serde::rfc3339::option")]
    refresh_after: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    token_expires_at: Option<OffsetDateTime>,
    license: LicenseSummary,
    machines_used: u32,
    machines_remaining: u32,
    new_machine: bool,
    /// More machines than `max_machines` are active, within the policy's overage.
    overage: bool,
    /// When the machine's lease ends unless it refreshes; `null` without a lease.
    #[serde(with = "time::serde::rfc3339::option")]
    lease_expires_at: Option<OffsetDateTime>,
    /// The signing key's certificate, for apps that embed only the root; `null` without roots.
    certificate: Option<String>,
}

impl TokenResponse {
    fn from_issued(issued: Issued) -> Self {
        TokenResponse {
            token: issued.token,
            refresh_after: issued.refresh_after,
            token_expires_at: issued.token_expires_at,
            license: LicenseSummary::at(&issued.license, issued.claims.issued_at),
            machines_used: issued.machines_used,
            machines_remaining: issued.license.max_machines.saturating_sub(issued.machines_used),
            new_machine: issued.new_machine,
            overage: issued.overage,
            lease_expires_at: issued.lease_expires_at,
            certificate: issued.certificate,
        }
    }
}

/// `POST /v1/activate`.
pub(crate) async fn activate(
    State(state): State<AppState>,
    ip: ClientIp,
    Json(req): Json<ActivateRequest>,
) -> Result<JsonResponse<TokenResponse>, ApiError> {
    let ctx = state.licensing.context(ip.0);
    let issued =
        state.licensing.activate(&req.key, &req.fingerprint, req.name.as_deref(), req.platform.as_deref(), &ctx).await;
    state.metrics.activation(match &issued {
        Ok(i) if i.new_machine => "new",
        Ok(_) => "existing",
        Err(_) => "refused",
    });
    Ok(JsonResponse(TokenResponse::from_issued(issued?)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ValidateRequest {
    key: String,
    fingerprint: String,
    product: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ValidateResponse {
    valid: bool,
    code: &'static str,
    message: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    license: Option<LicenseSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    machines_used: Option<u32>,
    /// With a license: whether more machines than `max_machines` are active (within its overage).
    #[serde(skip_serializing_if = "Option::is_none")]
    overage: Option<bool>,
}

/// `POST /v1/validate`: always 200 for a well-formed request; `valid` and `code` carry the answer.
pub(crate) async fn validate(
    State(state): State<AppState>,
    ip: ClientIp,
    Json(req): Json<ValidateRequest>,
) -> Result<JsonResponse<ValidateResponse>, ApiError> {
    let ctx = state.licensing.context(ip.0);
    let v = state.licensing.validate(&req.key, &req.fingerprint, req.product.as_deref(), &ctx).await?;
    state.metrics.validation(v.code.as_str());
    Ok(JsonResponse(ValidateResponse {
        valid: v.code == crate::service::ValidationCode::Valid,
        code: v.code.as_str(),
        message: v.code.message(),
        license: v.license.as_ref().map(|l| LicenseSummary::at(l, ctx.now)),
        machines_used: v.machines_used,
        overage: v.license.is_some().then_some(v.overage),
    }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct RefreshRequest {
    token: String,
}

/// `POST /v1/refresh`: 200 with a new token, or an error whose code says why not (`revoked`, `suspended`,
/// `expired`, `not_activated`, `license_not_found`, `invalid_token`).
pub(crate) async fn refresh(
    State(state): State<AppState>,
    ip: ClientIp,
    Json(req): Json<RefreshRequest>,
) -> Result<JsonResponse<TokenResponse>, ApiError> {
    let ctx = state.licensing.context(ip.0);
    let issued = state.licensing.refresh(&req.token, &ctx).await?;
    Ok(JsonResponse(TokenResponse::from_issued(issued)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct DeactivateRequest {
    key: String,
    fingerprint: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct DeactivateResponse {
    deactivated: bool,
    machines_used: u32,
    machines_remaining: u32,
}

/// `POST /v1/deactivate`: frees the machine's slot; 404 `not_activated` when it held none.
pub(crate) async fn deactivate(
    State(state): State<AppState>,
    ip: ClientIp,
    Json(req): Json<DeactivateRequest>,
) -> Result<JsonResponse<DeactivateResponse>, ApiError> {
    let ctx = state.licensing.context(ip.0);
    match state.licensing.deactivate(&req.key, &req.fingerprint, &ctx).await {
        Ok((license, used)) => Ok(JsonResponse(DeactivateResponse {
            deactivated: true,
            machines_used: used,
            machines_remaining: license.max_machines.saturating_sub(used),
        })),
        Err(ServiceError::NotActivated) => Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            ErrorCode::NotActivated,
            "this machine is not activated on the license",
        )),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct KeyEntry {
    key_id: String,
    public_key: String,
    status: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    /// The key's certificates (`lkc1.`), newest window last; empty without roots.
    certificates: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct KeysResponse {
    keys: Vec<KeyEntry>,
    /// The root keys (`lrk1.`) that certify the keys; empty without roots.
    roots: Vec<String>,
}

impl KeysResponse {
    /// What `GET /v1/keys` and `issuer keys list --json` say about a ring.
    pub(crate) fn of(ring: &keys::KeyRing) -> Self {
        let keys = ring
            .entries()
            .iter()
            .map(|e| KeyEntry {
                key_id: e.public.key_id().to_string(),
                public_key: e.public.to_string(),
                status: e.status.as_str(),
                created_at: e.created_at,
                certificates: ring.certificates_of(e.public.key_id()).map(ToString::to_string).collect(),
            })
            .collect();
        KeysResponse { keys, roots: ring.roots().map(ToString::to_string).collect() }
    }
}

/// `GET /v1/keys`: the public keys apps should trust, the active one first, with their certificates and the roots.
pub(crate) async fn keys(State(state): State<AppState>) -> JsonResponse<KeysResponse> {
    JsonResponse(KeysResponse::of(&state.licensing.key_ring()))
}

#[derive(Debug, Serialize)]
pub(crate) struct RevocationsResponse {
    /// The signed list (`lrl1.`).
    revocation_list: String,
    sequence: u64,
    #[serde(with = "time::serde::rfc3339")]
    issued_at: OffsetDateTime,
    key_id: String,
    /// The signing key's certificate, for apps that embed only the root; `null` without roots.
    certificate: Option<String>,
}

/// `GET /v1/revocations`: the signed list of revoked licenses, for apps that verify offline.
pub(crate) async fn revocations(State(state): State<AppState>) -> Result<JsonResponse<RevocationsResponse>, ApiError> {
    let signed = state.licensing.revocation_list().await?;
    Ok(JsonResponse(RevocationsResponse {
        revocation_list: signed.list.clone(),
        sequence: signed.sequence,
        issued_at: signed.issued_at,
        key_id: signed.key_id.clone(),
        certificate: signed.certificate.clone(),
    }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct OfflineActivateRequest {
    request: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct OfflineTokenResponse {
    token: String,
    kind: &'static str,
    license: LicenseSummary,
    machines_used: u32,
    machines_remaining: u32,
    new_machine: bool,
    /// More machines than `max_machines` are active, within the policy's overage.
    overage: bool,
    /// The signing key's certificate, for apps that embed only the root; `null` without roots.
    certificate: Option<String>,
}

/// `POST /v1/offline/activate`: turns an `ACT1-` activation request into an offline token (no token expiry),
/// recording the activation like `/v1/activate` does. A mistyped request is 422 `mistyped_code`.
pub(crate) async fn offline_activate(
    State(state): State<AppState>,
    ip: ClientIp,
    Json(req): Json<OfflineActivateRequest>,
) -> Result<JsonResponse<OfflineTokenResponse>, ApiError> {
    let request = ActivationRequest::from_code(&req.request).map_err(ServiceError::InvalidCode)?;
    let ctx = state.licensing.context(ip.0);
    let issued = state.licensing.activate_offline(&request, &ctx).await?;
    Ok(JsonResponse(OfflineTokenResponse {
        token: issued.token,
        kind: "offline",
        license: LicenseSummary::at(&issued.license, issued.claims.issued_at),
        machines_used: issued.machines_used,
        machines_remaining: issued.license.max_machines.saturating_sub(issued.machines_used),
        new_machine: issued.new_machine,
        overage: issued.overage,
        certificate: issued.certificate,
    }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct OfflineDeactivateRequest {
    code: String,
}

/// `POST /v1/offline/deactivate`: redeems a `DEA1-` deactivation code, freeing the slot of the machine that held the
/// token; 409 `already_redeemed` the second time, 404 `unknown_deactivation_code` for a code no machine matches.
pub(crate) async fn offline_deactivate(
    State(state): State<AppState>,
    ip: ClientIp,
    Json(req): Json<OfflineDeactivateRequest>,
) -> Result<JsonResponse<DeactivateResponse>, ApiError> {
    let code = DeactivationCode::from_code(&req.code).map_err(ServiceError::InvalidCode)?;
    let ctx = state.licensing.context(ip.0);
    let done = state.licensing.redeem_deactivation(&code, &ctx).await?;
    Ok(JsonResponse(DeactivateResponse {
        deactivated: true,
        machines_used: done.machines_used,
        machines_remaining: done.license.max_machines.saturating_sub(done.machines_used),
    }))
}
