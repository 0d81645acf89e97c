//! Request ids: every request runs in a `request` span carrying its id, method and route (the template, such as
//! `/v1/licenses/{id}`: a path may hold a license key), so every log line it causes
//! (text or `ISSUER_LOG_FORMAT=json`) names it, and the answer carries it in `x-request-id`. A client's own
//! `X-Request-Id` (1-64 characters of `A-Z a-z 0-9 . _ -`) is kept, so a proxy's id follows the request; anything
//! else is replaced by a new id.

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

use super::AppState;

/// The header, in and out.
pub const REQUEST_ID: &str = "x-request-id";

/// The id a client may choose: short, and nothing a log reader could mistake for structure.
fn acceptable(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Runs the request in its span and answers its id. Its end is logged at debug level (`ISSUER_LOG=issuer=debug` is
/// an access log): one line per request at info level would cost the busiest routes more than they do.
pub(crate) async fn with_request_id(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| acceptable(id))
        .map_or_else(|| uuid::Uuid::now_v7().simple().to_string(), str::to_string);
    // The route's template, never the path itself: a path may hold a license key (`/v1/licenses/{id}` takes one).
    let route = request.extensions().get::<MatchedPath>().map_or("(no route)", |p| p.as_str()).to_string();
    // At error level, so that whatever level the log keeps, the lines of a request carry its span.
    let method = request.method().as_str().to_string();
    let span = tracing::error_span!("request", request_id = %id, method = %method, route = %route);
    if let Ok(value) = HeaderValue::from_str(&id) {
        request.headers_mut().insert(REQUEST_ID, value);
    }
    let started = std::time::Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let (status, elapsed) = (response.status().as_u16(), started.elapsed());
    state.metrics.request(&route, &method, status, elapsed.as_secs_f64());
    span.in_scope(|| tracing::debug!(status, micros = elapsed.as_micros() as u64, "answered"));
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_ids_are_kept() {
        assert!(acceptable("b7d1c0de-42") && acceptable("a.b_c") && acceptable(&"x".repeat(64)));
        for bad in ["", "has space", "quote\"", "new\nline", "é", &"x".repeat(65)] {
            assert!(!acceptable(bad), "{bad:?}");
        }
    }
}
