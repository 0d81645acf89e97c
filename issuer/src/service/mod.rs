//! The licensing logic, independent of HTTP: create and manage licenses, activate, validate, refresh, deactivate,
//! and sign tokens. The HTTP handlers and the vendor CLI both call [`Licensing`].
//!
//! Every operation that changes state is one unit of work in the store ([`StoreExt::transact`]): it reads the license
//! under the unit's lock, decides on what it read, and writes the change and its event together, so a change is
//! never stored without its event and a decision is never made on a state that changed meanwhile. Validation, which
//! changes nothing, reads outside a unit and appends its event alone.
//!
//! Layout: `licenses` (create, update, status transitions, admin machine removal, event reads), `activation`
//! (activate, validate, refresh, deactivate, token signing), `offline` (air-gapped activation and deactivation
//! codes), `policies` (policies, the terms a license follows, leases and their sweep, deactivation limits),
//! `revocations` (the signed revocation list), `checks` (shared checks), `error` ([`ServiceError`]).

use std::sync::Arc;

use keys::KeyRing;
use subtle::ConstantTimeEq;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use verifier::KeySet;

use crate::clock::{Clock, SystemClock};
use crate::keyring::SharedKeyRing;
use crate::store::{EventKind, NewEvent, Store, StoreExt as _};

mod activation;
mod checks;
mod error;
mod licenses;
mod offline;
mod policies;
mod revocations;

pub use activation::{Issued, Validated, ValidationCode};
pub use checks::{new_admin_token, token_hash};
pub use error::{ServiceError, Unusable};
pub use licenses::{Expiry, LicenseRef, NewLicense};
pub use offline::OfflineDeactivated;
pub use policies::is_policy_name;
pub use revocations::{SignedRevocations, REVOCATION_LIST_TTL};

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

/// Who asked and when: recorded in the event log. Made by [`Licensing::context`], which reads the service's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    /// The current time (whole seconds are used).
    pub now: OffsetDateTime,
    /// The client's IP address, if known.
    pub client_ip: Option<String>,
}

impl Context {
    /// The time in whole seconds, as the store and the tokens keep it.
    fn at(&self) -> OffsetDateTime {
        self.now.replace_nanosecond(0).unwrap_or(self.now)
    }

    /// An event of this request.
    fn event(
        &self,
        license_id: Uuid,
        kind: EventKind,
        fingerprint: Option<&str>,
        detail: serde_json::Value,
    ) -> NewEvent {
        NewEvent {
            license_id,
            kind,
            at: self.at(),
            fingerprint: fingerprint.map(Into::into),
            client_ip: self.client_ip.clone(),
            detail,
        }
    }
}

/// The licensing service.
pub struct Licensing {
    store: Arc<dyn Store>,
    ring: Arc<SharedKeyRing>,
    policy: TokenPolicy,
    extra_admin_hash: Option<[u8; 32]>,
    clock: Arc<dyn Clock>,
    revocations: revocations::RevocationCache,
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
        }
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

    /// The context of a request from `client_ip`, at the service clock's current time.
    pub fn context(&self, client_ip: Option<String>) -> Context {
        Context { now: self.clock.now(), client_ip }
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

    /// Whether `token` is an accepted admin token. Compares SHA-256 hashes in constant time.
    pub async fn is_admin_token(&self, token: &str) -> Result<bool, ServiceError> {
        let hash = token_hash(token);
        let mut ok = subtle::Choice::from(0u8);
        if let Some(extra) = &self.extra_admin_hash {
            ok |= extra.ct_eq(&hash);
        }
        for stored in self.store.admin_token_hashes().await? {
            ok |= stored.ct_eq(&hash);
        }
        Ok(bool::from(ok))
    }

    /// Creates and stores a new admin token; returns it (the store keeps only its hash).
    pub async fn create_admin_token(&self, label: &str) -> Result<String, ServiceError> {
        let token = new_admin_token()?;
        let (hash, label, at) = (token_hash(&token), label.to_string(), self.context(None).at());
        self.store.transact(move |tx| Box::pin(async move { tx.add_admin_token(&hash, &label, at).await })).await?;
        Ok(token)
    }

    /// Creates the first admin token if the store has none, decided in the store (of instances starting at once on
    /// one empty database, exactly one gets `Some`); `None` when a token existed.
    pub async fn create_first_admin_token(&self, label: &str) -> Result<Option<String>, ServiceError> {
        let token = new_admin_token()?;
        let (hash, label, at) = (token_hash(&token), label.to_string(), self.context(None).at());
        let stored = self
            .store
            .transact(move |tx| Box::pin(async move { tx.add_first_admin_token(&hash, &label, at).await }))
            .await?;
        Ok(stored.then_some(token))
    }

    /// Runs [`Licensing::cull_expired_leases`] every `interval` in a background task, until the service is dropped
    /// (the task holds only a weak reference). Culling at activation does not depend on it.
    pub fn spawn_lease_sweeper(self: &Arc<Self>, interval: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(licensing) = weak.upgrade() else { return };
                match licensing.cull_expired_leases().await {
                    Ok(0) => {}
                    Ok(culled) => tracing::info!(culled, "culled machines whose lease ended"),
                    Err(e) => tracing::warn!(error = %e, "the lease sweep failed; it runs again at the next interval"),
                }
            }
        })
    }

    /// Reloads the key ring if its files changed and their active key is the signing key the store records;
    /// whether a new ring is now in use.
    async fn reload_key_ring(&self) -> bool {
        self.ring.reload_if_recorded(&*self.store).await
    }
}
