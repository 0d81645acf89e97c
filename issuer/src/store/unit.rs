//! The unit of work: the writes of one service operation, committed together or not at all.
//!
//! A unit is a closure that gets a [`Tx`] and makes its reads and writes through it. [`StoreExt::transact`] runs it
//! on the store as one transaction: on SQLite as one savepoint inside a batch of the group-commit writer (which holds
//! the database's write lock, so nothing else writes while the unit runs), on PostgreSQL as BEGIN ... COMMIT with row
//! locks. The unit's result decides: `Ok` commits every write it made, `Err` rolls every one of them back.
//!
//! What a unit must not do: wait on anything but its `Tx` (a network call, a user, another unit). On SQLite every
//! other write queues behind it.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    Activated, AdminToken, Attempt, Claimed, Created, Culled, Delivery, Idempotency, IpRule, IpUsage, License,
    LicenseStatus, LicenseUpdate, Lookup, NewEvent, NewMachine, Policy, PolicyDeleted, PolicyLock, RecordedKey,
    Redeemed, Store, StoreError, Touched, UsageBatch, WebhookEndpoint,
};

/// A unit of work as a backend runs it: `Ok` commits, `Err` rolls back. Made by [`StoreExt::transact`].
pub type Work = Box<dyn for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<(), StoreError>> + Send>;

/// The reads and writes a unit of work makes, all inside its transaction.
#[async_trait]
pub trait Tx: Send {
    /// The license, locked until the unit ends: no other unit changes it, activates on it or locks it meanwhile.
    async fn license(&mut self, which: Lookup<'_>) -> Result<Option<License>, StoreError>;

    /// Stores a new license. With `idempotency`, a license created before with the same key and request hash is
    /// [`Created::Replayed`] (nothing is written); the same key with another hash fails with
    /// [`StoreError::IdempotencyConflict`]; an existing license key with [`StoreError::Duplicate`].
    async fn insert_license(
        &mut self,
        license: &License,
        idempotency: Option<&Idempotency>,
    ) -> Result<Created, StoreError>;

    /// Applies changes and sets `updated_at`; `None` when no license has this id.
    async fn update_license(
        &mut self,
        id: Uuid,
        update: &LicenseUpdate,
        at: OffsetDateTime,
    ) -> Result<Option<License>, StoreError>;

    /// Changes the status to `to` only if it is `from` now (compare and set in the database); `None` when it is not,
    /// or when no license has this id. The database refuses any change away from revoked
    /// ([`StoreError::RevokedIsFinal`]), whoever writes.
    async fn change_status(
        &mut self,
        id: Uuid,
        from: LicenseStatus,
        to: LicenseStatus,
        at: OffsetDateTime,
    ) -> Result<Option<License>, StoreError>;

    /// Activates a machine (a check-in): an already active fingerprint is refreshed without using a slot (its name and
    /// platform updated, its lease moved as [`Tx::touch_machine`] moves it); a new one is stored only while fewer
    /// machines than the license's `max_machines` plus `overage` are active, checked and inserted in one step. A new
    /// machine's culled mark is forgotten.
    async fn activate_machine(
        &mut self,
        license_id: Uuid,
        machine: &NewMachine<'_>,
        overage: u32,
    ) -> Result<Activated, StoreError>;

    /// Marks an active machine as seen at `at` (a refresh) and moves its lease: `None` ends it (no lease); a time
    /// never moves it earlier (of two check-ins committing out of their clocks' order, the later lease stays, so no
    /// token issued with it outlives the stored lease); a machine holding an offline token never takes a lease. Says
    /// what it found; a machine whose lease ended must be culled first ([`Tx::cull_machines`]): touching does not
    /// judge leases.
    async fn touch_machine(
        &mut self,
        license_id: Uuid,
        fingerprint: &str,
        at: OffsetDateTime,
        lease_expires_at: Option<OffsetDateTime>,
    ) -> Result<Touched, StoreError>;

    /// Culls the license's machines whose lease ended at or before `now`: removes them, freeing their slots, and marks
    /// them culled (what [`super::Presence::LeaseExpired`] reports until the fingerprint activates again).
    async fn cull_machines(&mut self, license_id: Uuid, now: OffsetDateTime) -> Result<Vec<Culled>, StoreError>;

    /// The sweep: culls at most `limit` machines of any license whose lease ended at or before `now`, as
    /// [`Tx::cull_machines`] does. A license another unit (or another instance's sweep) holds is skipped, not waited
    /// for, and stays locked for this unit: each machine is culled once, and a sweep never deadlocks with a unit.
    async fn cull_expired_leases(&mut self, now: OffsetDateTime, limit: u32) -> Result<Vec<Culled>, StoreError>;

    /// Records a deactivation counted by a deactivation limit.
    async fn record_deactivation(&mut self, license_id: Uuid, at: OffsetDateTime) -> Result<(), StoreError>;

    /// Deletes at most `limit` recorded deactivations from before `before` (no window reaches them); how many.
    async fn prune_deactivations(&mut self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError>;

    /// The times of the license's recorded deactivations after `since`, oldest first.
    async fn deactivations_since(
        &mut self,
        license_id: Uuid,
        since: OffsetDateTime,
    ) -> Result<Vec<OffsetDateTime>, StoreError>;

    /// The policy with this name, read with `lock`.
    async fn policy(&mut self, name: &str, lock: PolicyLock) -> Result<Option<Policy>, StoreError>;

    /// Stores a new policy; [`StoreError::Duplicate`] when its name is taken.
    async fn insert_policy(&mut self, policy: &Policy) -> Result<(), StoreError>;

    /// Replaces the terms of the policy with `policy.name` (its product stays); `false` when there is none. A lease
    /// set to `None` also ends the lease of every machine of the policy's licenses, taking their licenses' locks
    /// first (so a check-in that read the old lease commits before, and its lease is ended too).
    async fn update_policy(&mut self, policy: &Policy) -> Result<bool, StoreError>;

    /// Deletes a policy no license uses.
    async fn delete_policy(&mut self, name: &str) -> Result<PolicyDeleted, StoreError>;

    /// Removes a machine, freeing its slot; `false` when it was not active. Its culled mark is forgotten too.
    async fn remove_machine(&mut self, license_id: Uuid, fingerprint: &str) -> Result<bool, StoreError>;

    /// Records the deactivation proof of the offline token issued to an active machine (replacing an earlier one);
    /// `false` when the machine is not active.
    async fn set_offline_proof(
        &mut self,
        license_id: Uuid,
        fingerprint: &str,
        proof: &[u8; 16],
    ) -> Result<bool, StoreError>;

    /// Redeems an offline deactivation: removes the license's machine whose offline proof is `proof` and records the
    /// proof as redeemed, so one code frees one slot once, and only on its own license.
    async fn redeem_deactivation(
        &mut self,
        license_id: Uuid,
        proof: &[u8; 16],
        at: OffsetDateTime,
    ) -> Result<Redeemed, StoreError>;

    /// How many machines are active on the license, as this unit sees it.
    async fn count_machines(&mut self, license_id: Uuid) -> Result<u32, StoreError>;

    /// Appends an event to the log, and a pending delivery for every enabled webhook endpoint subscribed to its
    /// kind; they commit with the unit's other writes (the outbox).
    async fn append_event(&mut self, event: &NewEvent) -> Result<(), StoreError>;

    /// Stores an admin token by the SHA-256 of its secret.
    async fn insert_admin_token(&mut self, hash: &[u8; 32], token: &AdminToken) -> Result<(), StoreError>;

    /// Marks the admin token revoked at `at` (a revoked token stays revoked, at its first time); the token as it was
    /// before, or `None` when there is none with this id.
    async fn revoke_admin_token(&mut self, id: &str, at: OffsetDateTime) -> Result<Option<AdminToken>, StoreError>;

    /// Records that the admin token was used at `at`.
    async fn touch_admin_token(&mut self, id: &str, at: OffsetDateTime) -> Result<(), StoreError>;

    /// The webhook endpoint, locked until the unit ends.
    async fn webhook(&mut self, id: Uuid) -> Result<Option<WebhookEndpoint>, StoreError>;

    /// Stores a new webhook endpoint and its subscriptions.
    async fn insert_webhook(&mut self, endpoint: &WebhookEndpoint) -> Result<(), StoreError>;

    /// Saves an endpoint's secrets, description and disabled state (its url and events never change); `false` when
    /// there is none with this id.
    async fn update_webhook(&mut self, endpoint: &WebhookEndpoint) -> Result<bool, StoreError>;

    /// Deletes an endpoint: from now on it is not found, gets no deliveries and its pending ones are not attempted;
    /// its rows stay until [`Tx::purge_deleted_webhooks`]. `false` when there is none with this id.
    async fn delete_webhook(&mut self, id: Uuid, at: OffsetDateTime) -> Result<bool, StoreError>;

    /// Removes the rows (deliveries, subscriptions, the endpoint) of at most `limit` endpoints deleted before
    /// `before`; how many endpoints.
    async fn purge_deleted_webhooks(&mut self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError>;

    /// Deletes at most `limit` of the oldest events recorded before `before`, with their webhook deliveries; an
    /// event with a delivery still pending to an enabled endpoint stays. Looks only at the `limit` oldest events, so
    /// it costs the same on any size of log; how many were deleted.
    async fn prune_events(&mut self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError>;

    /// Claims at most `limit` due deliveries (pending, `next_attempt_at <= now`, endpoint enabled, not of an endpoint
    /// in `skip`) for an attempt: only the first queued pending delivery of each (endpoint, license) lane, so a lane's
    /// events arrive in the order they were queued, one at a time. A claim counts an attempt and moves
    /// `next_attempt_at` to `claim_until`, so a delivery whose attempt dies with its process is claimed again then.
    /// On PostgreSQL rows another instance is claiming are skipped.
    async fn claim_deliveries(
        &mut self,
        now: OffsetDateTime,
        claim_until: OffsetDateTime,
        limit: u32,
        skip: &[Uuid],
    ) -> Result<Vec<Claimed>, StoreError>;

    /// Records how the attempt that claimed the delivery with `attempts` ended; `false` (nothing written) when the
    /// claim was lost meanwhile (claimed again after it ended). A success also moves the endpoint's
    /// `last_success_at` (when the stored one is older than [`super::SUCCESS_RESOLUTION_SECS`]).
    async fn record_attempt(
        &mut self,
        delivery_id: i64,
        attempts: u32,
        at: OffsetDateTime,
        attempt: &Attempt,
    ) -> Result<bool, StoreError>;

    /// Queues the event of an endpoint's delivery again, as a new pending delivery due at `at`; `None` when the
    /// endpoint has no such delivery.
    async fn resend_delivery(
        &mut self,
        endpoint_id: Uuid,
        delivery_id: i64,
        at: OffsetDateTime,
    ) -> Result<Option<Delivery>, StoreError>;

    /// Claims at most `limit` licenses whose expiry passed at or before `now` and was not announced yet, marks them
    /// announced, and returns them (the caller records `license.expired` in the same unit). On PostgreSQL licenses
    /// another unit holds are skipped: each expiry is announced once.
    async fn announce_expiries(&mut self, now: OffsetDateTime, limit: u32) -> Result<Vec<License>, StoreError>;

    /// Records the public keys of the signing key ring (exactly one of `keys` active); `false` (nothing written) when
    /// `how` is [`RecordKeys::First`] and the store had keys recorded already, or [`RecordKeys::Update`] and the
    /// store records another signing key than expected or the ring would make a retired key sign again.
    async fn record_keys(
        &mut self,
        keys: &[RecordedKey],
        how: RecordKeys,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Stores a network rule. A license's rule names a license that exists, a policy's a policy that exists (the
    /// foreign keys refuse others).
    async fn insert_ip_rule(&mut self, rule: &IpRule) -> Result<(), StoreError>;

    /// Deletes a network rule; the rule as it was, or `None` when there is none with this id.
    async fn delete_ip_rule(&mut self, id: Uuid) -> Result<Option<IpRule>, StoreError>;

    /// Deletes every rule of a policy (before the policy itself is deleted); the rules deleted, oldest first.
    async fn delete_policy_ip_rules(&mut self, policy: &str) -> Result<Vec<IpRule>, StoreError>;

    /// Adds these counters to the stored ones of each (license, address): requests and blocked are added, first seen
    /// and last seen widened.
    async fn record_ip_usage(&mut self, usage: &[IpUsage]) -> Result<(), StoreError>;

    /// Adds a flush's usage counters (docs/usage.md): each day's validations and activations; each machine's
    /// validations and last validation time (a machine no longer stored is skipped), counted once among a day's
    /// machines when the last validation stored for it is before that day or it is no longer stored; each license's
    /// validations and last validation time.
    async fn record_usage(&mut self, batch: &UsageBatch) -> Result<(), StoreError>;

    /// Deletes at most `limit` of the daily usage rows of days before `before`, oldest first; how many.
    async fn prune_usage(&mut self, before: time::Date, limit: u32) -> Result<u64, StoreError>;

    /// Stores the first admin token only if the store has none: of any number of instances starting on an empty
    /// database at once, exactly one stores (and prints) a token. `false` when one existed.
    async fn add_first_admin_token(&mut self, hash: &[u8; 32], token: &AdminToken) -> Result<bool, StoreError>;
}

/// How [`Tx::record_keys`] records a ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordKeys {
    /// Only if the store records no key yet (a first start): of instances starting at once on one empty database,
    /// exactly one records its ring.
    First,
    /// The ring after a rotation or retirement, compare-and-set: recorded only if the store records one of these
    /// key ids as the signing key now (the ring's previous active key for a rotation; its active or retired keys
    /// otherwise), and never if the ring's active key is recorded as retired (a key never signs again once
    /// retired). The keys given are recorded (new ones added, the active one marked, every other one retired); keys
    /// recorded before and no longer given stay, retired.
    Update {
        /// Key ids one of which the store must record as active.
        expect_active: Vec<String>,
    },
}

impl RecordKeys {
    /// Whether recording `keys` over what the store records now (`recorded`) is allowed: the one decision both
    /// backends make inside their transaction, after taking their lock.
    pub(crate) fn allows(&self, recorded: &[RecordedKey], keys: &[RecordedKey]) -> bool {
        match self {
            RecordKeys::First => recorded.is_empty(),
            RecordKeys::Update { expect_active } => {
                let follows = RecordedKey::signing(recorded).is_some_and(|k| expect_active.contains(&k.key_id));
                let active = RecordedKey::signing(keys).map(|k| k.key_id.as_str());
                let revives = recorded.iter().any(|k| !k.active && Some(k.key_id.as_str()) == active);
                follows && !revives
            }
        }
    }
}

/// [`Store::run`] with a typed result and the caller's own error type.
pub trait StoreExt: Store {
    /// Runs `unit` as one transaction (see [`Store::run`]) and returns what it returned. `Ok` commits every write the
    /// unit made through its [`Tx`]; `Err` rolls all of them back and is returned as it is. A commit that fails
    /// after an `Ok` is returned as the store's error (nothing was written).
    fn transact<T, E, F>(&self, unit: F) -> BoxFuture<'_, Result<T, E>>
    where
        F: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let slot: Arc<Mutex<Option<Result<T, E>>>> = Arc::new(Mutex::new(None));
        let out = Arc::clone(&slot);
        let work: Work = Box::new(move |tx| {
            Box::pin(async move {
                let result = unit(tx).await;
                let commit = result.is_ok();
                if let Ok(mut out) = out.lock() {
                    *out = Some(result);
                }
                if commit {
                    Ok(())
                } else {
                    Err(StoreError::RolledBack)
                }
            })
        });
        Box::pin(async move {
            let ran = self.run(work).await;
            let result = slot.lock().ok().and_then(|mut s| s.take());
            match (ran, result) {
                (Ok(()), Some(result)) => result,
                // The unit's own error: it was rolled back.
                (Err(StoreError::RolledBack), Some(Err(e))) => Err(e),
                // The commit failed after the unit succeeded, or the unit never ran.
                (Err(e), _) => Err(E::from(e)),
                (Ok(()), None) => Err(E::from(StoreError::CommitFailed("the unit of work did not run".into()))),
            }
        })
    }
}

impl<S: Store + ?Sized> StoreExt for S {}
