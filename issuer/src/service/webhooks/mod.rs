//! Webhooks (docs/webhooks.md): endpoints the vendor registers, each event delivered to every endpoint subscribed to
//! its type, signed the Standard Webhooks way.
//!
//! The outbox is the store's: an event and its pending deliveries are written in the transaction of the change
//! ([`crate::Tx::append_event`]), so no change is without its deliveries. The dispatcher (`deliver`) claims due
//! deliveries, sends them off the request path, and records each attempt; retries back off exponentially with
//! jitter for [`RETRY_WINDOW`], and an endpoint that fails for all of it is disabled.
//!
//! Layout: this file (settings, endpoint management), `deliver` (the dispatcher and backoff), `sign` (signatures),
//! `network` (outbound address rules).

use std::sync::Arc;
use std::time::Duration as StdDuration;

use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::error::invalid;
use super::{Context, Licensing, ServiceError};
use crate::store::{Delivery, EventKind, StoreExt as _, WebhookEndpoint, ALL_EVENTS};
use crate::views::WebhookView;

mod deliver;
mod network;
mod sign;

pub use network::NetworkRules;
pub use sign::sign;

/// How long a rotated-out secret keeps signing beside the new one.
pub const SECRET_OVERLAP: Duration = Duration::hours(24);

/// How long a delivery is retried before it fails: at least three days after it was queued.
pub const RETRY_WINDOW: Duration = Duration::days(3);

/// Longest URL and description accepted.
const MAX_URL_LEN: usize = 2048;
const MAX_DESCRIPTION_LEN: usize = 500;

/// How the issuer delivers webhooks. Config section `[webhooks]`, env `ISSUER_WEBHOOK_*`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebhookSettings {
    /// Whether this instance delivers (others on the same database may); `false` queues without sending.
    /// Default true. Config `deliver`, env `ISSUER_WEBHOOK_DELIVERY` (`on`/`off`).
    pub deliver: bool,
    /// The first retry's delay; each next one doubles (to at most 12 hours), with jitter. Default 10 s.
    /// Config `retry_base = "10s"` (`ms` allowed), env `ISSUER_WEBHOOK_RETRY_BASE`.
    pub retry_base: StdDuration,
    /// How long one attempt may take before it counts as failed. Default 10 s. Config `timeout`, env
    /// `ISSUER_WEBHOOK_TIMEOUT`.
    pub timeout: StdDuration,
    /// Which addresses deliveries may go to. Config `allow_networks` / `deny_networks`, env
    /// `ISSUER_WEBHOOK_ALLOW_NETWORKS` / `ISSUER_WEBHOOK_DENY_NETWORKS` (comma-separated CIDRs).
    pub networks: NetworkRules,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            deliver: true,
            retry_base: StdDuration::from_secs(10),
            timeout: StdDuration::from_secs(10),
            networks: NetworkRules::default(),
        }
    }
}

/// A new endpoint as the vendor asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewWebhook {
    /// Where to deliver (http or https).
    pub url: String,
    /// Event type names (`license.created`), or `*` alone for every type.
    pub events: Vec<String>,
    /// The vendor's note.
    pub description: String,
}

/// The service's webhook state: settings and the delivery client.
#[derive(Debug)]
pub(super) struct Webhooks {
    settings: WebhookSettings,
    rules: Arc<NetworkRules>,
    client: Option<reqwest::Client>,
    pool: deliver::Pool,
}

impl Webhooks {
    pub(super) fn new(settings: WebhookSettings) -> Self {
        let rules = Arc::new(settings.networks.clone());
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("issuer-webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(network::FilteringResolver { rules: rules.clone() }))
            .build();
        let client = match client {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, "cannot build the webhook client; webhooks are queued but not delivered");
                None
            }
        };
        Webhooks { settings, rules, client, pool: deliver::Pool::default() }
    }
}

/// Checks a URL: http or https, a host, no credentials, and (for an IP literal) an address the rules allow.
fn check_url(url: &str, rules: &NetworkRules) -> Result<reqwest::Url, ServiceError> {
    if url.len() > MAX_URL_LEN {
        return Err(invalid("url", format!("must be at most {MAX_URL_LEN} bytes")));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid("url", format!("is not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("url", "must be an http:// or https:// URL"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid("url", "must not hold credentials; authenticate deliveries by their signature"));
    }
    match parsed.host() {
        None => return Err(invalid("url", "must name a host")),
        Some(url::Host::Ipv4(ip)) => rules.check(ip.into()).map_err(ServiceError::WebhookUrlRefused)?,
        Some(url::Host::Ipv6(ip)) => rules.check(ip.into()).map_err(ServiceError::WebhookUrlRefused)?,
        Some(url::Host::Domain(_)) => {}
    }
    Ok(parsed)
}

/// The stored kinds of a subscription list of type names.
fn subscription(events: &[String]) -> Result<Vec<String>, ServiceError> {
    if events.is_empty() {
        return Err(invalid("events", "must name at least one event type, or \"*\" for all"));
    }
    if events.iter().any(|e| e == ALL_EVENTS) {
        if events.len() > 1 {
            return Err(invalid("events", "\"*\" already means every type; give it alone"));
        }
        return Ok(vec![ALL_EVENTS.to_string()]);
    }
    let mut kinds = Vec::with_capacity(events.len());
    for name in events {
        let kind = EventKind::from_type(name)
            .ok_or_else(|| invalid("events", format!("`{name}` is not an event type (docs/webhooks.md lists them)")))?;
        kinds.push(kind.stored_name().to_string());
    }
    kinds.sort();
    kinds.dedup();
    Ok(kinds)
}

/// The `data` of webhook endpoint events: never the secret.
pub(super) fn endpoint_data(endpoint: &WebhookEndpoint, now: OffsetDateTime) -> serde_json::Value {
    serde_json::json!({ "webhook": WebhookView::at(endpoint.clone(), now, false) })
}

impl Licensing {
    /// Registers an endpoint; returns it with its secret (shown once by the API).
    pub async fn create_webhook(&self, new: NewWebhook, ctx: &Context) -> Result<WebhookEndpoint, ServiceError> {
        let url = check_url(new.url.trim(), &self.webhooks.rules)?;
        let events = subscription(&new.events)?;
        let control = |c: char| c.is_control() && c != '\n' && c != '\t';
        if new.description.chars().count() > MAX_DESCRIPTION_LEN || new.description.chars().any(control) {
            return Err(invalid(
                "description",
                format!(
                    "must be at most {MAX_DESCRIPTION_LEN} characters without control characters (but newline and tab)"
                ),
            ));
        }
        let endpoint = WebhookEndpoint {
            id: Uuid::now_v7(),
            url: url.to_string(),
            description: new.description,
            events,
            secret: sign::new_secret()?,
            previous_secret: None,
            previous_secret_until: None,
            created_at: ctx.at(),
            disabled_at: None,
            disabled_reason: None,
            last_success_at: None,
        };
        let (stored, event) =
            (endpoint.clone(), ctx.event(None, EventKind::WebhookCreated, None, endpoint_data(&endpoint, ctx.now)));
        self.store
            .transact(move |tx| {
                Box::pin(async move {
                    tx.insert_webhook(&stored).await?;
                    tx.append_event(&event).await
                })
            })
            .await?;
        Ok(endpoint)
    }

    /// Every endpoint, oldest first.
    pub async fn webhooks(&self) -> Result<Vec<WebhookEndpoint>, ServiceError> {
        Ok(self.store.list_webhooks().await?)
    }

    /// The endpoint with this id.
    pub async fn webhook(&self, id: Uuid) -> Result<WebhookEndpoint, ServiceError> {
        self.store.webhook(id).await?.ok_or(ServiceError::WebhookNotFound)
    }

    /// Deletes an endpoint: it is gone at once (no deliveries, not found); the sweep removes its rows, queued and
    /// past deliveries with them, an hour later.
    pub async fn delete_webhook(&self, id: Uuid, ctx: &Context) -> Result<(), ServiceError> {
        let ctx = ctx.clone();
        self.store
            .transact(move |tx| {
                Box::pin(async move {
                    let endpoint = tx.webhook(id).await?.ok_or(ServiceError::WebhookNotFound)?;
                    tx.delete_webhook(id, ctx.at()).await?;
                    let data = endpoint_data(&endpoint, ctx.now);
                    tx.append_event(&ctx.event(None, EventKind::WebhookDeleted, None, data)).await?;
                    Ok(())
                })
            })
            .await
    }

    /// Gives the endpoint a new secret; the old one keeps signing beside it for [`SECRET_OVERLAP`] (replacing a
    /// previous secret still in its overlap). The endpoint with its new secret.
    pub async fn rotate_webhook_secret(&self, id: Uuid, ctx: &Context) -> Result<WebhookEndpoint, ServiceError> {
        let (ctx, secret) = (ctx.clone(), sign::new_secret()?);
        self.change_webhook(id, ctx.clone(), EventKind::WebhookSecretRotated, move |e| {
            let old = std::mem::replace(&mut e.secret, secret);
            e.previous_secret = Some(old);
            e.previous_secret_until = Some(ctx.at() + SECRET_OVERLAP);
            true
        })
        .await
    }

    /// Enables a disabled endpoint: its pending deliveries are attempted again, and new events are queued for it.
    /// Enabling an enabled endpoint changes nothing.
    pub async fn enable_webhook(&self, id: Uuid, ctx: &Context) -> Result<WebhookEndpoint, ServiceError> {
        self.change_webhook(id, ctx.clone(), EventKind::WebhookEnabled, |e| {
            let disabled = e.disabled_at.is_some();
            e.disabled_at = None;
            e.disabled_reason = None;
            disabled
        })
        .await
    }

    /// Changes an endpoint under its lock and records `kind`, unless `change` says it changed nothing.
    async fn change_webhook(
        &self,
        id: Uuid,
        ctx: Context,
        kind: EventKind,
        change: impl FnOnce(&mut WebhookEndpoint) -> bool + Send + 'static,
    ) -> Result<WebhookEndpoint, ServiceError> {
        self.store
            .transact(move |tx| {
                Box::pin(async move {
                    let mut endpoint = tx.webhook(id).await?.ok_or(ServiceError::WebhookNotFound)?;
                    if !change(&mut endpoint) {
                        return Ok(endpoint);
                    }
                    tx.update_webhook(&endpoint).await?;
                    tx.append_event(&ctx.event(None, kind, None, endpoint_data(&endpoint, ctx.now))).await?;
                    Ok(endpoint)
                })
            })
            .await
    }

    /// The endpoint's deliveries with an id above `after`, oldest first.
    pub async fn deliveries(&self, id: Uuid, after: i64, limit: u32) -> Result<Vec<Delivery>, ServiceError> {
        self.webhook(id).await?;
        Ok(self.store.list_deliveries(id, after, limit).await?)
    }

    /// Queues one delivery's event again for its endpoint (same `webhook-id`, so the receiver can tell a resend from
    /// a new event); the new delivery.
    pub async fn resend_delivery(&self, id: Uuid, delivery_id: i64, ctx: &Context) -> Result<Delivery, ServiceError> {
        let ctx = ctx.clone();
        self.store
            .transact(move |tx| {
                Box::pin(async move {
                    let endpoint = tx.webhook(id).await?.ok_or(ServiceError::WebhookNotFound)?;
                    let queued =
                        tx.resend_delivery(id, delivery_id, ctx.now).await?.ok_or(ServiceError::DeliveryNotFound)?;
                    let mut data = endpoint_data(&endpoint, ctx.now);
                    data["delivery_id"] = delivery_id.into();
                    data["resent_delivery_id"] = queued.id.into();
                    data["event_id"] = queued.event_id.into();
                    tx.append_event(&ctx.event(None, EventKind::WebhookDeliveryResent, None, data)).await?;
                    Ok(queued)
                })
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_are_checked() {
        let rules = NetworkRules::default();
        assert!(check_url("https://hooks.example.com/in", &rules).is_ok());
        assert!(check_url("http://127.0.0.1:9/x", &rules).is_ok());
        for bad in ["ftp://example.com/", "not a url", "https://user:pw@example.com/", "file:///etc/passwd"] {
            assert!(matches!(check_url(bad, &rules), Err(ServiceError::InvalidField { field: "url", .. })), "{bad}");
        }
        for refused in ["http://169.254.169.254/latest/meta-data", "http://[fd00:ec2::254]/"] {
            assert!(matches!(check_url(refused, &rules), Err(ServiceError::WebhookUrlRefused(_))), "{refused}");
        }
    }

    #[test]
    fn subscriptions_are_known_types_or_all() {
        assert_eq!(subscription(&["*".into()]).unwrap(), vec!["*"]);
        let kinds = subscription(&["license.created".into(), "machine.culled".into(), "license.created".into()]);
        assert_eq!(kinds.unwrap(), vec!["created", "machine.culled"]);
        assert!(subscription(&[]).is_err());
        assert!(subscription(&["*".into(), "license.created".into()]).is_err());
        assert!(subscription(&["license.exploded".into()]).is_err());
    }
}
