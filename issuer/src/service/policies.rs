//! Policies: create, read, list, update and delete them, and the terms a license follows (its policy's rules, or the
//! service's defaults for a license without one). Semantics in docs/policies.md.
//!
//! A license copies its policy's grants when it is created (`licenses`); the rules are read here, inside each unit of
//! work that needs them, so a change of a policy reaches its licenses at their next request.

use time::{Duration, OffsetDateTime};
use verifier::format::limits::MAX_TIME;

use super::checks::check_license;
use super::error::invalid;
use super::{Context, Licensing, ServiceError, TokenPolicy};
use crate::store::{
    Culled, EventKind, License, LicenseStatus, Overage, Policy, PolicyDeleted, PolicyLock, PolicyUpdate, StoreError,
    StoreExt as _, Tx,
};

/// Longest policy name.
pub const MAX_POLICY_NAME_LEN: usize = 64;

/// Longest duration of a new license: 100 years.
const MAX_LICENSE_DURATION_SECS: u64 = 100 * 365 * 86_400;
/// Longest refresh interval, offline grace or lease: 3650 days, as the service's own settings.
const MAX_TOKEN_PERIOD_SECS: u64 = 3650 * 86_400;
/// Shortest lease: a machine must be able to check in before it ends.
const MIN_LEASE_SECS: u64 = 60;
/// Window of a deactivation limit: 1 to 365 days.
const DEACTIVATION_PERIOD_SECS: std::ops::RangeInclusive<u64> = 86_400..=365 * 86_400;

/// The rules a license follows now: its policy's, or the defaults for a license without a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Terms {
    /// How its online tokens are timed.
    pub timing: TokenPolicy,
    /// How long a check-in holds its lease; `None` is no lease.
    pub lease: Option<Duration>,
    /// Concurrent-use seats.
    pub floating: bool,
    /// Activations tolerated above `max_machines`.
    pub overage: Overage,
    /// Whether offline tokens may be issued.
    pub offline_allowed: bool,
    /// At most this many counted deactivations within the window (seconds).
    pub deactivation_limit: Option<(u32, u64)>,
    /// Whether its deactivations are recorded for a limit (a license with a policy, not floating).
    pub counts_deactivations: bool,
}

impl Terms {
    /// The terms of a license of `policy` (`None`: a license without a policy), `defaults` timing its tokens where
    /// the policy does not.
    pub fn of(policy: Option<&Policy>, defaults: TokenPolicy) -> Terms {
        let Some(p) = policy else {
            return Terms {
                timing: defaults,
                lease: None,
                floating: false,
                overage: Overage::None,
                offline_allowed: true,
                deactivation_limit: None,
                counts_deactivations: false,
            };
        };
        // Within what `check_policy` lets in; a row another writer put out of range must not make time arithmetic
        // overflow (a panic) on the request path.
        let secs = |s: u64| Duration::seconds(i64::try_from(s.min(MAX_TOKEN_PERIOD_SECS)).unwrap_or(0));
        Terms {
            timing: TokenPolicy {
                refresh_interval: p.refresh_interval_secs.map_or(defaults.refresh_interval, secs),
                offline_grace: p.offline_grace_secs.map_or(defaults.offline_grace, secs),
            },
            lease: p.lease_secs.map(secs),
            floating: p.floating,
            overage: p.overage,
            offline_allowed: p.offline_allowed,
            deactivation_limit: p.deactivation_limit.filter(|_| !p.floating).map(|n| {
                (
                    n,
                    p.deactivation_period_secs
                        .clamp(*DEACTIVATION_PERIOD_SECS.start(), *DEACTIVATION_PERIOD_SECS.end()),
                )
            }),
            counts_deactivations: !p.floating,
        }
    }

    /// When a check-in at `at` makes the lease end.
    pub fn lease_until(&self, at: OffsetDateTime) -> Option<OffsetDateTime> {
        self.lease.map(|lease| at + lease)
    }

    /// The most machines the license allows, overage included.
    pub fn limit(&self, max_machines: u32) -> u32 {
        max_machines.saturating_add(self.overage.extra(max_machines))
    }

    /// Whether `machines_used` machines on a license of `max_machines` slots are in overage: above the slots, within
    /// the overage (above it is too many, not overage).
    pub fn in_overage(&self, max_machines: u32, machines_used: u32) -> bool {
        machines_used > max_machines && machines_used <= self.limit(max_machines)
    }
}

/// The terms of `license` as a unit of work reads them.
pub(super) async fn terms_in(tx: &mut dyn Tx, license: &License, defaults: TokenPolicy) -> Result<Terms, ServiceError> {
    let Some(name) = &license.policy else { return Ok(Terms::of(None, defaults)) };
    // A used policy is never deleted (the foreign key refuses it), so this finds it.
    let policy = tx
        .policy(name, PolicyLock::None)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("license {} names the missing policy `{name}`", license.id)))?;
    Ok(Terms::of(Some(&policy), defaults))
}

/// What culled a machine, as its `machine.culled` event says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CulledBy {
    Activation,
    Refresh,
    Deactivation,
    Sweep,
}

impl CulledBy {
    fn as_str(self) -> &'static str {
        match self {
            CulledBy::Activation => "activation",
            CulledBy::Refresh => "refresh",
            CulledBy::Deactivation => "deactivation",
            CulledBy::Sweep => "sweep",
        }
    }
}

/// Appends the `machine.culled` event of each culled machine in the unit.
pub(super) async fn record_culled(
    tx: &mut dyn Tx,
    culled: &[Culled],
    by: CulledBy,
    ctx: &Context,
) -> Result<(), ServiceError> {
    for c in culled {
        let detail = serde_json::json!({ "lease_expired_at": c.lease_expired_at.unix_timestamp(), "by": by.as_str() });
        tx.append_event(&ctx.event(c.license_id, EventKind::MachineCulled, Some(&c.fingerprint), detail)).await?;
    }
    Ok(())
}

/// Culls the license's machines whose lease ended, with their events, when its terms have a lease.
pub(super) async fn cull_license(
    tx: &mut dyn Tx,
    license: &License,
    terms: &Terms,
    by: CulledBy,
    ctx: &Context,
) -> Result<Vec<Culled>, ServiceError> {
    if terms.lease.is_none() {
        return Ok(Vec::new());
    }
    let culled = tx.cull_machines(license.id, ctx.at()).await?;
    record_culled(tx, &culled, by, ctx).await?;
    Ok(culled)
}

/// Refuses a deactivation beyond the license's limit, or records it when its terms count deactivations.
pub(super) async fn count_deactivation(
    tx: &mut dyn Tx,
    license: &License,
    terms: &Terms,
    at: OffsetDateTime,
) -> Result<(), ServiceError> {
    if let Some((limit, period_secs)) = terms.deactivation_limit {
        let period = Duration::seconds(i64::try_from(period_secs).unwrap_or(i64::MAX));
        let done = tx.deactivations_since(license.id, at - period).await?;
        if done.len() >= limit as usize {
            // The next one is allowed once all but `limit - 1` have left the window (more than `limit` are there
            // when the limit was lowered since).
            let retry_at = done.get(done.len() - limit as usize).map_or(at, |t| *t + period);
            return Err(ServiceError::DeactivationLimit { limit, period_secs, retry_at });
        }
    }
    if terms.counts_deactivations {
        tx.record_deactivation(license.id, at).await?;
    }
    Ok(())
}

impl Licensing {
    /// Stores a new policy (its times set to now). A taken name is [`ServiceError::PolicyExists`].
    pub async fn create_policy(&self, mut policy: Policy, ctx: &Context) -> Result<Policy, ServiceError> {
        policy.created_at = ctx.at();
        policy.updated_at = ctx.at();
        check_policy(&policy)?;
        let stored = policy.clone();
        let event = ctx.event(None, EventKind::PolicyCreated, None, policy_data(&policy));
        self.store
            .transact(move |tx| {
                Box::pin(async move {
                    tx.insert_policy(&stored).await.map_err(|e| match e {
                        StoreError::Duplicate => ServiceError::PolicyExists,
                        other => ServiceError::from(other),
                    })?;
                    Ok::<_, ServiceError>(tx.append_event(&event).await?)
                })
            })
            .await?;
        Ok(policy)
    }

    /// The policy with this name.
    pub async fn policy(&self, name: &str) -> Result<Policy, ServiceError> {
        known_name(name)?;
        self.store.policy(name).await?.ok_or(ServiceError::PolicyNotFound)
    }

    /// Every policy, by name.
    pub async fn policies(&self) -> Result<Vec<Policy>, ServiceError> {
        Ok(self.store.list_policies().await?)
    }

    /// Changes a policy's terms, merged into the policy as it is under the unit's lock and checked as a whole.
    pub async fn update_policy(&self, name: &str, update: PolicyUpdate, ctx: &Context) -> Result<Policy, ServiceError> {
        known_name(name)?;
        let (name, at, ctx) = (name.to_string(), ctx.at(), ctx.clone());
        self.store
            .transact(move |tx| {
                Box::pin(async move {
                    let current = tx.policy(&name, PolicyLock::Update).await?.ok_or(ServiceError::PolicyNotFound)?;
                    if update.is_empty() {
                        return Ok(current);
                    }
                    let mut changed = update.apply(current);
                    changed.updated_at = at;
                    check_policy(&changed)?;
                    if !tx.update_policy(&changed).await? {
                        return Err(ServiceError::PolicyNotFound);
                    }
                    tx.append_event(&ctx.event(None, EventKind::PolicyUpdated, None, policy_data(&changed))).await?;
                    Ok(changed)
                })
            })
            .await
    }

    /// Deletes a policy no license uses; [`ServiceError::PolicyInUse`] otherwise (licenses are never deleted, so a
    /// policy that was ever used stays).
    pub async fn delete_policy(&self, name: &str, ctx: &Context) -> Result<(), ServiceError> {
        known_name(name)?;
        let (name, ctx) = (name.to_string(), ctx.clone());
        self.store
            .transact(move |tx| {
                Box::pin(async move {
                    let found = tx.policy(&name, PolicyLock::Update).await?;
                    // Its rules go first, each with its event (the database would cascade them silently); a policy
                    // in use rolls this back with everything else.
                    for rule in tx.delete_policy_ip_rules(&name).await? {
                        let data = super::network::rule_data(&rule);
                        tx.append_event(&ctx.event(None, EventKind::IpRuleDeleted, None, data)).await?;
                    }
                    match tx.delete_policy(&name).await? {
                        PolicyDeleted::Deleted => {
                            let data = found
                                .as_ref()
                                .map_or_else(|| serde_json::json!({ "policy": { "name": name } }), policy_data);
                            tx.append_event(&ctx.event(None, EventKind::PolicyDeleted, None, data)).await?;
                            Ok(())
                        }
                        PolicyDeleted::NotFound => Err(ServiceError::PolicyNotFound),
                        PolicyDeleted::InUse(licenses) => Err(ServiceError::PolicyInUse { licenses }),
                    }
                })
            })
            .await?;
        self.reload_ip_rules().await;
        Ok(())
    }

    /// The sweep: culls every machine whose lease ended by the service clock's now, in units of at most 500, each with
    /// its `machine.culled` event; how many it culled. It also prunes deactivation records no window reaches any more
    /// (older than 365 days), at most 1000 per sweep. Safe on any number of instances at once.
    pub async fn cull_expired_leases(&self) -> Result<usize, ServiceError> {
        const BATCH: u32 = 500;
        let before = self.context(None).at() - Duration::seconds(*DEACTIVATION_PERIOD_SECS.end() as i64);
        self.store
            .transact::<_, ServiceError, _>(move |tx| {
                Box::pin(async move { Ok(tx.prune_deactivations(before, 1000).await?) })
            })
            .await?;
        let mut total = 0;
        loop {
            let ctx = self.system_context();
            let culled = self
                .store
                .transact::<_, ServiceError, _>(move |tx| {
                    Box::pin(async move {
                        let culled = tx.cull_expired_leases(ctx.at(), BATCH).await?;
                        record_culled(tx, &culled, CulledBy::Sweep, &ctx).await?;
                        Ok(culled.len())
                    })
                })
                .await?;
            total += culled;
            if culled < BATCH as usize {
                return Ok(total);
            }
        }
    }
}

/// The `data` of policy events.
fn policy_data(policy: &Policy) -> serde_json::Value {
    serde_json::json!({ "policy": crate::views::PolicyView::from(policy.clone()) })
}

/// Whether `name` is a policy name: `[a-z0-9][a-z0-9-]*`, at most [`MAX_POLICY_NAME_LEN`] characters.
pub fn is_policy_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_POLICY_NAME_LEN
        && bytes[0] != b'-'
        && bytes.iter().all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A name that is not a policy name names no policy: refused before the store, which (PostgreSQL) would refuse some
/// such texts (NUL) with an error of its own.
pub(super) fn known_name(name: &str) -> Result<(), ServiceError> {
    if is_policy_name(name) {
        Ok(())
    } else {
        Err(ServiceError::PolicyNotFound)
    }
}

/// Checks a policy as a whole: its name, and terms every license of it can be signed with.
fn check_policy(p: &Policy) -> Result<(), ServiceError> {
    if !is_policy_name(&p.name) {
        return Err(invalid(
            "name",
            "must be 1-64 characters of a-z, 0-9 and '-', starting with a letter or digit (e.g. pro-annual)",
        ));
    }
    if p.max_machines == 0 {
        return Err(invalid("max_machines", "must be at least 1"));
    }
    let within = |field: &'static str, v: Option<u64>, range: std::ops::RangeInclusive<u64>, words: &str| match v {
        Some(v) if !range.contains(&v) => Err(invalid(field, format!("must be {words}"))),
        _ => Ok(()),
    };
    within("duration", p.duration_secs, 1..=MAX_LICENSE_DURATION_SECS, "between 1s and 36500d")?;
    within("refresh_interval", p.refresh_interval_secs, 1..=MAX_TOKEN_PERIOD_SECS, "between 1s and 3650d")?;
    within("offline_grace", p.offline_grace_secs, 0..=MAX_TOKEN_PERIOD_SECS, "between 0s and 3650d")?;
    within("lease", p.lease_secs, MIN_LEASE_SECS..=MAX_TOKEN_PERIOD_SECS, "between 1m and 3650d")?;
    within("deactivation_period", Some(p.deactivation_period_secs), DEACTIVATION_PERIOD_SECS, "between 1d and 365d")?;
    if p.floating && p.lease_secs.is_none() {
        return Err(invalid("floating", "a floating policy needs a lease (seats return when a lease ends)"));
    }
    if p.deactivation_limit == Some(0) {
        return Err(invalid("deactivation_limit", "must be at least 1 (or null for no limit)"));
    }
    // A license of this policy must fit the token format (product, entitlements, slots), as any license must.
    let probe = License {
        id: uuid::Uuid::nil(),
        key: "AAAAA-AAAAA-AAAAA-AAAAA".into(),
        email: "policy@example.invalid".into(),
        product: p.product.clone(),
        max_machines: p.max_machines,
        expires_at: OffsetDateTime::from_unix_timestamp(i64::try_from(MAX_TIME).unwrap_or(i64::MAX)).ok(),
        entitlements: p.entitlements.clone(),
        metadata: serde_json::Map::new(),
        status: LicenseStatus::Active,
        policy: Some(p.name.clone()),
        kind: p.kind,
        created_at: p.created_at,
        updated_at: p.updated_at,
        validation_count: 0,
        last_validated_at: None,
    };
    check_license(&probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_names_are_slugs() {
        for good in ["pro", "pro-annual", "a", "0day", &"a".repeat(64)] {
            assert!(is_policy_name(good), "{good}");
        }
        for bad in ["", "-pro", "Pro", "pro_annual", "pro annual", "pró", &"a".repeat(65)] {
            assert!(!is_policy_name(bad), "{bad}");
        }
    }

    #[test]
    fn terms_take_the_policy_rules_and_the_defaults_elsewhere() {
        let defaults = TokenPolicy { refresh_interval: Duration::hours(24), offline_grace: Duration::days(7) };
        let none = Terms::of(None, defaults);
        assert_eq!((none.timing, none.lease, none.offline_allowed, none.limit(3)), (defaults, None, true, 3));
        let mut p = Policy::new("lab", "acme-cad", 4);
        p.lease_secs = Some(600);
        p.floating = true;
        p.overage = Overage::Factor(125);
        p.deactivation_limit = Some(2);
        p.refresh_interval_secs = Some(60);
        let t = Terms::of(Some(&p), defaults);
        assert_eq!(t.timing.refresh_interval, Duration::minutes(1));
        assert_eq!(t.timing.offline_grace, Duration::days(7));
        assert_eq!(t.limit(4), 5);
        assert_eq!(t.deactivation_limit, None, "floating check-ins are not limited");
        assert!(!t.counts_deactivations);
        let at = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(t.lease_until(at), Some(at + Duration::minutes(10)));
    }
}
