//! Conformance cases of admin tokens, the audit log and the webhook outbox (docs/webhooks.md): what every backend
//! must do, including the guarantees that only show under concurrency (a delivery claimed by one claimer at a time,
//! a lane's deliveries in event order, each expiry announced once).

use std::collections::HashSet;
use std::sync::Arc;

use issuer::{
    Actor, AdminToken, Attempt, DeliveryState, EventFilter, EventKind, LicenseUpdate, NewEvent, Scope, Store,
    StoreExt as _, WebhookEndpoint,
};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::one::OneUnit as _;
use super::{created, license, now};

fn token(id: &str, scope: Scope) -> AdminToken {
    AdminToken {
        id: id.into(),
        label: format!("label {id}"),
        scope,
        created_at: now(),
        last_used_at: None,
        revoked_at: None,
    }
}

fn endpoint(events: &[&str]) -> WebhookEndpoint {
    WebhookEndpoint {
        id: Uuid::now_v7(),
        url: "http://127.0.0.1:9/hook".into(),
        description: "test".into(),
        events: events.iter().map(|e| e.to_string()).collect(),
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        previous_secret: None,
        previous_secret_until: None,
        created_at: now(),
        disabled_at: None,
        disabled_reason: None,
        last_success_at: None,
    }
}

async fn add_endpoint(store: &Arc<dyn Store>, e: &WebhookEndpoint) {
    let e = e.clone();
    store.transact(move |tx| Box::pin(async move { tx.insert_webhook(&e).await })).await.unwrap();
}

fn event(license_id: Option<Uuid>, kind: EventKind) -> NewEvent {
    NewEvent {
        license_id,
        kind,
        at: now(),
        fingerprint: None,
        client_ip: Some("192.0.2.1".into()),
        actor: Some(Actor::Cli),
        detail: serde_json::json!({ "n": 1 }),
    }
}

async fn claim(store: &Arc<dyn Store>, at: OffsetDateTime, limit: u32) -> Vec<issuer::Claimed> {
    claim_skipping(store, at, limit, &[]).await
}

async fn claim_skipping(store: &Arc<dyn Store>, at: OffsetDateTime, limit: u32, skip: &[Uuid]) -> Vec<issuer::Claimed> {
    let skip = skip.to_vec();
    store
        .transact(move |tx| {
            Box::pin(async move { tx.claim_deliveries(at, at + Duration::seconds(15), limit, &skip).await })
        })
        .await
        .unwrap()
}

async fn record(store: &Arc<dyn Store>, c: &issuer::Claimed, at: OffsetDateTime, attempt: Attempt) -> bool {
    let (id, attempts) = (c.delivery.id, c.delivery.attempts);
    store
        .transact(move |tx| Box::pin(async move { tx.record_attempt(id, attempts, at, &attempt).await }))
        .await
        .unwrap()
}

/// Tokens are found by the hash of their secret only, listed oldest first with their scope, and revoked once: a
/// second revocation keeps the first time. The first token is stored only into an empty table.
pub async fn admin_tokens_are_stored_by_hash_listed_and_revoked_once(store: Arc<dyn Store>) {
    assert!(store.list_admin_tokens().await.unwrap().is_empty());
    let first = token("00000000000000aa", Scope::Write);
    let stored = first.clone();
    let added = store.transact(move |tx| Box::pin(async move { tx.add_first_admin_token(&[7; 32], &stored).await }));
    assert!(added.await.unwrap());
    let again = token("00000000000000ab", Scope::Write);
    let added = store.transact(move |tx| Box::pin(async move { tx.add_first_admin_token(&[8; 32], &again).await }));
    assert!(!added.await.unwrap(), "a first token only into an empty table");
    let reader = token("00000000000000bb", Scope::Read);
    store.insert_admin_token(&[9; 32], &reader).await.unwrap();
    assert_eq!(store.admin_token_by_hash(&[9; 32]).await.unwrap(), Some(reader.clone()));
    assert_eq!(store.admin_token_by_hash(&[8; 32]).await.unwrap(), None);
    let listed = store.list_admin_tokens().await.unwrap();
    assert_eq!(listed.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["00000000000000aa", "00000000000000bb"]);
    assert_eq!(listed[1].scope, Scope::Read);

    let at = now();
    let touched = store.transact(move |tx| Box::pin(async move { tx.touch_admin_token("00000000000000bb", at).await }));
    touched.await.unwrap();
    assert_eq!(store.admin_token_by_hash(&[9; 32]).await.unwrap().unwrap().last_used_at, Some(at));
    let revoke = |id: &'static str, at: OffsetDateTime| {
        let store = store.clone();
        async move { store.transact(move |tx| Box::pin(async move { tx.revoke_admin_token(id, at).await })).await }
    };
    let before = revoke("00000000000000bb", at).await.unwrap().unwrap();
    assert_eq!(before.revoked_at, None, "the token as it was before");
    let second = revoke("00000000000000bb", at + Duration::hours(1)).await.unwrap().unwrap();
    assert_eq!(second.revoked_at, Some(at), "revoked once, at its first time");
    assert_eq!(store.admin_token_by_hash(&[9; 32]).await.unwrap().unwrap().revoked_at, Some(at));
    assert_eq!(revoke("ffffffffffffffff", at).await.unwrap(), None);
}

/// Events of no license are stored and listed beside license events, with their actor; the global list filters by
/// kind and license and pages by id.
pub async fn events_of_no_license_are_listed_and_filtered_by_type_and_license(store: Arc<dyn Store>) {
    let (a, b) = (created(&store, 1).await, created(&store, 1).await);
    store.append_event(&event(Some(a.id), EventKind::Created)).await.unwrap();
    // Made once: an event made again at the comparison could fall in the next second.
    let policy_created = event(None, EventKind::PolicyCreated);
    store.append_event_in_unit(&policy_created).await.unwrap();
    store.append_event(&event(Some(b.id), EventKind::Created)).await.unwrap();
    let mut by_token = event(None, EventKind::AdminTokenRevoked);
    by_token.actor = Some(Actor::AdminToken { id: "00000000000000aa".into(), label: "ops".into() });
    store.append_event_in_unit(&by_token).await.unwrap();

    let all = store.events(&EventFilter { limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(all[1].event, policy_created);
    assert_eq!(all[3].event, by_token);
    let filter = EventFilter { kind: Some(EventKind::Created), limit: 100, ..Default::default() };
    let created = store.events(&filter).await.unwrap();
    assert_eq!(created.iter().map(|e| e.event.license_id).collect::<Vec<_>>(), [Some(a.id), Some(b.id)]);
    let of_b = store.events(&EventFilter { license_id: Some(b.id), limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(of_b.len(), 1);
    let page = store.events(&EventFilter { after: all[1].id, limit: 2, ..Default::default() }).await.unwrap();
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), [all[2].id, all[3].id]);
}

/// Appending an event queues one pending delivery per enabled endpoint subscribed to its kind (or to `*`), in the
/// same unit: a unit rolled back queues nothing. Disabled endpoints get none; deleting an endpoint drops its
/// deliveries.
pub async fn events_queue_deliveries_for_subscribed_enabled_endpoints_only(store: Arc<dyn Store>) {
    let l = created(&store, 1).await;
    let (all, created_only, machines) = (endpoint(&["*"]), endpoint(&["created"]), endpoint(&["activated"]));
    let mut disabled = endpoint(&["*"]);
    disabled.disabled_at = Some(now());
    for e in [&all, &created_only, &machines, &disabled] {
        add_endpoint(&store, e).await;
    }
    let listed = store.list_webhooks().await.unwrap();
    assert_eq!(listed.len(), 4);
    assert_eq!(store.webhook(created_only.id).await.unwrap(), Some(created_only.clone()));

    store.append_event(&event(Some(l.id), EventKind::Created)).await.unwrap();
    store.append_event_in_unit(&event(None, EventKind::PolicyCreated)).await.unwrap();
    let rolled_back = store.transact::<(), issuer::StoreError, _>(move |tx| {
        Box::pin(async move {
            tx.append_event(&event(Some(l.id), EventKind::Created)).await?;
            Err(issuer::StoreError::RolledBack)
        })
    });
    assert!(rolled_back.await.is_err());
    let count = |id: Uuid| {
        let store = store.clone();
        async move { store.list_deliveries(id, 0, 100).await.unwrap() }
    };
    assert_eq!(count(all.id).await.len(), 2, "* gets both");
    let only = count(created_only.id).await;
    assert_eq!(only.len(), 1);
    assert_eq!((only[0].state, only[0].attempts, only[0].next_attempt_at.is_some()), (DeliveryState::Pending, 0, true));
    assert!(count(machines.id).await.is_empty());
    assert!(count(disabled.id).await.is_empty(), "a disabled endpoint gets no deliveries");
    assert_eq!(store.pending_deliveries().await.unwrap(), 3);

    // A deleted endpoint is gone at once: not found, no new deliveries, its pending ones never claimed; its rows
    // stay until the purge.
    let (id, deleted_at) = (all.id, now());
    let deleted = store.transact(move |tx| Box::pin(async move { tx.delete_webhook(id, deleted_at).await }));
    assert!(deleted.await.unwrap());
    let again = store.transact(move |tx| Box::pin(async move { tx.delete_webhook(id, deleted_at).await }));
    assert!(!again.await.unwrap(), "deleted once");
    assert!(store.webhook(all.id).await.unwrap().is_none());
    assert!(store.list_webhooks().await.unwrap().iter().all(|e| e.id != all.id));
    store.append_event(&event(Some(l.id), EventKind::Created)).await.unwrap();
    assert_eq!(count(all.id).await.len(), 2, "nothing queued for it after the delete");
    let later = now() + Duration::minutes(1);
    let claimed = claim(&store, later, 100).await;
    assert!(claimed.iter().all(|c| c.endpoint.id != all.id), "its pending deliveries are never attempted");
    let early = deleted_at;
    let kept = store.transact(move |tx| Box::pin(async move { tx.purge_deleted_webhooks(early, 10).await }));
    assert_eq!(kept.await.unwrap(), 0, "not purged before its time");
    let late = deleted_at + Duration::hours(2);
    let purged = store.transact(move |tx| Box::pin(async move { tx.purge_deleted_webhooks(late, 10).await }));
    assert_eq!(purged.await.unwrap(), 1);
    assert!(count(all.id).await.is_empty(), "its deliveries went with it");
}

/// A claim takes only the oldest pending delivery of each (endpoint, license) lane, so one license's events go out
/// in order and one at a time; a claimed delivery is not due again until its claim ends; a success frees the lane.
/// Retries wait for their time; a resend queues the same event again.
pub async fn claims_take_one_delivery_per_lane_in_event_order(store: Arc<dyn Store>) {
    let (a, b) = (created(&store, 1).await, created(&store, 1).await);
    let hook = endpoint(&["*"]);
    add_endpoint(&store, &hook).await;
    for _ in 0..3 {
        store.append_event(&event(Some(a.id), EventKind::Updated)).await.unwrap();
        store.append_event(&event(Some(b.id), EventKind::Updated)).await.unwrap();
    }
    let t = now() + Duration::seconds(1);
    assert!(store.has_due_deliveries(t).await.unwrap());
    let first = claim(&store, t, 100).await;
    assert_eq!(first.len(), 2, "one per lane: {first:?}");
    assert!(!store.has_due_deliveries(t).await.unwrap(), "nothing claimable while the heads are claimed");
    let events: Vec<i64> = store.list_deliveries(hook.id, 0, 100).await.unwrap().iter().map(|d| d.event_id).collect();
    let of = |l: Uuid| first.iter().find(|c| c.event.event.license_id == Some(l)).unwrap().clone();
    let (ca, cb) = (of(a.id), of(b.id));
    assert_eq!(ca.event.id, events[0], "the lane's oldest event first");
    assert_eq!((ca.delivery.attempts, ca.endpoint.id), (1, hook.id));
    assert!(claim(&store, t, 100).await.is_empty(), "claimed heads block their lanes");

    assert!(record(&store, &ca, t, Attempt::Delivered { status: 204 }).await);
    let retry = t + Duration::minutes(5);
    let failed =
        Attempt::Failed { status: Some(500), error: "the endpoint answered 500".into(), retry_at: Some(retry) };
    assert!(record(&store, &cb, t, failed).await);
    let next = claim(&store, t, 100).await;
    assert_eq!(next.len(), 1, "a's next event; b waits for its retry");
    assert_eq!(next[0].event.event.license_id, Some(a.id));
    assert!(next[0].event.id > ca.event.id);
    let ended = store.webhook(hook.id).await.unwrap().unwrap();
    assert_eq!(ended.last_success_at.map(|s| s.unix_timestamp()), Some(t.unix_timestamp()));

    assert!(record(&store, &next[0], t, Attempt::Delivered { status: 200 }).await);
    let again = claim(&store, retry, 100).await;
    let pairs: Vec<_> = again.iter().map(|c| (c.event.event.license_id, c.delivery.id, c.delivery.attempts)).collect();
    assert!(pairs.contains(&(Some(b.id), cb.delivery.id, 2)), "b's head again, at its retry: {pairs:?}");
    assert_eq!(pairs.len(), 2, "and a's third event: {pairs:?}");
    let again: Vec<_> = again.into_iter().filter(|c| c.delivery.id == cb.delivery.id).collect();
    let listed = store.list_deliveries(hook.id, 0, 100).await.unwrap();
    let b_head = listed.iter().find(|d| d.id == cb.delivery.id).unwrap();
    assert_eq!((b_head.last_status, b_head.last_error.as_deref()), (Some(500), Some("the endpoint answered 500")));

    let gave_up = Attempt::Failed { status: None, error: "timed out".into(), retry_at: None };
    assert!(record(&store, &again[0], retry, gave_up).await);
    let done = store.list_deliveries(hook.id, 0, 100).await.unwrap();
    let failed = done.iter().find(|d| d.id == cb.delivery.id).unwrap();
    assert_eq!(
        (failed.state, failed.next_attempt_at, failed.finished_at.is_some()),
        (DeliveryState::Failed, None, true)
    );

    let (hook_id, delivery_id) = (hook.id, cb.delivery.id);
    let resent = store
        .transact(move |tx| Box::pin(async move { tx.resend_delivery(hook_id, delivery_id, retry).await }))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((resent.event_id, resent.state, resent.attempts), (cb.event.id, DeliveryState::Pending, 0));
    let other = Uuid::now_v7();
    let none = store.transact(move |tx| Box::pin(async move { tx.resend_delivery(other, delivery_id, retry).await }));
    assert_eq!(none.await.unwrap(), None, "only the endpoint's own deliveries");
}

/// Claimers racing over many lanes never take one delivery twice, and never two of one lane at once.
pub async fn concurrent_claims_never_take_a_delivery_twice(store: Arc<dyn Store>) {
    let hook = endpoint(&["*"]);
    add_endpoint(&store, &hook).await;
    let mut lanes = Vec::new();
    for _ in 0..20 {
        let l = created(&store, 1).await;
        for _ in 0..3 {
            store.append_event(&event(Some(l.id), EventKind::Updated)).await.unwrap();
        }
        lanes.push(l.id);
    }
    let t = now() + Duration::seconds(1);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { claim(&store, t, 10).await })
        })
        .collect();
    let mut seen = HashSet::new();
    let mut lanes_seen = HashSet::new();
    for task in tasks {
        for c in task.await.unwrap() {
            assert!(seen.insert(c.delivery.id), "delivery {} claimed twice", c.delivery.id);
            assert!(lanes_seen.insert(c.event.event.license_id), "two deliveries of one lane at once");
        }
    }
    assert_eq!(seen.len(), lanes.len(), "every lane's head, once");

    // An endpoint in the skip list is not claimed; another endpoint's deliveries are.
    let other = endpoint(&["*"]);
    add_endpoint(&store, &other).await;
    let l = created(&store, 1).await;
    store.append_event(&event(Some(l.id), EventKind::Updated)).await.unwrap();
    let later = t + Duration::minutes(1);
    let skipping = claim_skipping(&store, later, 100, &[hook.id]).await;
    assert!(!skipping.is_empty() && skipping.iter().all(|c| c.endpoint.id == other.id), "{skipping:?}");
}

/// An attempt is recorded only under the claim that made it: once claimed again (the first claim ended), the late
/// result of the first attempt is ignored.
pub async fn attempts_are_recorded_only_under_their_claim(store: Arc<dyn Store>) {
    let l = license(1);
    store.create_license(&l, None).await.unwrap();
    let hook = endpoint(&["*"]);
    add_endpoint(&store, &hook).await;
    store.append_event(&event(Some(l.id), EventKind::Created)).await.unwrap();
    let t = now() + Duration::seconds(1);
    let first = claim(&store, t, 10).await.remove(0);
    let after_claim = t + Duration::seconds(16);
    let second = claim(&store, after_claim, 10).await.remove(0);
    assert_eq!((second.delivery.id, second.delivery.attempts), (first.delivery.id, 2));
    assert!(!record(&store, &first, after_claim, Attempt::Delivered { status: 200 }).await, "the stale claim");
    // A resend of a delivery still in flight waits for it: one event is never in flight twice to one endpoint.
    let (hook_id, delivery_id) = (hook.id, first.delivery.id);
    let resend =
        store.transact(move |tx| Box::pin(async move { tx.resend_delivery(hook_id, delivery_id, after_claim).await }));
    let resent = resend.await.unwrap().unwrap();
    assert!(claim(&store, after_claim, 10).await.is_empty(), "the resend waits for the pending original");
    assert!(record(&store, &second, after_claim, Attempt::Delivered { status: 200 }).await);
    let d = store.list_deliveries(hook.id, 0, 10).await.unwrap().remove(0);
    assert_eq!((d.state, d.attempts, d.last_status), (DeliveryState::Delivered, 2, Some(200)));
    let third = claim(&store, after_claim, 10).await;
    assert_eq!(third.iter().map(|c| c.delivery.id).collect::<Vec<_>>(), [resent.id]);
    assert!(record(&store, &third[0], after_claim, Attempt::Delivered { status: 200 }).await);
    assert!(claim(&store, after_claim + Duration::hours(1), 10).await.is_empty());
    assert!(!store.has_due_deliveries(after_claim + Duration::hours(1)).await.unwrap());
}

/// A passed expiry is announced once, also with sweepers racing; an expiry not passed, a suspended license or a
/// perpetual one is not; moving the expiry into the future announces the new one when it passes, moving it within
/// the past announces nothing more.
pub async fn expiries_are_announced_once_and_again_after_a_change(store: Arc<dyn Store>) {
    let t = now();
    let mut ids = Vec::new();
    for i in 0..30 {
        let mut l = license(1);
        l.expires_at = Some(t - Duration::minutes(i + 1));
        store.create_license(&l, None).await.unwrap();
        ids.push(l.id);
    }
    let mut future = license(1);
    future.expires_at = Some(t + Duration::days(1));
    store.create_license(&future, None).await.unwrap();
    let mut suspended = license(1);
    suspended.expires_at = Some(t - Duration::days(1));
    suspended.status = issuer::LicenseStatus::Suspended;
    store.create_license(&suspended, None).await.unwrap();
    created(&store, 1).await;

    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store.transact(move |tx| Box::pin(async move { tx.announce_expiries(t, 10).await })).await.unwrap()
            })
        })
        .collect();
    let mut announced = Vec::new();
    for task in tasks {
        announced.extend(task.await.unwrap().into_iter().map(|l| l.id));
    }
    let rest = store.transact(move |tx| Box::pin(async move { tx.announce_expiries(t, 100).await })).await.unwrap();
    announced.extend(rest.into_iter().map(|l| l.id));
    let unique: HashSet<_> = announced.iter().copied().collect();
    assert_eq!(announced.len(), unique.len(), "each expiry announced once");
    assert_eq!(unique, ids.iter().copied().collect::<HashSet<_>>());

    // The same expiry again, or another one in the past: still expired, not announced again.
    for expiry in [t - Duration::minutes(2), t - Duration::days(3)] {
        let update = LicenseUpdate { expires_at: Some(Some(expiry)), ..Default::default() };
        store.update_license(ids[1], &update, t).await.unwrap();
    }
    let none = store.transact(move |tx| Box::pin(async move { tx.announce_expiries(t, 100).await })).await.unwrap();
    assert!(none.is_empty(), "an expiry still in the past is not announced twice: {none:?}");

    let renewed = ids[0];
    let update = LicenseUpdate { expires_at: Some(Some(t + Duration::hours(1))), ..Default::default() };
    store.update_license(renewed, &update, t).await.unwrap();
    let none = store.transact(move |tx| Box::pin(async move { tx.announce_expiries(t, 100).await })).await.unwrap();
    assert!(none.is_empty(), "the new expiry has not passed");
    let later = t + Duration::days(2);
    let again = store.transact(move |tx| Box::pin(async move { tx.announce_expiries(later, 100).await })).await;
    let again: HashSet<Uuid> = again.unwrap().iter().map(|l| l.id).collect();
    assert_eq!(again, HashSet::from([renewed, future.id]));
}

/// Retention: a prune deletes the oldest events recorded before its cutoff, at most its limit, with their
/// deliveries; an event with a delivery pending to an enabled endpoint stays (a disabled endpoint's hold nothing
/// back), and so does every event after the cutoff.
pub async fn prune_deletes_old_events_unless_an_enabled_endpoint_still_waits_for_them(store: Arc<dyn Store>) {
    let l = created(&store, 1).await;
    let old = now() - Duration::days(500);
    let prune = |before: OffsetDateTime, limit: u32| {
        let store = store.clone();
        async move { store.transact(move |tx| Box::pin(async move { tx.prune_events(before, limit).await })).await }
    };
    let baseline = store.list_events(l.id, 0, 100).await.unwrap().len();
    // Events of the license (delivered to the hook), then one of no license that stays pending, then a recent one.
    let hook = endpoint(&[EventKind::Updated.stored_name()]);
    add_endpoint(&store, &hook).await;
    for _ in 0..3 {
        store.append_event(&NewEvent { at: old, ..event(Some(l.id), EventKind::Updated) }).await.unwrap();
    }
    let claimed = claim(&store, now(), 100).await;
    assert_eq!(claimed.len(), 1, "one lane, one delivery at a time");
    assert!(record(&store, &claimed[0], now(), Attempt::Delivered { status: 204 }).await);
    store.append_event(&NewEvent { at: old, ..event(None, EventKind::Updated) }).await.unwrap();
    store.append_event(&event(Some(l.id), EventKind::Updated)).await.unwrap();
    let cutoff = now() - Duration::days(400);

    assert_eq!(prune(old, 100).await.unwrap(), 0, "nothing is older than the oldest");
    // At most the limit: the oldest, delivered, goes.
    assert_eq!(prune(cutoff, 1).await.unwrap(), 1);
    // The next two of the license wait in their lane and the one of no license is pending too: they stay until
    // delivered or given up.
    assert_eq!(prune(cutoff, 100).await.unwrap(), 0, "pending deliveries keep their events");
    let deliveries = store.list_deliveries(hook.id, 0, 100).await.unwrap();
    assert_eq!(deliveries.len(), 4, "the delivered one went with its event: {deliveries:?}");
    assert!(deliveries.iter().all(|d| d.state == DeliveryState::Pending));
    let left = store.list_events(l.id, 0, 100).await.unwrap();
    assert_eq!(left.len(), baseline + 2 + 1, "two pending old events and the recent one stay: {left:?}");
    assert!(left.iter().any(|e| e.event.at > cutoff));

    // A disabled endpoint's pending deliveries hold nothing back: the old events go with them.
    let disabled = WebhookEndpoint { disabled_at: Some(now()), disabled_reason: Some("test".into()), ..hook.clone() };
    store.transact(move |tx| Box::pin(async move { tx.update_webhook(&disabled).await })).await.unwrap();
    assert_eq!(prune(cutoff, 100).await.unwrap(), 3);
    let deliveries = store.list_deliveries(hook.id, 0, 100).await.unwrap();
    assert_eq!(deliveries.len(), 1, "only the recent event's delivery is left: {deliveries:?}");
    assert_eq!(store.list_events(l.id, 0, 100).await.unwrap().len(), baseline + 1);
}
