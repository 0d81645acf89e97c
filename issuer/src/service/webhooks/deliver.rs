//! The dispatcher: claims due deliveries from the outbox, POSTs them signed, records each attempt, and decides
//! retries (exponential backoff with jitter within [`RETRY_WINDOW`]) and when an endpoint is disabled.
//!
//! A claim moves the delivery's next attempt past the attempt's timeout, so a delivery whose process dies mid-attempt
//! (kill -9) is claimed again, by this instance after a restart or by another: at-least-once. Receivers
//! de-duplicate by `webhook-id` (the event id).

use std::sync::Arc;
use std::time::Duration as StdDuration;

use futures_util::StreamExt as _;
use rand::Rng as _;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use super::{sign, RETRY_WINDOW};
use crate::service::Licensing;
use crate::store::{Attempt, Claimed, Event, EventKind, StoreError, StoreExt as _};
use crate::views::WebhookView;

/// How often an idle dispatcher looks for due deliveries.
const POLL_INTERVAL: StdDuration = StdDuration::from_millis(250);

/// Most deliveries claimed (and sent concurrently) at once.
const BATCH: u32 = 32;

/// A claim lasts the attempt's timeout plus this, so a live attempt is never claimed twice.
const CLAIM_MARGIN: Duration = Duration::seconds(5);

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
    /// Runs the dispatcher in a background task until the service is dropped (the task holds a weak reference).
    /// Does nothing when this instance does not deliver (`webhooks.deliver = false`).
    pub fn spawn_webhook_dispatcher(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        if !self.webhooks.settings.deliver || self.webhooks.client.is_none() {
            return None;
        }
        let weak = Arc::downgrade(self);
        Some(tokio::spawn(async move {
            loop {
                let Some(licensing) = weak.upgrade() else { return };
                let sent = match licensing.deliver_due().await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook delivery failed to claim; trying again shortly");
                        0
                    }
                };
                drop(licensing);
                if sent == 0 {
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            }
        }))
    }

    /// Claims the deliveries due now, sends them concurrently and records how each went; how many were attempted.
    /// (The dispatcher calls it in a loop; tests call it to deliver at a moment of their choosing.)
    pub async fn deliver_due(&self) -> Result<usize, StoreError> {
        let Some(client) = self.webhooks.client.clone() else { return Ok(0) };
        let now = self.now();
        if !self.store.has_due_deliveries(now).await? {
            return Ok(0);
        }
        let until =
            now + Duration::try_from(self.webhooks.settings.timeout).unwrap_or(Duration::seconds(10)) + CLAIM_MARGIN;
        let claimed = self
            .store
            .transact(move |tx| Box::pin(async move { tx.claim_deliveries(now, until, BATCH).await }))
            .await?;
        let n = claimed.len();
        futures_util::stream::iter(claimed)
            .for_each_concurrent(None, |c| {
                let client = client.clone();
                async move {
                    let attempt = self.attempt(&client, &c).await;
                    if let Err(e) = self.record(&c, attempt).await {
                        tracing::warn!(error = %e, delivery = c.delivery.id, "cannot record a webhook attempt");
                    }
                }
            })
            .await;
        Ok(n)
    }

    /// One attempt: the signed POST and what came of it.
    async fn attempt(&self, client: &reqwest::Client, c: &Claimed) -> Attempt {
        let body = payload(&c.event);
        let now = self.now();
        let id = c.event.id.to_string();
        let timestamp = now.unix_timestamp();
        let mut signatures: Vec<String> = sign(&c.endpoint.secret, &id, timestamp, &body).into_iter().collect();
        if let (Some(old), Some(until)) = (&c.endpoint.previous_secret, c.endpoint.previous_secret_until) {
            if until > now {
                signatures.extend(sign(old, &id, timestamp, &body));
            }
        }
        let failed = |status: Option<u16>, error: String| {
            let retry_at = next_attempt(
                self.webhooks.settings.retry_base,
                c.delivery.attempts,
                c.delivery.created_at,
                self.now(),
                rand::thread_rng().gen::<f64>(),
            );
            let mut error = error;
            if error.len() > MAX_ERROR_LEN {
                let cut = (0..=MAX_ERROR_LEN).rev().find(|&i| error.is_char_boundary(i)).unwrap_or(0);
                error.truncate(cut);
            }
            Attempt::Failed { status, error, retry_at }
        };
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
                    if endpoint.disabled_at.is_some() || endpoint.last_success_at.is_some_and(|t| t >= created_at) {
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
                    let data = serde_json::json!({ "webhook": WebhookView::at(endpoint, ctx.now, false) });
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
