//! Per-client-IP rate limit of the public endpoints (GCRA, via `governor`), so license keys cannot be guessed by
//! brute force.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::error::ApiError;
use super::extract::client_ip;
use super::AppState;

/// Forget idle clients once this many are tracked, checked every `RETAIN_EVERY` requests.
const RETAIN_THRESHOLD: usize = 10_000;
const RETAIN_EVERY: u64 = 1024;

/// A keyed rate limiter by client IP.
#[derive(Debug)]
pub struct IpRateLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    requests: AtomicU64,
}

impl IpRateLimiter {
    /// `per_second` requests per second with bursts of `burst`; `None` when `per_second` is 0 (no limit).
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        let quota = Quota::per_second(rate).allow_burst(burst);
        Some(IpRateLimiter {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            requests: AtomicU64::new(0),
        })
    }

    /// `Ok` when the client may go on, else the whole seconds to wait.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        if n.is_multiple_of(RETAIN_EVERY) && self.limiter.len() > RETAIN_THRESHOLD {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

/// Middleware: 429 with `Retry-After` when the client IP is over its limit.
pub(crate) async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let ip = client_ip(request.extensions(), request.headers(), &state.trusted_proxies);
    if let (Some(limiter), Some(ip)) = (state.limiter.as_ref().map(Arc::as_ref), ip) {
        if let Err(wait) = limiter.check(ip) {
            state.metrics.rate_limited();
            return ApiError::rate_limited(wait.max(1)).into_response();
        }
    }
    next.run(request).await
}
