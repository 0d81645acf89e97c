//! `GET /metrics`: Prometheus text for the instance (docs/operations.md, "Metrics"), behind the admin token on the
//! main listener. Counters are the instance's own since its start; gauges are read at each scrape.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use time::OffsetDateTime;

use super::error::ApiError;
use super::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 µs to about 13 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// The instance's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    validations: Family<CodeLabels, Counter>,
    activations: Family<OutcomeLabels, Counter>,
    rate_limited: Counter,
    webhook_pending: Gauge,
    key_age: Gauge,
    certificate_expiry: Gauge,
    connections: Connections,
}

/// What the server loop counts of its connections.
#[derive(Clone, Debug, Default)]
pub(crate) struct Connections {
    /// Connections open now.
    pub(crate) open: Gauge,
    /// Connections closed at once because every connection was busy at the cap.
    pub(crate) refused: Counter,
}

impl Metrics {
    /// The instance's metrics, with what `store` measures of itself.
    pub fn new(store: &dyn crate::store::Store) -> Self {
        let mut registry = Registry::with_prefix("issuer");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register("http_request_duration_seconds", "Time to answer, by route template", latency.clone());
        let validations = Family::<CodeLabels, Counter>::default();
        registry.register("validations", "Validations answered, by code", validations.clone());
        let activations = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "activations",
            "Online activations: new, existing (a re-activation) or refused",
            activations.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "rate_limited",
            "Public requests refused by the per-address rate limit",
            rate_limited.clone(),
        );
        let webhook_pending = Gauge::default();
        registry.register(
            "webhook_deliveries_pending",
            "Webhook deliveries waiting (the outbox's depth), every endpoint",
            webhook_pending.clone(),
        );
        let key_age = Gauge::default();
        registry.register("signing_key_age_seconds", "Age of the signing key in use", key_age.clone());
        let certificate_expiry = Gauge::default();
        registry.register(
            "signing_certificate_expires_in_seconds",
            "Time left on the certificate covering the signing key (-1 without roots)",
            certificate_expiry.clone(),
        );
        let connections = Connections::default();
        registry.register("http_open_connections", "HTTP connections open now", connections.open.clone());
        registry.register(
            "http_connections_refused",
            "Connections closed at once: at the connection cap, every connection was busy",
            connections.refused.clone(),
        );
        store.register_metrics(&mut registry);
        Metrics {
            registry,
            requests,
            latency,
            validations,
            activations,
            rate_limited,
            webhook_pending,
            key_age,
            certificate_expiry,
            connections,
        }
    }

    /// Counts an answered request.
    pub(crate) fn request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let labels = RequestLabels { route: route.to_string(), method: method.to_string(), status };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&RouteLabels { route: route.to_string() }).observe(seconds);
    }

    /// Counts a validation answer.
    pub(crate) fn validation(&self, code: &str) {
        self.validations.get_or_create(&CodeLabels { code: code.to_string() }).inc();
    }

    /// Counts an online activation: `new`, `existing` or `refused`.
    pub(crate) fn activation(&self, outcome: &'static str) {
        self.activations.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// What the server loop updates of its connections.
    pub(crate) fn connections(&self) -> Connections {
        self.connections.clone()
    }

    /// Counts a request the rate limit refused.
    pub(crate) fn rate_limited(&self) {
        self.rate_limited.inc();
    }
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let m = &state.metrics;
    let pending = state.licensing.store().pending_deliveries().await.map_err(crate::service::ServiceError::from)?;
    m.webhook_pending.set(i64::try_from(pending).unwrap_or(i64::MAX));
    let ring = state.licensing.key_ring();
    let now = OffsetDateTime::now_utc();
    let active = ring.active().key_id();
    if let Some(entry) = ring.entries().iter().find(|e| e.public.key_id() == active) {
        m.key_age.set((now - entry.created_at).whole_seconds());
    }
    let expiry = match ring.signing_certificate(now, None) {
        Ok(Some(cert)) => (cert.not_after() - now).whole_seconds(),
        _ => -1,
    };
    m.certificate_expiry.set(expiry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &m.registry)
        .map_err(|e| ApiError::internal(&std::io::Error::other(e.to_string())))?;
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(response)
}
