//! The HTTP API: [`app`] builds the router, [`serve`] runs it until a shutdown signal.
//!
//! Layout: `public`, `admin`, `policies`, `webhooks`, `network` (IP rules, a license's addresses) and `audit` (admin
//! tokens, the audit log) (the handlers), `extract` (extractors whose rejections are [`ApiError`]s),
//! `error` and `codes` (the one error type and every code it can carry), `ratelimit`, `guard` (body timeout and
//! honest keep-alive), `server` (the connection loop: cap, timeouts, accept back-off).

use std::future::Future;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

use crate::config::HttpSettings;
use crate::service::Licensing;

pub(crate) mod admin;
mod audit;
mod codes;
mod error;
mod extract;
mod guard;
mod metrics;
mod network;
pub(crate) mod policies;
mod public;
mod ratelimit;
mod request_id;
mod server;
mod usage;
mod webhooks;

pub use error::{ApiError, ErrorCode};
pub(crate) use public::KeysResponse;
pub use ratelimit::IpRateLimiter;
pub(crate) use server::{fit_connections, raise_open_file_limit};

/// The OpenAPI 3 document of this API, served at `/v1/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../../../docs/openapi.json");

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The licensing service.
    pub licensing: Arc<Licensing>,
    /// The per-IP limiter of the public endpoints; `None` when switched off.
    pub limiter: Option<Arc<IpRateLimiter>>,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// Proxies whose `X-Forwarded-For` names the client (see [`crate::Config::trusted_proxies`]).
    pub trusted_proxies: Arc<[crate::net::Cidr]>,
    /// Connection limits and timeouts ([`serve`] and the body guard).
    pub http: HttpSettings,
    /// The instance's counters, served at `GET /metrics`.
    pub metrics: Arc<metrics::Metrics>,
}

impl AppState {
    /// State with a rate limit of `per_second` (0: none) and `burst`, and a body size limit.
    pub fn new(licensing: Arc<Licensing>, per_second: u32, burst: u32, max_body_bytes: usize) -> Self {
        let metrics = Arc::new(metrics::Metrics::new(licensing.store().as_ref()));
        AppState {
            licensing,
            limiter: IpRateLimiter::new(per_second, burst).map(Arc::new),
            max_body_bytes,
            trusted_proxies: Arc::from([]),
            http: HttpSettings::default(),
            metrics,
        }
    }

    /// Serves under these connection limits and timeouts.
    pub fn with_http_settings(mut self, http: HttpSettings) -> Self {
        self.http = http;
        self
    }

    /// Trusts these proxies' `X-Forwarded-For` headers for the client address.
    pub fn with_trusted_proxies(mut self, proxies: &[crate::net::Cidr]) -> Self {
        self.trusted_proxies = Arc::from(proxies);
        self
    }
}

/// The router with every route. Serve it with connect info (as [`serve`] does) so the rate limit and the event log
/// see client addresses.
pub fn app(state: AppState) -> Router {
    let public = Router::new()
        .route("/v1/activate", post(public::activate))
        .route("/v1/validate", post(public::validate))
        .route("/v1/refresh", post(public::refresh))
        .route("/v1/deactivate", post(public::deactivate))
        .route("/v1/keys", get(public::keys))
        .route("/v1/revocations", get(public::revocations))
        .route("/v1/offline/activate", post(public::offline_activate))
        .route("/v1/offline/deactivate", post(public::offline_deactivate))
        .route_layer(from_fn_with_state(state.clone(), ratelimit::limit));
    let admin = Router::new()
        .route("/v1/licenses", post(admin::create).get(admin::list))
        .route("/v1/licenses/{id}", get(admin::get).patch(admin::update))
        .route("/v1/licenses/{id}/suspend", post(admin::suspend))
        .route("/v1/licenses/{id}/reinstate", post(admin::reinstate))
        .route("/v1/licenses/{id}/revoke", post(admin::revoke))
        .route("/v1/licenses/{id}/machines", get(admin::machines))
        .route("/v1/licenses/{id}/machines/{fingerprint}", axum::routing::delete(admin::remove_machine))
        .route("/v1/licenses/{id}/events", get(admin::events))
        .route("/v1/licenses/{id}/ips", get(network::license_ips))
        .route("/v1/licenses/{id}/usage", get(usage::usage))
        .route("/v1/ip-rules", post(network::create).get(network::list))
        .route("/v1/ip-rules/{id}", axum::routing::delete(network::delete))
        .route("/v1/policies", post(policies::create).get(policies::list))
        .route("/v1/policies/{name}", get(policies::get).patch(policies::update).delete(policies::delete))
        .route("/v1/webhooks", post(webhooks::create).get(webhooks::list))
        .route("/v1/webhooks/{id}", get(webhooks::get).delete(webhooks::delete))
        .route("/v1/webhooks/{id}/rotate-secret", post(webhooks::rotate_secret))
        .route("/v1/webhooks/{id}/enable", post(webhooks::enable))
        .route("/v1/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route("/v1/webhooks/{id}/deliveries/{delivery}/resend", post(webhooks::resend))
        .route("/v1/admin-tokens", post(audit::create_token).get(audit::list_tokens))
        .route("/v1/admin-tokens/{id}", axum::routing::delete(audit::revoke_token))
        .route("/v1/events", get(audit::events))
        .route("/metrics", get(metrics::metrics))
        .route_layer(from_fn_with_state(state.clone(), admin::require_admin));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/openapi.json", get(openapi))
        .merge(public)
        .merge(admin)
        .fallback(|| async { ApiError::route_not_found() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(from_fn_with_state(state.clone(), guard::body_guard))
        .layer(from_fn_with_state(state.clone(), request_id::with_request_id))
        .with_state(state)
}

/// How long `/healthz` waits for the store before calling the instance unhealthy.
const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /healthz`: 200 `{"status":"ok"}` when the store answers within [`HEALTH_TIMEOUT`], else 503
/// `store_unavailable`, so a load balancer stops sending traffic to an instance that lost its database.
async fn healthz(State(state): State<AppState>) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let unavailable = |why: String| {
        tracing::warn!(reason = %why, "health check failed: the store does not answer");
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::StoreUnavailable,
            "the store does not answer; the instance cannot serve requests",
        )
    };
    match tokio::time::timeout(HEALTH_TIMEOUT, state.licensing.store().ping()).await {
        Ok(Ok(())) => Ok(axum::Json(serde_json::json!({ "status": "ok" }))),
        Ok(Err(e)) => Err(unavailable(e.to_string())),
        Err(_) => Err(unavailable(format!("no answer within {HEALTH_TIMEOUT:?}"))),
    }
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}

/// Serves the API over HTTP/1.1 on `listener` under `state.http`'s connection limits and timeouts until `shutdown`
/// completes, then stops accepting, finishes the requests in flight and returns.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let settings = state.http;
    let connections = state.metrics.connections();
    server::serve(listener, app(state), &settings, connections, shutdown).await
}
