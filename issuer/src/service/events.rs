//! The audit log (every event, of any license or none, with its actor and client IP), the announcement of license
//! expiries (`license.expired`, once per expiry), and the background sweeps that run both maintenance jobs.

use std::sync::Arc;

use super::licenses::snapshot;
use super::{Licensing, ServiceError};
use crate::store::{Event, EventFilter, EventKind, StoreExt as _};

/// Most licenses announced per unit of work.
const EXPIRY_BATCH: u32 = 200;

/// Most events deleted per unit of work: small enough that a batch is a few milliseconds of the writer's time, so the
/// writes queued behind it wait no longer than behind any other unit.
const PRUNE_BATCH: u32 = 500;

/// Most prune units per sweep, so a first prune of a large backlog (100,000 events a sweep) does not hold back the
/// lease and expiry sweeps that come after it; the next sweep goes on.
const PRUNE_UNITS_PER_SWEEP: u32 = 200;

/// How long a deleted webhook endpoint's rows stay before the sweep removes them: longer than any statement that
/// chose the endpoint before the delete can still run.
const DELETED_WEBHOOK_GRACE: time::Duration = time::Duration::hours(1);

impl Licensing {
    /// Events matching the filter, oldest first.
    pub async fn audit_events(&self, filter: &EventFilter) -> Result<Vec<Event>, ServiceError> {
        Ok(self.store.events(filter).await?)
    }

    /// Records `license.expired` for every active license whose expiry passed (by the service clock) and was not
    /// announced yet, in units of at most 200; how many. Each expiry is announced once, also with several instances
    /// sweeping at once; a license whose expiry is changed is announced again when the new one passes.
    pub async fn announce_expiries(&self) -> Result<usize, ServiceError> {
        let mut total = 0;
        loop {
            let ctx = self.system_context();
            let announced = self
                .store
                .transact::<_, ServiceError, _>(move |tx| {
                    Box::pin(async move {
                        let expired = tx.announce_expiries(ctx.at(), EXPIRY_BATCH).await?;
                        for license in &expired {
                            let detail = serde_json::json!({
                                "expired_at": license.expires_at.map(|t| t.unix_timestamp()),
                                "license": snapshot(license, ctx.now),
                            });
                            tx.append_event(&ctx.event(license.id, EventKind::Expired, None, detail)).await?;
                        }
                        Ok(expired.len())
                    })
                })
                .await?;
            total += announced;
            if announced < EXPIRY_BATCH as usize {
                return Ok(total);
            }
        }
    }

    /// Removes the rows of webhook endpoints deleted more than an hour ago (at most 100 per call); how many.
    pub async fn purge_deleted_webhooks(&self) -> Result<u64, ServiceError> {
        let before = self.system_context().at() - DELETED_WEBHOOK_GRACE;
        let purged = self
            .store
            .transact::<_, ServiceError, _>(move |tx| {
                Box::pin(async move { Ok(tx.purge_deleted_webhooks(before, 100).await?) })
            })
            .await?;
        Ok(purged)
    }

    /// Deletes the events older than the retention (by the service clock), and the daily usage of the days before
    /// it, in units of at most 500 of each with the writer free for others between them, until a unit finds none or
    /// after 200 units; how many rows. Without a retention, nothing.
    pub async fn prune_events(&self) -> Result<u64, ServiceError> {
        let Some(retention) = self.event_retention else { return Ok(0) };
        let Some(before) = self.system_context().at().checked_sub(retention) else { return Ok(0) };
        let mut total = 0;
        for _ in 0..PRUNE_UNITS_PER_SWEEP {
            let pruned = self
                .store
                .transact::<_, ServiceError, _>(move |tx| {
                    Box::pin(async move {
                        let events = tx.prune_events(before, PRUNE_BATCH).await?;
                        // The daily usage of days wholly before the cutoff goes too.
                        let days = tx.prune_usage(super::usage::utc_day(before), PRUNE_BATCH).await?;
                        Ok(events + days)
                    })
                })
                .await?;
            total += pruned;
            // Not "fewer than a batch": an old event held by a pending delivery stays in every unit's window, and
            // the rest of the backlog must still go.
            if pruned == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        Ok(total)
    }

    /// Runs the sweeps every `interval` in a background task until the service is dropped (the task holds only a
    /// weak reference): [`Licensing::cull_expired_leases`], [`Licensing::announce_expiries`] and
    /// [`Licensing::purge_deleted_webhooks`], [`Licensing::prune_events`]. Culling at activation does not depend on it.
    pub fn spawn_sweeper(self: &Arc<Self>, interval: std::time::Duration) -> tokio::task::JoinHandle<()> {
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
                match licensing.announce_expiries().await {
                    Ok(0) => {}
                    Ok(expired) => tracing::info!(expired, "announced licenses whose expiry passed"),
                    Err(e) => tracing::warn!(error = %e, "the expiry sweep failed; it runs again at the next interval"),
                }
                if let Err(e) = licensing.purge_deleted_webhooks().await {
                    tracing::warn!(error = %e, "purging deleted webhook endpoints failed; it runs again later");
                }
                match licensing.prune_events().await {
                    Ok(0) => {}
                    Ok(pruned) => tracing::info!(pruned, "deleted events and daily usage older than the retention"),
                    Err(e) => {
                        tracing::warn!(error = %e, "pruning old events failed; it runs again at the next interval")
                    }
                }
            }
        })
    }
}
