//! Client network rules and the addresses each license is used from (docs/network.md).
//!
//! Rules are stored (`POST /v1/ip-rules`) or configured (`ip_allow`, `ip_deny`), and judged in memory: each instance
//! holds every rule, reloaded when the store's rule version moves (after its own changes at once, after another
//! instance's within a second, by [`Licensing::spawn_network_tasks`]). A refused request is answered
//! `IP_BLOCKED` (validate) or 403 `ip_blocked`, and recorded as an `ip.blocked` event (one per license, address,
//! operation and rule a minute, with its count: the usage counters write it, `super::usage`).
//!
//! Layout: `rules` (the rule set and its one decision), `history` (the per-license address counters).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use uuid::Uuid;

use super::error::invalid;
use super::{Context, LicenseRef, Licensing, ServiceError};
use crate::net::Cidr;
use crate::store::{
    EventKind, IpAction, IpRule, IpScope, IpUsage, License, PolicyLock, Store, StoreError, StoreExt as _,
};

mod history;
mod rules;

use rules::RuleSet;
pub use rules::{Blocked, IpRuleSettings, RuleRef};

/// How often a running service looks for rule changes of other instances, and writes the address counters.
pub const NETWORK_TASK_INTERVAL: Duration = Duration::from_secs(1);

/// Longest note of a rule.
const MAX_NOTE_LEN: usize = 200;

/// A rule to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewIpRule {
    /// The network, as given (`10.0.0.0/8`, `2001:db8::/32`, or an address).
    pub cidr: String,
    /// `allow` or `deny`, as given.
    pub action: String,
    /// For one license (by id or key); `None` with no policy either: global.
    pub license: Option<String>,
    /// For the licenses of this policy.
    pub policy: Option<String>,
    /// Why the rule exists.
    pub note: Option<String>,
}

/// The network state of one instance.
#[derive(Debug)]
pub(super) struct Network {
    settings: IpRuleSettings,
    /// The rules in use and the store's rule version they were read at; `None` until the first read.
    current: RwLock<Option<(i64, Arc<RuleSet>)>>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    history: Arc<history::IpHistory>,
}

impl Network {
    pub(super) fn new(settings: IpRuleSettings) -> Self {
        Network {
            settings,
            current: RwLock::new(None),
            reloading: tokio::sync::Mutex::new(()),
            history: Arc::new(history::IpHistory::default()),
        }
    }

    /// The rules in use, read from the store on first use.
    async fn rules(&self, store: &dyn Store) -> Result<Arc<RuleSet>, StoreError> {
        if let Some((_, set)) = self.current.read().ok().and_then(|c| c.clone()) {
            return Ok(set);
        }
        self.reload(store).await?;
        self.current
            .read()
            .ok()
            .and_then(|c| c.as_ref().map(|(_, set)| Arc::clone(set)))
            .ok_or_else(|| StoreError::Corrupt("network rules could not be loaded".into()))
    }

    /// Reads the rules again if the store's version moved since they were read; whether it did.
    async fn reload(&self, store: &dyn Store) -> Result<bool, StoreError> {
        let _one = self.reloading.lock().await;
        let version = store.ip_rules_version().await?;
        let known = self.current.read().ok().and_then(|c| c.as_ref().map(|(v, _)| *v));
        if known == Some(version) {
            return Ok(false);
        }
        // Read after the version: a change committed in between is read now and seen again (as a newer version)
        // at the next reload; none is missed.
        let stored = store.ip_rules().await?;
        let set = Arc::new(RuleSet::build(&self.settings, &stored));
        if let Ok(mut current) = self.current.write() {
            *current = Some((version, set));
        }
        Ok(true)
    }
}

impl Licensing {
    /// Creates a network rule, with its `ip_rule.created` event (on the license's log too, for a license's rule).
    /// The rule applies on this instance at once, on others within [`NETWORK_TASK_INTERVAL`].
    pub async fn create_ip_rule(&self, new: NewIpRule, ctx: &Context) -> Result<IpRule, ServiceError> {
        let cidr = new.cidr.parse::<Cidr>().map_err(|m| invalid("cidr", m))?.network();
        let action = new.action.parse::<IpAction>().map_err(|m| invalid("action", m))?;
        let note = new.note.unwrap_or_default();
        if note.len() > MAX_NOTE_LEN || note.chars().any(char::is_control) {
            return Err(invalid("note", "must be at most 200 bytes without control characters"));
        }
        let which = match (&new.license, &new.policy) {
            (Some(_), Some(_)) => return Err(invalid("license", "give a license or a policy, not both")),
            (Some(l), None) => Some(LicenseRef::parse(l).map_err(|_| {
                invalid("license", "expected a license id (UUID) or a license key (XXXXX-XXXXX-XXXXX-XXXXX)")
            })?),
            (None, _) => None,
        };
        let policy = new.policy.clone();
        let (ctx, at) = (ctx.clone(), ctx.at());
        let rule = self
            .store
            .transact(move |tx| {
                Box::pin(async move {
                    let scope = match (which, policy) {
                        (Some(which), _) => {
                            let license = tx.license(which.lookup()).await?.ok_or(ServiceError::LicenseNotFound)?;
                            IpScope::License(license.id)
                        }
                        (None, Some(name)) => {
                            let found = tx.policy(&name, PolicyLock::KeepAlive).await?;
                            IpScope::Policy(found.ok_or(ServiceError::PolicyNotFound)?.name)
                        }
                        (None, None) => IpScope::Global,
                    };
                    let rule = IpRule { id: Uuid::now_v7(), cidr, action, scope, note, created_at: at };
                    tx.insert_ip_rule(&rule).await?;
                    let event = ctx.event(rule_license(&rule), EventKind::IpRuleCreated, None, rule_data(&rule));
                    tx.append_event(&event).await?;
                    Ok::<_, ServiceError>(rule)
                })
            })
            .await?;
        self.reload_ip_rules().await;
        Ok(rule)
    }

    /// Deletes a network rule, with its `ip_rule.deleted` event; the rule as it was.
    pub async fn delete_ip_rule(&self, id: Uuid, ctx: &Context) -> Result<IpRule, ServiceError> {
        let ctx = ctx.clone();
        let rule = self
            .store
            .transact(move |tx| {
                Box::pin(async move {
                    let rule = tx.delete_ip_rule(id).await?.ok_or(ServiceError::IpRuleNotFound)?;
                    let event = ctx.event(rule_license(&rule), EventKind::IpRuleDeleted, None, rule_data(&rule));
                    tx.append_event(&event).await?;
                    Ok::<_, ServiceError>(rule)
                })
            })
            .await?;
        self.reload_ip_rules().await;
        Ok(rule)
    }

    /// Reloads the rules after a change this instance committed. A failure is logged, not returned: the change is
    /// stored, and the background task reloads within a second.
    pub(super) async fn reload_ip_rules(&self) {
        if let Err(e) = self.network.reload(&*self.store).await {
            tracing::warn!(error = %e, "cannot reload the network rules after a change; retrying within a second");
        }
    }

    /// The stored rules, oldest first: every one, or those of one license or one policy.
    pub async fn ip_rules(&self, scope: Option<&IpScope>) -> Result<Vec<IpRule>, ServiceError> {
        let rules = self.store.ip_rules().await?;
        Ok(match scope {
            None => rules,
            Some(scope) => rules.into_iter().filter(|r| &r.scope == scope).collect(),
        })
    }

    /// The global rules of the configuration (not deletable over the API).
    pub fn configured_ip_rules(&self) -> &IpRuleSettings {
        &self.network.settings
    }

    /// The license and the addresses it was used from, most recently seen first. Counts still in memory are
    /// written first, so this instance's requests up to now are in the answer.
    pub async fn license_ips(&self, which: &LicenseRef) -> Result<(License, Vec<IpUsage>), ServiceError> {
        let license = self.license(which).await?;
        self.flush_ip_history().await?;
        let ips = self.store.license_ips(license.id).await?;
        Ok((license, ips))
    }

    /// Writes the address counters held in memory, in one unit; how many (license, address) rows it wrote. A
    /// failed write keeps them for the next flush.
    pub async fn flush_ip_history(&self) -> Result<usize, ServiceError> {
        let usage = self.network.history.take();
        if usage.is_empty() {
            return Ok(0);
        }
        let n = usage.len();
        let batch = usage.clone();
        let written = self.store.transact(move |tx| Box::pin(async move { tx.record_ip_usage(&batch).await })).await;
        match written {
            Ok(()) => Ok(n),
            Err(e) => {
                self.network.history.restore(usage);
                Err(e.into())
            }
        }
    }

    /// Starts the background work of the network rules: every [`NETWORK_TASK_INTERVAL`], reload the rules if another
    /// instance changed them, and write the address counters. Stops when the service is dropped.
    pub fn spawn_network_tasks(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(NETWORK_TASK_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(licensing) = weak.upgrade() else { break };
                if let Err(e) = licensing.network.reload(&*licensing.store).await {
                    tracing::warn!(error = %e, "cannot reload the network rules; the rules read before stay in use");
                }
                if let Err(e) = licensing.flush_ip_history().await {
                    tracing::warn!(error = %e, "cannot write the address counters; retrying in a second");
                }
            }
        });
    }

    /// Judges a request from `ctx`'s address by the global rules, before any license is known (so a refused network
    /// learns nothing, not even whether a key exists), and returns what judges the operation's license by every
    /// level inside its unit ([`Screen::admit`]). A global refusal is recorded (`ip.blocked`) and returned as
    /// [`ServiceError::IpBlocked`].
    pub(super) async fn screen(&self, ctx: &Context, operation: &str) -> Result<Screen, ServiceError> {
        let rules = self.network.rules(&*self.store).await?;
        if let Some(ip) = ctx.client_ip {
            if let Err(blocked) = rules.check_global(ip) {
                return Err(self.record_blocked(blocked, None, None, operation, ctx));
            }
        }
        Ok(Screen { rules, history: Arc::clone(&self.network.history) })
    }

    /// What follows an operation that [`Screen::admit`] may have refused: a refusal (the unit rolled back) is counted
    /// as blocked and recorded as an `ip.blocked` event. The result is returned as it was, the refusal's message
    /// naming no rule (the event does).
    pub(super) async fn after_screening<T>(
        &self,
        result: Result<T, ServiceError>,
        fingerprint: Option<&str>,
        operation: &str,
        ctx: &Context,
    ) -> Result<T, ServiceError> {
        match result {
            Err(ServiceError::IpBlocked { blocked, license_id }) => {
                Err(self.record_blocked(*blocked, license_id, fingerprint, operation, ctx))
            }
            other => other,
        }
    }

    /// Records a refusal: the license's blocked count, and its `ip.blocked` event, coalesced with the refusals of
    /// the same license, address, operation and rule in the same minute (docs/usage.md, "Refused validations"), so
    /// a flood from a refused network writes a bounded number of rows. Returns the error to answer.
    fn record_blocked(
        &self,
        blocked: Blocked,
        license_id: Option<Uuid>,
        fingerprint: Option<&str>,
        operation: &str,
        ctx: &Context,
    ) -> ServiceError {
        if let Some(id) = license_id {
            self.network.history.note(id, blocked.ip(), ctx.at(), true);
        }
        let event = ctx.event(license_id, EventKind::IpBlocked, fingerprint, blocked.detail(operation));
        // The detail names the address, the operation and the rule: refusals alike in all of them are one event;
        // past a bound of addresses, refusals alike but for the address are.
        let what = event.detail.to_string();
        let mut coarse = event.detail.clone();
        if let serde_json::Value::Object(detail) = &mut coarse {
            detail.remove("ip");
        }
        self.usage.refused(event, what, Some(coarse.to_string()));
        ServiceError::IpBlocked { blocked: Box::new(blocked), license_id }
    }
}

/// The rules in use and the address counters, for a unit of work to judge and count its license's request by.
pub(super) struct Screen {
    rules: Arc<RuleSet>,
    history: Arc<history::IpHistory>,
}

impl Screen {
    /// Judges `license`'s request from `ctx`'s address by every level of the rules, inside the operation's unit (a
    /// refusal rolls it back; [`Licensing::after_screening`] records it). An admitted request is counted for its
    /// address, whatever the operation answers next (a full license, a suspended one...).
    pub(super) fn admit(&self, license: &License, ctx: &Context) -> Result<(), ServiceError> {
        let Some(ip) = ctx.client_ip else { return Ok(()) };
        match self.rules.check(ip, license) {
            Ok(()) => {
                self.history.note(license.id, ip, ctx.at(), false);
                Ok(())
            }
            Err(blocked) => Err(ServiceError::IpBlocked { blocked: Box::new(blocked), license_id: Some(license.id) }),
        }
    }
}

/// The license a rule's events belong to.
fn rule_license(rule: &IpRule) -> Option<Uuid> {
    match rule.scope {
        IpScope::License(id) => Some(id),
        _ => None,
    }
}

/// A rule as events show it: `{"rule": <the API's view>}`.
pub(super) fn rule_data(rule: &IpRule) -> serde_json::Value {
    serde_json::json!({ "rule": crate::views::IpRuleView::from(rule) })
}
