//! The JSON shapes of stored records, shared by the admin API's answers, the CLI's `--json` output and the `data` of
//! events (the audit log and webhook payloads, docs/webhooks.md): one shape per record, so a license in a webhook is
//! the license `GET /v1/licenses/{id}` shows.

use serde::Serialize;
use time::OffsetDateTime;

use crate::config::format_duration_secs;
use crate::service::LicenseUsage;
use crate::store::{
    Actor, AdminToken, DailyUsage, Delivery, EffectiveStatus, Event, EventKind, IpAction, IpRule, IpScope, IpUsage,
    License, LicenseKind, Machine, Policy, WebhookEndpoint,
};

/// A license as the admin API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct LicenseView {
    pub(crate) id: String,
    key: String,
    email: String,
    product: String,
    /// The status as it stands now: an active license past its expiry is `expired`.
    status: EffectiveStatus,
    max_machines: u32,
    #[serde(with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
    entitlements: Vec<String>,
    metadata: serde_json::Map<String, serde_json::Value>,
    /// The policy it follows; `null` for a license of its own.
    policy: Option<String>,
    /// What its activations are bound to: `machine` or `domain`.
    kind: LicenseKind,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    /// Validations of it (up to a second behind: docs/usage.md).
    validation_count: u64,
    #[serde(with = "time::serde::rfc3339::option")]
    last_validated_at: Option<OffsetDateTime>,
}

impl LicenseView {
    /// The view of `l` with its status as it stands at `now`.
    pub(crate) fn at(l: License, now: OffsetDateTime) -> Self {
        LicenseView {
            status: l.effective_status(now),
            id: l.id.to_string(),
            key: l.key,
            email: l.email,
            product: l.product,
            max_machines: l.max_machines,
            expires_at: l.expires_at,
            entitlements: l.entitlements,
            metadata: l.metadata,
            policy: l.policy,
            kind: l.kind,
            created_at: l.created_at,
            updated_at: l.updated_at,
            validation_count: l.validation_count,
            last_validated_at: l.last_validated_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct MachineView {
    fingerprint: String,
    name: Option<String>,
    platform: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    activated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    last_seen_at: OffsetDateTime,
    offline: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    lease_expires_at: Option<OffsetDateTime>,
    /// Validations that found it (up to a second behind: docs/usage.md).
    validation_count: u64,
    #[serde(with = "time::serde::rfc3339::option")]
    last_validated_at: Option<OffsetDateTime>,
}

impl From<Machine> for MachineView {
    fn from(m: Machine) -> Self {
        MachineView {
            fingerprint: m.fingerprint,
            name: m.name,
            platform: m.platform,
            activated_at: m.activated_at,
            last_seen_at: m.last_seen_at,
            offline: m.offline,
            lease_expires_at: m.lease_expires_at,
            validation_count: m.validation_count,
            last_validated_at: m.last_validated_at,
        }
    }
}

/// A policy as the admin API shows it; durations in the largest unit that divides them.
#[derive(Debug, Serialize)]
pub(crate) struct PolicyView {
    name: String,
    product: String,
    kind: LicenseKind,
    max_machines: u32,
    duration: Option<String>,
    entitlements: Vec<String>,
    refresh_interval: Option<String>,
    offline_grace: Option<String>,
    lease: Option<String>,
    floating: bool,
    overage: String,
    offline_allowed: bool,
    deactivation_limit: Option<u32>,
    deactivation_period: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

impl From<Policy> for PolicyView {
    fn from(p: Policy) -> Self {
        PolicyView {
            name: p.name,
            product: p.product,
            kind: p.kind,
            max_machines: p.max_machines,
            duration: p.duration_secs.map(format_duration_secs),
            entitlements: p.entitlements,
            refresh_interval: p.refresh_interval_secs.map(format_duration_secs),
            offline_grace: p.offline_grace_secs.map(format_duration_secs),
            lease: p.lease_secs.map(format_duration_secs),
            floating: p.floating,
            overage: p.overage.to_string(),
            offline_allowed: p.offline_allowed,
            deactivation_limit: p.deactivation_limit,
            deactivation_period: format_duration_secs(p.deactivation_period_secs),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// An admin token as the API and the CLI show it: never its secret or hash.
#[derive(Debug, Serialize)]
pub(crate) struct AdminTokenView {
    id: String,
    label: String,
    scope: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    revoked_at: Option<OffsetDateTime>,
}

impl From<AdminToken> for AdminTokenView {
    fn from(t: AdminToken) -> Self {
        AdminTokenView {
            id: t.id,
            label: t.label,
            scope: t.scope.as_str(),
            created_at: t.created_at,
            last_used_at: t.last_used_at,
            revoked_at: t.revoked_at,
        }
    }
}

/// Who caused an event, as the audit log shows it.
#[derive(Debug, Serialize)]
pub(crate) struct ActorView {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
}

impl From<Actor> for ActorView {
    fn from(a: Actor) -> Self {
        let kind = a.type_name();
        match a {
            Actor::AdminToken { id, label } => ActorView { kind, id: Some(id), label: Some(label) },
            _ => ActorView { kind, id: None, label: None },
        }
    }
}

/// An event as the audit log (`GET /v1/events`) and the per-license log show it. `kind` is the stored name the
/// per-license log always showed; `type` the name webhooks and filters use.
#[derive(Debug, Serialize)]
pub(crate) struct EventView {
    id: i64,
    #[serde(rename = "type")]
    kind_type: &'static str,
    kind: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
    license_id: Option<String>,
    fingerprint: Option<String>,
    client_ip: Option<String>,
    actor: Option<ActorView>,
    detail: serde_json::Value,
}

impl From<Event> for EventView {
    fn from(e: Event) -> Self {
        EventView {
            id: e.id,
            kind_type: e.event.kind.as_str(),
            kind: e.event.kind.stored_name(),
            at: e.event.at,
            license_id: e.event.license_id.map(|id| id.to_string()),
            fingerprint: e.event.fingerprint,
            client_ip: e.event.client_ip,
            actor: e.event.actor.map(Into::into),
            detail: e.event.detail,
        }
    }
}

/// A webhook endpoint as the API and the CLI show it. The secret is shown only when it is made (create, rotate).
#[derive(Debug, Serialize)]
pub(crate) struct WebhookView {
    id: String,
    url: String,
    description: String,
    events: Vec<String>,
    /// `enabled` or `disabled`.
    status: &'static str,
    #[serde(with = "time::serde::rfc3339::option")]
    disabled_at: Option<OffsetDateTime>,
    disabled_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    last_success_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    previous_secret_until: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

impl WebhookView {
    /// The view of `e` at `now` (a previous secret whose overlap ended is not shown); with its secret if `reveal`.
    pub(crate) fn at(e: WebhookEndpoint, now: OffsetDateTime, reveal: bool) -> Self {
        WebhookView {
            id: e.id.to_string(),
            url: e.url,
            description: e.description,
            events: e.events.iter().map(|k| type_of_stored(k)).collect(),
            status: if e.disabled_at.is_some() { "disabled" } else { "enabled" },
            disabled_at: e.disabled_at,
            disabled_reason: e.disabled_reason,
            last_success_at: e.last_success_at.map(whole_seconds),
            previous_secret_until: e.previous_secret_until.filter(|&t| t > now),
            created_at: e.created_at,
            secret: reveal.then_some(e.secret),
        }
    }
}

/// The type name of a stored subscription (`*` stays `*`).
pub(crate) fn type_of_stored(stored: &str) -> String {
    EventKind::parse(stored).map_or_else(|| stored.to_string(), |k| k.as_str().to_string())
}

fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

/// A delivery as `GET /v1/webhooks/{id}/deliveries` shows it.
#[derive(Debug, Serialize)]
pub(crate) struct DeliveryView {
    id: i64,
    event_id: i64,
    state: &'static str,
    attempts: u32,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    next_attempt_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    last_attempt_at: Option<OffsetDateTime>,
    last_status: Option<u16>,
    last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    finished_at: Option<OffsetDateTime>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        DeliveryView {
            id: d.id,
            event_id: d.event_id,
            state: d.state.as_str(),
            attempts: d.attempts,
            created_at: whole_seconds(d.created_at),
            next_attempt_at: d.next_attempt_at.map(whole_seconds),
            last_attempt_at: d.last_attempt_at.map(whole_seconds),
            last_status: d.last_status,
            last_error: d.last_error,
            finished_at: d.finished_at.map(whole_seconds),
        }
    }
}

/// Where the next page of a log paged by id (events, deliveries) starts: the last id of a full page, else none: the
/// `next_after` of the API's and the CLI's answers.
pub(crate) fn next_after<T>(page: &[T], limit: u32, id: impl Fn(&T) -> i64) -> Option<i64> {
    if page.len() == limit as usize {
        page.last().map(id)
    } else {
        None
    }
}

/// A network rule as the API, the CLI and events show it.
#[derive(Debug, Serialize)]
pub(crate) struct IpRuleView {
    id: String,
    cidr: String,
    action: IpAction,
    /// `global`, `policy` or `license`.
    level: &'static str,
    license_id: Option<String>,
    policy: Option<String>,
    note: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

impl From<&IpRule> for IpRuleView {
    fn from(r: &IpRule) -> Self {
        let (license_id, policy) = match &r.scope {
            IpScope::Global => (None, None),
            IpScope::Policy(name) => (None, Some(name.clone())),
            IpScope::License(id) => (Some(id.to_string()), None),
        };
        IpRuleView {
            id: r.id.to_string(),
            cidr: r.cidr.to_string(),
            action: r.action,
            level: r.scope.level(),
            license_id,
            policy,
            note: r.note.clone(),
            created_at: r.created_at,
        }
    }
}

/// A global rule of the configuration, shown beside the stored ones.
#[derive(Debug, Serialize)]
pub(crate) struct ConfiguredRuleView {
    cidr: String,
    action: IpAction,
}

/// `GET /v1/ip-rules` and `issuer ip-rule list --json`.
#[derive(Debug, Serialize)]
pub(crate) struct IpRulesView {
    /// The stored rules, oldest first.
    ip_rules: Vec<IpRuleView>,
    /// The global rules of the configuration (`ip_allow`, `ip_deny`), which only the configuration changes.
    configured: Vec<ConfiguredRuleView>,
}

impl IpRulesView {
    pub(crate) fn of(rules: &[IpRule], settings: &crate::service::IpRuleSettings) -> Self {
        let configured = |action| move |c: &crate::net::Cidr| ConfiguredRuleView { cidr: c.to_string(), action };
        IpRulesView {
            ip_rules: rules.iter().map(IpRuleView::from).collect(),
            configured: settings
                .allow
                .iter()
                .map(configured(IpAction::Allow))
                .chain(settings.deny.iter().map(configured(IpAction::Deny)))
                .collect(),
        }
    }
}

/// `GET /v1/licenses/{id}/ips` and `issuer license ips --json`.
#[derive(Debug, Serialize)]
pub(crate) struct LicenseIpsView {
    license_id: String,
    /// The addresses, most recently seen first.
    ips: Vec<IpUsageView>,
}

impl LicenseIpsView {
    pub(crate) fn of(license: &License, ips: Vec<IpUsage>) -> Self {
        LicenseIpsView { license_id: license.id.to_string(), ips: ips.into_iter().map(IpUsageView::from).collect() }
    }
}

/// One address a license was used from.
#[derive(Debug, Serialize)]
pub(crate) struct IpUsageView {
    ip: String,
    #[serde(with = "time::serde::rfc3339")]
    first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    last_seen: OffsetDateTime,
    /// Requests the rules admitted.
    requests: u64,
    /// Requests a rule refused.
    blocked: u64,
}

impl From<IpUsage> for IpUsageView {
    fn from(u: IpUsage) -> Self {
        IpUsageView {
            ip: u.ip.to_string(),
            first_seen: u.first_seen,
            last_seen: u.last_seen,
            requests: u.requests,
            blocked: u.blocked,
        }
    }
}

/// A license's daily usage (`GET /v1/licenses/{id}/usage`).
#[derive(Debug, Serialize)]
pub(crate) struct LicenseUsageView {
    license_id: String,
    /// Validations of the license ever (also on days before `from`).
    validation_count: u64,
    #[serde(with = "time::serde::rfc3339::option")]
    last_validated_at: Option<OffsetDateTime>,
    /// The first day, `YYYY-MM-DD` (UTC).
    from: String,
    /// The last day, included.
    to: String,
    /// Every day from `from` to `to`, oldest first.
    days: Vec<DailyUsageView>,
}

/// One license's counts of one UTC day.
#[derive(Debug, Serialize)]
pub(crate) struct DailyUsageView {
    /// `YYYY-MM-DD`.
    day: String,
    validations: u64,
    activations: u64,
    /// Distinct machines whose validation found them.
    machines: u64,
}

impl From<LicenseUsage> for LicenseUsageView {
    fn from(u: LicenseUsage) -> Self {
        let day = |d: DailyUsage| DailyUsageView {
            day: d.day.to_string(),
            validations: d.validations,
            activations: d.activations,
            machines: d.machines,
        };
        LicenseUsageView {
            license_id: u.license.id.to_string(),
            validation_count: u.license.validation_count,
            last_validated_at: u.license.last_validated_at,
            from: u.from.to_string(),
            to: u.to.to_string(),
            days: u.days.into_iter().map(day).collect(),
        }
    }
}
