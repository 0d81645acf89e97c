//! The licensing logic, independent of HTTP: create and manage licenses, activate, validate, refresh, deactivate,
//! and sign tokens. The HTTP handlers and the vendor CLI both call [`Licensing`].
//!
//! Every operation that changes state is one unit of work in the store ([`StoreExt::transact`]): it reads the license
//! under the unit's lock, decides on what it read, and writes the change and its event together, so a change is
//! never stored without its event and a decision is never made on a state that changed meanwhile. Validation, which
//! changes nothing, reads outside a unit and is counted in memory (`usage`).
//!
//! Layout: `licenses` (create, update, status transitions, admin machine removal), `activation`
//! (activate, validate, refresh, deactivate, token signing), `offline` (air-gapped activation and deactivation
//! codes), `usage` (validation and activation counts instead of a row per validation), `policies` (policies, the terms a license follows, leases and their sweep, deactivation limits),
//! `events` (the audit log, license expiry announcements, the background sweeps), `network/` (client network rules
//! and the addresses each license is used from), `admin_tokens` (scoped admin
//! tokens and authentication), `webhooks/` (endpoints, signing, network rules, the delivery dispatcher),
//! `revocations` (the signed revocation list), `checks` (shared checks), `error` ([`ServiceError`]).

use std::net::IpAddr;
use std::sync::Arc;

use keys::KeyRing;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use verifier::KeySet;

use crate::clock::{Clock, SystemClock};
use crate::keyring::SharedKeyRing;
use crate::store::{Actor, EventKind, NewEvent, Store};

mod activation;
mod admin_tokens;
mod checks;
mod error;
mod events;
mod licenses;
mod network;
mod offline;
mod policies;
mod revocations;
mod usage;
mod webhooks;

pub use activation::{Issued, Validated, ValidationCode};
pub use admin_tokens::Caller;
pub use checks::{new_admin_token, token_hash};
pub use error::{ServiceError, Unusable};
pub use licenses::{Expiry, LicenseRef, NewLicense};
pub use network::{Blocked, IpRuleSettings, NewIpRule, RuleRef, NETWORK_TASK_INTERVAL};
pub use offline::OfflineDeactivated;
pub use policies::is_policy_name;
pub use revocations::{SignedRevocations, REVOCATION_LIST_TTL};
pub use usage::{Flush, LicenseUsage, MAX_USAGE_DAYS, USAGE_FLUSH_INTERVAL};
pub use webhooks::{NetworkRules, NewWebhook, WebhookSettings, SECRET_OVERLAP};

/// Longest machine name or platform accepted on activation.
pub const MAX_MACHINE_TEXT_LEN: usize = 128;

/// How online tokens are timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenPolicy {
    /// Time from issue to `refresh_after`.
    pub refresh_interval: Duration,
    /// Time from `refresh_after` to `token_expires_at`.
    pub offline_grace: Duration,
}

/// Who asked and when: recorded in the event log. Made by [`Licensing::context`] (an app), [`Licensing::context_as`]
/// (an admin token) or [`Licensing::cli_context`], which read the service's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    /// The current time (whole seconds are used).
    pub now: OffsetDateTime,
    /// The client's IP address, if known (as the trusted-proxy rules attribute it). Network rules judge only
    /// requests whose address is known: the CLI's have none.
    pub client_ip: Option<IpAddr>,
    /// Who asked.
    pub actor: Actor,
}

impl Context {
    /// The time in whole seconds, as the store and the tokens keep it.
    fn at(&self) -> OffsetDateTime {
        self.now.replace_nanosecond(0).unwrap_or(self.now)
    }

    /// An event of this request.
    fn event(
        &self,
        license_id: impl Into<Option<Uuid>>,
        kind: EventKind,
        fingerprint: Option<&str>,
        detail: serde_json::Value,
    ) -> NewEvent {
        NewEvent {
            license_id: license_id.into(),
            kind,
            at: self.at(),
            fingerprint: fingerprint.map(Into::into),
            client_ip: self.client_ip.map(|ip| ip.to_string()),
            actor: Some(self.actor.clone()),
            detail,
        }
    }
}

fn retention(seconds: u64) -> time::Duration {
    time::Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX))
}

/// The licensing service.
pub struct Licensing {
    store: Arc<dyn Store>,
    ring: Arc<SharedKeyRing>,
    policy: TokenPolicy,
    extra_admin_hash: Option<[u8; 32]>,
    clock: Arc<dyn Clock>,
    revocations: revocations::RevocationCache,
    webhooks: webhooks::Webhooks,
    network: network::Network,
    usage: usage::UsageCounters,
    /// How long events are kept ([`Licensing::prune_events`]); `None`: forever.
    event_retention: Option<time::Duration>,
}

impl std::fmt::Debug for Licensing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Licensing")
            .field("ring", &self.ring)
            .field("policy", &self.policy)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl Licensing {
    /// A service over `store`, signing with `ring`, on the system clock. `extra_admin_token` (from
    /// `ISSUER_ADMIN_TOKEN`) is accepted besides the tokens whose hashes the store holds.
    pub fn new(
        store: Arc<dyn Store>,
        ring: Arc<SharedKeyRing>,
        policy: TokenPolicy,
        extra_admin_token: Option<&str>,
    ) -> Self {
        Licensing {
            store,
            ring,
            policy,
            extra_admin_hash: extra_admin_token.map(token_hash),
            clock: Arc::new(SystemClock),
            revocations: revocations::RevocationCache::default(),
            webhooks: webhooks::Webhooks::new(WebhookSettings::default()),
            network: network::Network::new(IpRuleSettings::default()),
            usage: usage::UsageCounters::default(),
            event_retention: Some(retention(crate::config::DEFAULT_EVENT_RETENTION_SECS)),
        }
    }

    /// The same service keeping events for `seconds` (`None`: forever).
    pub fn with_event_retention(mut self, seconds: Option<u64>) -> Self {
        self.event_retention = seconds.map(retention);
        self
    }

    /// The same service with these global network rules of the configuration (`ip_allow`, `ip_deny`).
    pub fn with_ip_rules(mut self, settings: IpRuleSettings) -> Self {
        self.network = network::Network::new(settings);
        self
    }

    /// The same service with these webhook settings (network rules, retries, timeout).
    pub fn with_webhook_settings(mut self, settings: WebhookSettings) -> Self {
        self.webhooks = webhooks::Webhooks::new(settings);
        self
    }

    /// The same service on another clock (tests move a [`crate::ManualClock`]).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The service clock's current time.
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// The context of an app's request from `client_ip`, at the service clock's current time.
    pub fn context(&self, client_ip: Option<IpAddr>) -> Context {
        self.context_as(Actor::App, client_ip)
    }

    /// The context of a request by `actor` from `client_ip`, at the service clock's current time.
    pub fn context_as(&self, actor: Actor, client_ip: Option<IpAddr>) -> Context {
        Context { now: self.clock.now(), client_ip, actor }
    }

    /// The context of a vendor CLI command.
    pub fn cli_context(&self) -> Context {
        self.context_as(Actor::Cli, None)
    }

    /// The context of the issuer's own work (sweeps, webhook delivery).
    fn system_context(&self) -> Context {
        self.context_as(Actor::System, None)
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The reloadable key ring itself.
    pub fn key_ring_handle(&self) -> &Arc<SharedKeyRing> {
        &self.ring
    }

    /// The key ring in use now (it is reloaded when its files change; see [`SharedKeyRing`]).
    pub fn key_ring(&self) -> Arc<KeyRing> {
        self.ring.current()
    }

    /// The public keys apps should trust: every key of the ring in use now.
    pub fn public_keys(&self) -> KeySet {
        KeySet::clone(&self.ring.public_keys())
    }

    /// Reloads the key ring if its files changed and their active key is the signing key the store records;
    /// whether a new ring is now in use.
    async fn reload_key_ring(&self) -> bool {
        self.ring.reload_if_recorded(&*self.store).await
    }
}
