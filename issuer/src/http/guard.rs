//! The request body guard, the outermost middleware: the body must arrive within the body timeout (else 408
//! `body_timeout`), and a response sent before the request's body was read to its end (401, 413, 415, 429, ...) says
//! `Connection: close`.
//!
//! Why the second: the unread rest of the body is still on the connection, so the server cannot read the next
//! request from it and closes it after the response. Without `Connection: close` the client learns that only when
//! its next request on the connection fails, which clients that send headers and body in separate writes (Python's
//! `http.client`) hit often, and which a reverse proxy reusing upstream connections turns into 502s.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::error::{ApiError, ErrorCode};
use super::AppState;

/// What became of a request body.
#[derive(Debug, Default)]
struct Outcome {
    /// Read to its end.
    finished: AtomicBool,
    /// Not in full within the body timeout.
    timed_out: AtomicBool,
}

/// A request body with a deadline that records how far it was read. The deadline is checked on every poll, and a
/// timer is armed only when the body stalls (a poll that finds no data), so a body that arrives with its head costs
/// no timer.
struct GuardedBody {
    inner: Body,
    deadline: tokio::time::Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    outcome: Arc<Outcome>,
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if tokio::time::Instant::now() >= self.deadline {
            self.outcome.timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new("the request body did not arrive within the body timeout"))));
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Pending => {
                // Wake this task at the deadline if no data comes before it.
                let deadline = self.deadline;
                let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_ready() {
                    self.outcome.timed_out.store(true, Ordering::Relaxed);
                    let error = axum::Error::new("the request body did not arrive within the body timeout");
                    return Poll::Ready(Some(Err(error)));
                }
            }
            Poll::Ready(None) => self.outcome.finished.store(true, Ordering::Relaxed),
            Poll::Ready(Some(_)) if self.inner.is_end_stream() => self.outcome.finished.store(true, Ordering::Relaxed),
            Poll::Ready(Some(_)) => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether the request announces a body (a non-zero length, or chunked).
fn has_body(request: &Request) -> bool {
    let headers = request.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

/// The middleware.
pub(crate) async fn body_guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let announced = has_body(&request);
    let outcome = Arc::new(Outcome::default());
    let timeout = Duration::from_secs(state.http.body_timeout_secs);
    let deadline = tokio::time::Instant::now() + timeout;
    let request =
        request.map(|inner| Body::new(GuardedBody { inner, deadline, timer: None, outcome: outcome.clone() }));
    let mut response = next.run(request).await;
    if outcome.timed_out.load(Ordering::Relaxed) {
        let message = format!("the request body did not arrive within {}s", timeout.as_secs());
        response = ApiError::new(StatusCode::REQUEST_TIMEOUT, ErrorCode::BodyTimeout, message).into_response();
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    } else if announced && !outcome.finished.load(Ordering::Relaxed) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
