//! Usage (docs/usage.md): validations write no row of their own. Each one is counted in memory (per license and
//! UTC day, per machine and day) and the counts are added to the store in one unit at most every second
//! ([`USAGE_FLUSH_INTERVAL`]), so a validation is a read only. A refused validation is recorded as a
//! `license.validated` event, but one per license, result code and minute (with its count and first and last time),
//! written when its minute is over: a flood of failing checks writes a bounded number of rows.
//!
//! A crash loses what was not flushed: at most the last second of counts, and the refusals of the current minute;
//! never an activation, deactivation or state change (those are units of work of their own).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use time::{Date, Duration, OffsetDateTime, UtcOffset};
use uuid::Uuid;

use super::error::invalid;
use super::{Context, LicenseRef, Licensing, ServiceError, ValidationCode};
use crate::store::{DailyUsage, DayUsage, EventKind, License, MachineUsage, NewEvent, StoreExt as _, UsageBatch};

/// How often a running service writes the usage counters.
pub const USAGE_FLUSH_INTERVAL: StdDuration = StdDuration::from_secs(1);

/// Longest range of days `GET /v1/licenses/{id}/usage` answers.
pub const MAX_USAGE_DAYS: i64 = 366;

/// The range of days answered when none is given: the last 30, today included.
const DEFAULT_USAGE_DAYS: i64 = 30;

/// Most entries of each kind (days, machines, refusals) held between two flushes; beyond it new entries are not
/// counted (and the flush logs how many were not), so a flood of distinct keys cannot grow memory without bound.
const MAX_PENDING: usize = 100_000;

/// Most refusal keys of one address each (`ip.blocked`) held before new addresses are coalesced by rule.
const MAX_FINE_REFUSALS: usize = 10_000;

/// What the next flush writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// The counts, and the refusals of every minute that is over.
    Due,
    /// Everything, the refusals of the current minute too: when the service stops.
    All,
}

/// One license's counts of one day, in memory.
#[derive(Clone, Copy, Debug, Default)]
struct DayCounts {
    validations: u64,
    activations: u64,
    last_validated_at: Option<OffsetDateTime>,
}

/// Refusals of one kind (a validation's code, a network rule's refusal of one address and operation) of one
/// license (or none) and minute.
#[derive(Clone, Debug)]
struct Refusals {
    count: u64,
    first_seen: OffsetDateTime,
    last_seen: OffsetDateTime,
    /// The first refusal's event: its fingerprint, address, actor and detail are what the minute's event shows.
    first: NewEvent,
    /// Whether its key is one address's, of those [`MAX_FINE_REFUSALS`] bounds.
    fine: bool,
}

/// A machine's validations of one day: (license, fingerprint, day).
type MachineDay = (Uuid, String, Date);

/// What refusals are coalesced by: (license, event kind, what was refused, Unix minute).
type RefusalMinute = (Option<Uuid>, EventKind, String, i64);

#[derive(Debug, Default)]
struct Pending {
    days: HashMap<(Uuid, Date), DayCounts>,
    /// Validations and the last one's time.
    machines: HashMap<MachineDay, (u64, OffsetDateTime)>,
    refusals: HashMap<RefusalMinute, Refusals>,
    /// Counts not kept because a map was full, since the last flush.
    dropped: u64,
    /// Refusal keys held that have a coarse form ([`UsageCounters::refused`]): one per address.
    fine_refusals: usize,
}

/// What one flush takes (and gives back if its write fails).
#[derive(Debug, Default)]
struct Taken {
    days: Vec<((Uuid, Date), DayCounts)>,
    machines: Vec<(MachineDay, (u64, OffsetDateTime))>,
    refusals: Vec<(RefusalMinute, Refusals)>,
}

/// The counters of one instance.
#[derive(Debug, Default)]
pub(super) struct UsageCounters {
    pending: Mutex<Pending>,
    /// One flush at a time, from its take to its commit (or its restore): a flush that finds nothing to take has
    /// waited for the one in flight, so what was counted before it started is stored when it returns.
    flushing: tokio::sync::Mutex<()>,
}

/// 0001-01-01, the first day the API takes and every backend stores.
fn first_day() -> Date {
    Date::from_ordinal_date(1, 1).unwrap_or(Date::MIN)
}

/// The UTC day of `at`: what usage is counted and pruned by.
pub(super) fn utc_day(at: OffsetDateTime) -> Date {
    at.to_offset(UtcOffset::UTC).date()
}

fn minute(at: OffsetDateTime) -> i64 {
    at.unix_timestamp().div_euclid(60)
}

/// The entry of `key`, made with `new` while the map holds fewer than [`MAX_PENDING`]; else `None`, counted in
/// `dropped`.
fn slot<'m, K: std::hash::Hash + Eq, V>(
    map: &'m mut HashMap<K, V>,
    dropped: &mut u64,
    key: K,
    new: impl FnOnce() -> V,
) -> Option<&'m mut V> {
    if map.len() >= MAX_PENDING && !map.contains_key(&key) {
        *dropped = dropped.saturating_add(1);
        return None;
    }
    Some(map.entry(key).or_insert_with(new))
}

impl Pending {
    fn recount(&mut self) {
        self.fine_refusals = self.refusals.values().filter(|r| r.fine).count();
    }
}

impl DayCounts {
    fn add(&mut self, other: &DayCounts) {
        self.validations = self.validations.saturating_add(other.validations);
        self.activations = self.activations.saturating_add(other.activations);
        self.last_validated_at = self.last_validated_at.max(other.last_validated_at);
    }
}

impl Refusals {
    /// Adds `other`'s refusals; the event shows the earlier first refusal.
    fn add(&mut self, other: Refusals) {
        self.count = self.count.saturating_add(other.count);
        self.last_seen = self.last_seen.max(other.last_seen);
        if other.first_seen < self.first_seen {
            self.first_seen = other.first_seen;
            self.first = other.first;
        }
        self.fine |= other.fine;
    }
}

impl UsageCounters {
    /// The pending counts. A panic while they were held cannot leave them half-changed (each change is one
    /// addition), so a poisoned lock is taken over rather than stopping the counting.
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a validation of `license_id` answered `code` at `ctx`'s time; `machine` is the stored activation the
    /// validation found (none when it found none). A refusal is kept for its minute's event.
    pub(super) fn validated(
        &self,
        license_id: Uuid,
        machine: Option<&str>,
        fingerprint: &str,
        code: ValidationCode,
        ctx: &Context,
    ) {
        let at = ctx.at();
        let day = utc_day(at);
        let mut guard = self.pending();
        let pending = &mut *guard;
        let one = DayCounts { validations: 1, activations: 0, last_validated_at: Some(at) };
        if let Some(counts) = slot(&mut pending.days, &mut pending.dropped, (license_id, day), DayCounts::default) {
            counts.add(&one);
        }
        if let Some(fp) = machine {
            let key = (license_id, fp.to_string(), day);
            if let Some((n, last)) = slot(&mut pending.machines, &mut pending.dropped, key, || (0, at)) {
                *n = n.saturating_add(1);
                *last = (*last).max(at);
            }
        }
        if code != ValidationCode::Valid {
            let detail = serde_json::json!({ "code": code.as_str() });
            let event = ctx.event(license_id, EventKind::Validated, Some(fingerprint), detail);
            let key = (Some(license_id), EventKind::Validated, code.as_str().to_string(), minute(at));
            Self::refusal(pending, event, key, false);
        }
    }

    /// Keeps a refusal recorded as `event` for its minute's event, coalesced with the other refusals of the same
    /// license, kind and `what` in that minute. Once [`MAX_FINE_REFUSALS`] keys with a `coarse` form are held (a
    /// flood from many addresses), new ones are coalesced by `coarse` instead, their event marked
    /// `"more_addresses": true`, so such a flood cannot crowd out every other refusal of the minute.
    pub(super) fn refused(&self, mut event: NewEvent, what: String, coarse: Option<String>) {
        let mut guard = self.pending();
        let pending = &mut *guard;
        let key = (event.license_id, event.kind, what, minute(event.at));
        let known = pending.refusals.contains_key(&key);
        match coarse {
            Some(coarse) if !known && pending.fine_refusals >= MAX_FINE_REFUSALS => {
                if let serde_json::Value::Object(detail) = &mut event.detail {
                    detail.insert("more_addresses".into(), true.into());
                }
                let (license_id, kind, _, minute) = key;
                Self::refusal(pending, event, (license_id, kind, format!("more:{coarse}"), minute), false);
            }
            Some(_) => Self::refusal(pending, event, key, true),
            None => Self::refusal(pending, event, key, false),
        }
    }

    fn refusal(pending: &mut Pending, event: NewEvent, key: RefusalMinute, fine: bool) {
        let refusal = Refusals { count: 1, first_seen: event.at, last_seen: event.at, first: event, fine };
        match pending.refusals.get_mut(&key) {
            Some(r) => r.add(refusal),
            None => {
                if slot(&mut pending.refusals, &mut pending.dropped, key, || refusal).is_some() && fine {
                    pending.fine_refusals += 1;
                }
            }
        }
    }

    /// Counts an activation of `license_id` at `at`.
    pub(super) fn activated(&self, license_id: Uuid, at: OffsetDateTime) {
        let mut guard = self.pending();
        let pending = &mut *guard;
        let key = (license_id, utc_day(at));
        if let Some(counts) = slot(&mut pending.days, &mut pending.dropped, key, DayCounts::default) {
            counts.activations = counts.activations.saturating_add(1);
        }
    }

    /// Takes the counts and the refusals `flush` writes at `now`, and how many counts were not kept since the last
    /// take.
    fn take(&self, flush: Flush, now: OffsetDateTime) -> (Taken, u64) {
        let mut pending = self.pending();
        let current = minute(now);
        let refusals = match flush {
            Flush::All => pending.refusals.drain().collect(),
            Flush::Due => {
                let over: Vec<_> = pending.refusals.keys().filter(|(_, _, _, m)| *m < current).cloned().collect();
                over.into_iter().filter_map(|k| pending.refusals.remove_entry(&k)).collect()
            }
        };
        let taken =
            Taken { days: pending.days.drain().collect(), machines: pending.machines.drain().collect(), refusals };
        pending.recount();
        (taken, std::mem::take(&mut pending.dropped))
    }

    /// Puts back what a failed flush took, merged with what was counted meanwhile, within the same bound as new
    /// counts (what does not fit is counted as not kept).
    fn restore(&self, taken: Taken) {
        let mut guard = self.pending();
        let pending = &mut *guard;
        for (key, c) in taken.days {
            if let Some(counts) = slot(&mut pending.days, &mut pending.dropped, key, DayCounts::default) {
                counts.add(&c);
            }
        }
        for (key, (n, last)) in taken.machines {
            if let Some(entry) = slot(&mut pending.machines, &mut pending.dropped, key, || (0, last)) {
                entry.0 = entry.0.saturating_add(n);
                entry.1 = entry.1.max(last);
            }
        }
        for (key, r) in taken.refusals {
            match pending.refusals.get_mut(&key) {
                Some(now) => now.add(r),
                None => {
                    slot(&mut pending.refusals, &mut pending.dropped, key, || r);
                }
            }
        }
        pending.recount();
    }
}

impl Taken {
    fn is_empty(&self) -> bool {
        self.days.is_empty() && self.machines.is_empty() && self.refusals.is_empty()
    }

    /// The store's batch and the refusals' events.
    fn to_writes(&self) -> (UsageBatch, Vec<NewEvent>) {
        let days = self
            .days
            .iter()
            .map(|((license_id, day), c)| DayUsage {
                license_id: *license_id,
                day: *day,
                validations: c.validations,
                activations: c.activations,
                last_validated_at: c.last_validated_at,
            })
            .collect();
        let machines = self
            .machines
            .iter()
            .map(|((license_id, fingerprint, day), (n, last))| MachineUsage {
                license_id: *license_id,
                fingerprint: fingerprint.clone(),
                day: *day,
                validations: *n,
                last_validated_at: *last,
            })
            .collect();
        // By license first: appending an event takes its license's lock (PostgreSQL), so every flush takes them in
        // one order; then by time.
        let mut refusals: Vec<_> = self.refusals.iter().collect();
        refusals.sort_by(|(a, ra), (b, rb)| {
            (a.0, ra.first_seen, a.1.as_str(), &a.2).cmp(&(b.0, rb.first_seen, b.1.as_str(), &b.2))
        });
        let events = refusals
            .into_iter()
            .map(|(_, r)| {
                let mut event = r.first.clone();
                if let serde_json::Value::Object(detail) = &mut event.detail {
                    detail.insert("count".into(), r.count.into());
                    detail.insert("first_seen".into(), r.first_seen.unix_timestamp().into());
                    detail.insert("last_seen".into(), r.last_seen.unix_timestamp().into());
                }
                event.at = r.first_seen;
                event
            })
            .collect();
        (UsageBatch { days, machines }, events)
    }
}

/// A license's usage over a range of days: every day of the range, oldest first, a day without usage as zeros.
#[derive(Clone, Debug, PartialEq)]
pub struct LicenseUsage {
    /// The license (its `validation_count` and `last_validated_at` as of the flush just made).
    pub license: License,
    /// The first day (UTC).
    pub from: Date,
    /// The last day (UTC), included.
    pub to: Date,
    /// One entry per day from `from` to `to`.
    pub days: Vec<DailyUsage>,
}

impl Licensing {
    /// Writes the usage counters held in memory and the refusals whose minute is over (or every refusal, with
    /// [`Flush::All`]) in one unit; how many entries it wrote. A failed write keeps them for the next flush.
    pub async fn flush_usage(&self, flush: Flush) -> Result<usize, ServiceError> {
        let _one = self.usage.flushing.lock().await;
        let (taken, dropped) = self.usage.take(flush, self.now());
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "usage counts were not kept: too many distinct entries pending since the last flush"
            );
        }
        if taken.is_empty() {
            return Ok(0);
        }
        let (batch, events) = taken.to_writes();
        let n = batch.days.len() + batch.machines.len() + events.len();
        let written = self
            .store
            .transact(move |tx| {
                Box::pin(async move {
                    tx.record_usage(&batch).await?;
                    for event in &events {
                        tx.append_event(event).await?;
                    }
                    Ok::<_, ServiceError>(())
                })
            })
            .await;
        match written {
            Ok(()) => Ok(n),
            Err(e) => {
                self.usage.restore(taken);
                Err(e)
            }
        }
    }

    /// The license's daily usage from `from` to `to` (UTC days, both included; by default the last 30 days up to
    /// today by the service clock, from 0001-01-01 at the earliest), at most 366 days. Counts still in memory are
    /// written first, in a task of their own, so a caller that goes away mid-flush loses none of them.
    pub async fn license_usage(
        self: &Arc<Self>,
        which: &LicenseRef,
        from: Option<Date>,
        to: Option<Date>,
    ) -> Result<LicenseUsage, ServiceError> {
        let to = to.unwrap_or_else(|| utc_day(self.now()));
        let from = match from {
            Some(from) => from,
            None => to.checked_sub(Duration::days(DEFAULT_USAGE_DAYS - 1)).unwrap_or(Date::MIN).max(first_day()),
        };
        if from > to {
            return Err(invalid("from", "must not be after `to`"));
        }
        if (to - from).whole_days() >= MAX_USAGE_DAYS {
            return Err(invalid("from", format!("the range is at most {MAX_USAGE_DAYS} days")));
        }
        let found = self.license(which).await?;
        let this = Arc::clone(self);
        let flushed = tokio::spawn(async move { this.flush_usage(Flush::Due).await }).await;
        match flushed {
            Ok(Ok(_)) => {}
            // The answer is what is stored: counts that could not be written stay for the next flush.
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot write the usage counters before reading them"),
            Err(e) => tracing::warn!(error = %e, "the usage flush before a read failed"),
        }
        let license = self.license(&LicenseRef::Id(found.id)).await?;
        let stored = self.store.license_usage(license.id, from, to).await?;
        let mut stored = stored.into_iter().peekable();
        let mut days = Vec::new();
        let mut day = Some(from);
        while let Some(d) = day.filter(|d| *d <= to) {
            match stored.next_if(|u| u.day == d) {
                Some(u) => days.push(u),
                None => days.push(DailyUsage { day: d, validations: 0, activations: 0, machines: 0 }),
            }
            day = d.next_day();
        }
        Ok(LicenseUsage { license, from, to, days })
    }

    /// Starts writing the usage counters every [`USAGE_FLUSH_INTERVAL`] in a background task, until the service is
    /// dropped. The serve command writes the rest when it stops ([`Flush::All`]).
    pub fn spawn_usage_flush(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(USAGE_FLUSH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(licensing) = weak.upgrade() else { break };
                if let Err(e) = licensing.flush_usage(Flush::Due).await {
                    tracing::warn!(error = %e, "cannot write the usage counters; retrying in a second");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::Actor;

    fn ctx(at: OffsetDateTime) -> Context {
        Context { now: at, client_ip: Some("192.0.2.7".parse().unwrap()), actor: Actor::App }
    }

    #[test]
    fn counts_are_kept_per_day_machine_and_refusal_minute_and_given_back_after_a_failed_write() {
        let usage = UsageCounters::default();
        let (a, t) = (Uuid::now_v7(), OffsetDateTime::UNIX_EPOCH + Duration::days(10) - Duration::seconds(30));
        usage.validated(a, Some("m1"), "m1", ValidationCode::Valid, &ctx(t));
        usage.validated(a, Some("m1"), "m1", ValidationCode::Valid, &ctx(t + Duration::seconds(40)));
        usage.validated(a, None, "x", ValidationCode::NotActivated, &ctx(t + Duration::seconds(1)));
        usage.validated(a, None, "y", ValidationCode::NotActivated, &ctx(t + Duration::seconds(2)));
        usage.activated(a, t);
        // Minute of t is not over at t + 20 s: its refusals stay for a later flush.
        let (taken, dropped) = usage.take(Flush::Due, t + Duration::seconds(20));
        assert_eq!(dropped, 0);
        assert_eq!(taken.days.len(), 2, "two UTC days");
        assert_eq!(taken.machines.len(), 2, "m1 on each day");
        assert!(taken.refusals.is_empty());
        let (batch, events) = taken.to_writes();
        let first = batch.days.iter().find(|d| d.day == utc_day(t)).unwrap();
        assert_eq!((first.validations, first.activations), (3, 1));
        assert!(events.is_empty());
        usage.restore(taken);
        let (taken, _) = usage.take(Flush::Due, t + Duration::seconds(90));
        assert_eq!(taken.refusals.len(), 1, "one per license, code and minute");
        let (_, events) = taken.to_writes();
        let detail = &events[0].detail;
        assert_eq!(detail["code"], "NOT_ACTIVATED");
        assert_eq!(detail["count"], 2);
        assert_eq!(events[0].fingerprint.as_deref(), Some("x"), "the first refusal's");
        assert_eq!(events[0].at, t + Duration::seconds(1));
        let (again, _) = usage.take(Flush::All, t + Duration::seconds(90));
        assert!(again.is_empty(), "taken once");

        // A failed flush gives everything back, merged with what came meanwhile; a refusal keeps the earliest
        // first refusal's fingerprint.
        usage.restore(taken);
        usage.validated(a, None, "z", ValidationCode::NotActivated, &ctx(t));
        usage.validated(a, Some("m1"), "m1", ValidationCode::Valid, &ctx(t));
        let (taken, _) = usage.take(Flush::All, t + Duration::seconds(90));
        let (batch, events) = taken.to_writes();
        let first = batch.days.iter().find(|d| d.day == utc_day(t)).unwrap();
        assert_eq!((first.validations, first.activations), (5, 1));
        let m1 = batch.machines.iter().find(|m| m.day == utc_day(t)).unwrap();
        assert_eq!(m1.validations, 2);
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].detail["count"].clone(), events[0].fingerprint.as_deref()), (3.into(), Some("z")));
        assert_eq!(events[0].detail["first_seen"], t.unix_timestamp());
    }

    #[test]
    fn refusals_from_many_addresses_are_coalesced_by_rule_past_the_bound() {
        let usage = UsageCounters::default();
        let t = OffsetDateTime::UNIX_EPOCH + Duration::days(3);
        let refuse = |ip: String| {
            let detail = serde_json::json!({ "ip": ip, "operation": "validate", "rule": null });
            let event = ctx(t).event(None, EventKind::IpBlocked, None, detail.clone());
            let mut coarse = detail;
            coarse.as_object_mut().unwrap().remove("ip");
            usage.refused(event, detail_key(&ip), Some(coarse.to_string()));
        };
        for i in 0..MAX_FINE_REFUSALS + 5 {
            refuse(format!("2001:db8::{i:x}"));
        }
        refuse("2001:db8::0".into());
        let (taken, dropped) = usage.take(Flush::All, t);
        assert_eq!((taken.refusals.len(), dropped), (MAX_FINE_REFUSALS + 1, 0));
        let (_, events) = taken.to_writes();
        let more: Vec<_> = events.iter().filter(|e| e.detail["more_addresses"] == true).collect();
        assert_eq!(more.len(), 1);
        assert_eq!(more[0].detail["count"], 5, "the addresses past the bound, in one event");
        let again = events.iter().find(|e| e.detail["ip"] == "2001:db8::0" && e.detail.get("more_addresses").is_none());
        assert_eq!(again.unwrap().detail["count"], 2, "an address already held keeps its own event");
        assert_eq!(usage.pending().fine_refusals, 0, "recounted after the take");
    }

    fn detail_key(ip: &str) -> String {
        format!("validate {ip}")
    }

    #[test]
    fn pending_counts_stay_bounded_also_through_failed_flushes() {
        let usage = UsageCounters::default();
        let t = OffsetDateTime::UNIX_EPOCH + Duration::days(3);
        for _ in 0..MAX_PENDING + 5 {
            usage.activated(Uuid::now_v7(), t);
        }
        let (taken, dropped) = usage.take(Flush::Due, t);
        assert_eq!((taken.days.len(), dropped), (MAX_PENDING, 5));
        for _ in 0..10 {
            usage.activated(Uuid::now_v7(), t);
        }
        usage.restore(taken);
        let (taken, dropped) = usage.take(Flush::Due, t);
        assert_eq!((taken.days.len(), dropped), (MAX_PENDING, 10), "what came meanwhile, then what fits");
    }
}
