//! The dispatcher: claims due deliveries from the outbox, POSTs them signed, records each attempt, and decides
//! retries (exponential backoff with jitter within [`RETRY_WINDOW`]) and when an endpoint is disabled.
//!
//! A claim moves the delivery's next attempt past the attempt's timeout, so a delivery whose process dies mid-attempt
//! (kill -9) is claimed again, by this instance after a restart or by another: at-least-once. Receivers
//! de-duplicate by `webhook-id` (the event id). A graceful stop ([`Licensing::stop_webhook_delivery`]) claims nothing
//! more and waits for the attempts in flight to be recorded, so a restart re-sends nothing.
//!
//! The dispatcher is a pool: at most [`MAX_IN_FLIGHT`] attempts at once, of which at most [`MAX_PER_ENDPOINT`] to one
//! endpoint, claiming again as soon as a slot frees; a slow or dead endpoint holds its own slots only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use futures_util::StreamExt as _;
use rand::Rng as _;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::{sign, RETRY_WINDOW};
use crate::service::Licensing;
use crate::store::{Attempt, Claimed, Event, EventKind, StoreError, StoreExt as _};

/// How often an idle dispatcher looks for due deliveries.
const POLL_INTERVAL: StdDuration = StdDuration::from_millis(250);

/// Most attempts in flight at once, per instance.
pub const MAX_IN_FLIGHT: usize = 32;

/// Most attempts in flight to one endpoint at once, per instance.
pub const MAX_PER_ENDPOINT: usize = 8;

/// A claim lasts the attempt's timeout plus this, so a live attempt is never claimed twice: room for recording it
/// (a pool connection or a writer batch can take seconds under load) and for clock differences between instances.
const CLAIM_MARGIN: Duration = Duration::seconds(30);

/// The dispatcher's state: the slots of the pool, the attempts in flight per endpoint, whether it is stopping, and
/// how many attempts this instance made.
#[derive(Debug)]
pub(super) struct Pool {
    slots: Arc<Semaphore>,
    per_endpoint: Mutex<HashMap<Uuid, usize>>,
    stopping: AtomicBool,
    attempts: AtomicU64,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            per_endpoint: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            attempts: AtomicU64::new(0),
        }
    }
}

impl Pool {
    /// The endpoints with [`MAX_PER_ENDPOINT`] attempts in flight: a claim skips them.
    fn saturated(&self) -> Vec<Uuid> {
        let in_flight = self.per_endpoint.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        in_flight.iter().filter(|(_, &n)| n >= MAX_PER_ENDPOINT).map(|(&id, _)| id).collect()
    }

    fn begin(&self, endpoint: Uuid) {
        let mut in_flight = self.per_endpoint.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *in_flight.entry(endpoint).or_default() += 1;
        self.attempts.fetch_add(1, Ordering::Relaxed);
    }

    fn end(&self, endpoint: Uuid) {
        let mut in_flight = self.per_endpoint.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = in_flight.get_mut(&endpoint) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                in_flight.remove(&endpoint);
            }
        }
    }
}

/// The longest wait between two attempts.
const MAX_DELAY: StdDuration = StdDuration::from_secs(12 * 3600);

/// Longest error text kept per attempt.
const MAX_ERROR_LEN: usize = 300;

/// The delay before the attempt after `attempts` failed ones: `base * 2^(attempts-1)`, at most [`MAX_DELAY`], of
/// which a random part up to a half is taken off (jitter, so endpoints that failed together do not retry together).
pub(super) fn retry_delay(base: StdDuration, attempts: u32, jitter: f64) -> StdDuration {
    let exp = attempts.saturating_sub(1).min(32);
    let full = base.saturating_mul(1u32 << exp.min(31)).min(MAX_DELAY);
    full.mul_f64(1.0 - 0.5 * jitter.clamp(0.0, 1.0))
}

/// When to attempt again after a failure at `now` of a delivery queued at `created_at`; `None` gives up. The last
/// retry is made at the end of the window, so a delivery is retried for at least [`RETRY_WINDOW`].
pub(super) fn next_attempt(
    base: StdDuration,
    attempts: u32,
    created_at: OffsetDateTime,
    now: OffsetDateTime,
    jitter: f64,
) -> Option<OffsetDateTime> {
    let end = created_at + RETRY_WINDOW;
    if now >= end {
        return None;
    }
    let delay = Duration::try_from(retry_delay(base, attempts, jitter)).unwrap_or(Duration::hours(12));
    Some((now + delay).min(end))
}

/// The body of a delivery: `{"id", "type", "created_at", "data"}` (docs/webhooks.md). `data` is the event's detail
/// with its `license_id` and `fingerprint` (when it has them).
pub(crate) fn payload(event: &Event) -> Vec<u8> {
    let mut data = match &event.event.detail {
        serde_json::Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    if let Some(id) = event.event.license_id {
        data.insert("license_id".into(), id.to_string().into());
    }
    if let Some(fp) = &event.event.fingerprint {
        data.insert("fingerprint".into(), fp.clone().into());
    }
    let created_at = event.event.at.format(&Rfc3339).unwrap_or_default();
    let body = serde_json::json!({
        "id": event.id,
        "type": event.event.kind.as_str(),
        "created_at": created_at,
        "data": data,
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

impl Licensing {
    /// Runs the dispatcher in a background task until the service is dropped (the task holds a weak reference; each
    /// attempt in flight holds a strong one until it is recorded) or [`Licensing::stop_webhook_delivery`]. Does
    /// nothing when this instance does not deliver (`webhooks.deliver = false`).
    pub fn spawn_webhook_dispatcher(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        if !self.webhooks.settings.deliver || self.webhooks.client.is_none() {
            return None;
        }
        let weak = Arc::downgrade(self);
        let slots = self.webhooks.pool.slots.clone();
        Some(tokio::spawn(async move {
            loop {
                // Wait for a free slot before claiming: claimed deliveries never wait for a slot.
                let Ok(first) = slots.clone().acquire_owned().await else { return };
                let Some(licensing) = weak.upgrade() else { return };
                if licensing.webhooks.pool.stopping.load(Ordering::Acquire) {
                    return;
                }
                let free = slots.available_permits() + 1;
                let claimed = match licensing.claim_due(free).await {
                    Ok(claimed) => claimed,
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook delivery failed to claim; trying again shortly");
                        Vec::new()
                    }
                };
                let idle = claimed.is_empty();
                let mut first = Some(first);
                for c in claimed {
                    let permit = match first.take() {
                        Some(p) => p,
                        None => match slots.clone().acquire_owned().await {
                            Ok(p) => p,
                            Err(_) => return,
                        },
                    };
                    let licensing = licensing.clone();
                    tokio::spawn(async move {
                        licensing.run(c).await;
                        drop(permit);
                    });
                }
                drop(first);
                drop(licensing);
                if idle {
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            }
        }))
    }

    /// Stops this instance's delivery gracefully: nothing more is claimed, and the attempts in flight are awaited
    /// (each ends within the webhook timeout) and recorded, so nothing is sent twice after a restart.
    pub async fn stop_webhook_delivery(&self) {
        self.webhooks.pool.stopping.store(true, Ordering::Release);
        let wait = self.webhooks.settings.timeout + StdDuration::from_secs(5);
        let all = u32::try_from(MAX_IN_FLIGHT).unwrap_or(u32::MAX);
        if tokio::time::timeout(wait, self.webhooks.pool.slots.acquire_many(all)).await.is_err() {
            tracing::warn!("webhook attempts still in flight at shutdown; they are sent again after their claim ends");
        }
    }

    /// How many webhook attempts this instance made since it started.
    pub fn webhook_attempts(&self) -> u64 {
        self.webhooks.pool.attempts.load(Ordering::Relaxed)
    }

    /// Claims at most `limit` due deliveries, skipping endpoints with [`MAX_PER_ENDPOINT`] attempts in flight here.
    /// The claim's times are read inside its unit, so a unit that waited for the writer or a connection does not
    /// shorten its own claim.
    async fn claim_due(&self, limit: usize) -> Result<Vec<Claimed>, StoreError> {
        if self.webhooks.pool.stopping.load(Ordering::Acquire) || !self.store.has_due_deliveries(self.now()).await? {
            return Ok(Vec::new());
        }
        let (clock, skip) = (self.clock.clone(), self.webhooks.pool.saturated());
        let hold = Duration::try_from(self.webhooks.settings.timeout).unwrap_or(Duration::seconds(10)) + CLAIM_MARGIN;
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        self.store
            .transact(move |tx| {
                Box::pin(async move {
                    let now = clock.now();
                    tx.claim_deliveries(now, now + hold, limit, &skip).await
                })
            })
            .await
    }

    /// One claimed delivery: the attempt and its record.
    async fn run(&self, c: Claimed) {
        let Some(client) = self.webhooks.client.clone() else { return };
        self.webhooks.pool.begin(c.endpoint.id);
        let attempt = self.attempt(&client, &c).await;
        if let Err(e) = self.record(&c, attempt).await {
            tracing::warn!(error = %e, delivery = c.delivery.id, "cannot record a webhook attempt");
        }
        self.webhooks.pool.end(c.endpoint.id);
    }

    /// Claims the deliveries due now (as many as the pool holds), sends them concurrently and records how each
    /// went; how many were attempted. Tests call it to deliver at a moment of their choosing, with the background
    /// dispatcher off.
    pub async fn deliver_due(&self) -> Result<usize, StoreError> {
        let claimed = self.claim_due(MAX_IN_FLIGHT).await?;
        let n = claimed.len();
        futures_util::stream::iter(claimed).for_each_concurrent(None, |c| self.run(c)).await;
        Ok(n)
    }

    /// One attempt: the signed POST and what came of it.
    async fn attempt(&self, client: &reqwest::Client, c: &Claimed) -> Attempt {
        let body = payload(&c.event);
        let now = self.now();
        let id = c.event.id.to_string();
        let timestamp = now.unix_timestamp();
        let Some(signature) = sign(&c.endpoint.secret, &id, timestamp, &body) else {
            // Never sent unsigned: a receiver must be able to refuse what it cannot verify.
            return self.failed(c, None, "the endpoint's signing secret is corrupt; rotate it".into());
        };
        let mut signatures = vec![signature];
        if let (Some(old), Some(until)) = (&c.endpoint.previous_secret, c.endpoint.previous_secret_until) {
            if until > now {
                signatures.extend(sign(old, &id, timestamp, &body));
            }
        }
        let failed = |status: Option<u16>, error: String| self.failed(c, status, error);
        // IP literals reach no resolver: the rules are checked here (hosts are checked by the client's resolver).
        if let Ok(url) = reqwest::Url::parse(&c.endpoint.url) {
            let literal = match url.host() {
                Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
                _ => None,
            };
            if let Some(Err(why)) = literal.map(|ip| self.webhooks.rules.check(ip)) {
                return failed(None, why);
            }
        }
        let sent = client
            .post(&c.endpoint.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signatures.join(" "))
            .body(body)
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => Attempt::Delivered { status: resp.status().as_u16() },
            Ok(resp) => {
                let status = resp.status();
                failed(Some(status.as_u16()), format!("the endpoint answered {status}"))
            }
            Err(e) => failed(None, describe(&e)),
        }
    }

    /// A failed attempt of `c`: when to retry (or that it gives up), with the error cut to [`MAX_ERROR_LEN`].
    fn failed(&self, c: &Claimed, status: Option<u16>, mut error: String) -> Attempt {
        let jitter = rand::thread_rng().gen::<f64>();
        let retry_at = next_attempt(
            self.webhooks.settings.retry_base,
            c.delivery.attempts,
            c.delivery.created_at,
            self.now(),
            jitter,
        );
        if error.len() > MAX_ERROR_LEN {
            let cut = (0..=MAX_ERROR_LEN).rev().find(|&i| error.is_char_boundary(i)).unwrap_or(0);
            error.truncate(cut);
        }
        Attempt::Failed { status, error, retry_at }
    }

    /// Records an attempt; a delivery given up disables its endpoint when no delivery to it succeeded since the
    /// given-up one was queued (it failed for the whole window), with a `webhook.disabled` event.
    async fn record(&self, c: &Claimed, attempt: Attempt) -> Result<(), StoreError> {
        let (delivery, endpoint_id, created_at) = (c.delivery.clone(), c.endpoint.id, c.delivery.created_at);
        let ctx = self.system_context();
        let gave_up = matches!(attempt, Attempt::Failed { retry_at: None, .. });
        if gave_up {
            tracing::warn!(delivery = delivery.id, endpoint = %endpoint_id, "a webhook delivery failed for its whole retry window");
        }
        self.store
            .transact(move |tx| {
                Box::pin(async move {
                    let recorded = tx.record_attempt(delivery.id, delivery.attempts, ctx.now, &attempt).await?;
                    if !recorded || !gave_up {
                        return Ok(());
                    }
                    let Some(mut endpoint) = tx.webhook(endpoint_id).await? else { return Ok(()) };
                    // The stored success time may lag the last success by up to its resolution.
                    let resolution = Duration::seconds(crate::store::SUCCESS_RESOLUTION_SECS);
                    if endpoint.disabled_at.is_some()
                        || endpoint.last_success_at.is_some_and(|t| t + resolution >= created_at)
                    {
                        return Ok(());
                    }
                    endpoint.disabled_at = Some(ctx.at());
                    endpoint.disabled_reason = Some(format!(
                        "every delivery failed for {} days (delivery {}); enable it with POST /v1/webhooks/{}/enable",
                        RETRY_WINDOW.whole_days(),
                        delivery.id,
                        endpoint.id
                    ));
                    tx.update_webhook(&endpoint).await?;
                    let data = super::endpoint_data(&endpoint, ctx.now);
                    tx.append_event(&ctx.event(None, EventKind::WebhookDisabled, None, data)).await
                })
            })
            .await
    }
}

/// A client error in one line, with its cause (reqwest's Display alone says only "error sending request").
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() { "timed out".to_string() } else { e.to_string() };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The payload of docs/webhooks.md's vector, byte for byte: keys in order, `data` the detail with `license_id`.
    #[test]
    fn payload_bytes_are_the_documented_format() {
        let license_id = uuid::Uuid::parse_str("019aab5e-3c1a-7e55-9b1c-6f2d4a8e0b37").unwrap();
        let detail = serde_json::json!({ "from": "active", "license": {
            "created_at": "2026-11-22T10:40:00Z", "email": "ada@example.com", "entitlements": ["pro"],
            "expires_at": "2027-11-22T10:40:00Z", "id": license_id.to_string(), "key": "JPYXY-P00YY-5RQQ8-4QEDA",
            "max_machines": 2, "metadata": { "order": "1001" }, "policy": null, "product": "acme-cad",
            "status": "suspended", "updated_at": "2026-11-22T10:43:16Z" } });
        let event = Event {
            id: 42,
            event: crate::store::NewEvent {
                license_id: Some(license_id),
                kind: EventKind::Suspended,
                at: OffsetDateTime::from_unix_timestamp(1_795_344_196).unwrap(),
                fingerprint: None,
                client_ip: Some("192.0.2.1".into()),
                actor: Some(crate::store::Actor::Cli),
                detail,
            },
        };
        let body = payload(&event);
        use sha2::Digest as _;
        let digest: String = sha2::Sha256::digest(&body).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(body.len(), 495, "{}", String::from_utf8_lossy(&body));
        assert_eq!(digest, "f691548a2a1d4288d7fa1d8a2fcf61dff6195970146a2d9bc9f77c9b803e38d5");
    }

    #[test]
    fn delays_double_up_to_twelve_hours_with_at_most_half_taken_off() {
        let base = StdDuration::from_secs(10);
        assert_eq!(retry_delay(base, 1, 0.0), StdDuration::from_secs(10));
        assert_eq!(retry_delay(base, 2, 0.0), StdDuration::from_secs(20));
        assert_eq!(retry_delay(base, 5, 0.0), StdDuration::from_secs(160));
        assert_eq!(retry_delay(base, 30, 0.0), MAX_DELAY);
        assert_eq!(retry_delay(base, 1, 1.0), StdDuration::from_secs(5));
        assert_eq!(retry_delay(base, u32::MAX, 0.5), MAX_DELAY.mul_f64(0.75));
    }

    #[test]
    fn retries_last_at_least_the_window_and_then_give_up() {
        let created = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let base = StdDuration::from_secs(10);
        let (mut now, mut attempts, mut tries) = (created, 1, 0);
        while let Some(next) = next_attempt(base, attempts, created, now, 1.0) {
            assert!(next > now && next <= created + RETRY_WINDOW);
            now = next;
            attempts += 1;
            tries += 1;
        }
        assert_eq!(now, created + RETRY_WINDOW, "the last attempt is at the end of the window");
        assert!((10..40).contains(&tries), "{tries} retries");
    }
}
