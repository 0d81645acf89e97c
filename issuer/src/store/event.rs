//! The event log: what happened, to which license (if any), caused by whom. The log is the audit trail
//! (`GET /v1/events`) and the webhook outbox's source: every event is written in the transaction of the change it
//! describes, together with one pending delivery per webhook endpoint subscribed to its type (docs/webhooks.md).

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

/// What happened. Each kind has a type name (`license.created`, shown in the API and in webhook payloads) and a
/// stored name: the kinds that existed before the type names keep their old stored name (`created`), which is also
/// what `GET /v1/licenses/{id}/events` shows as `kind`; newer kinds are stored under their type name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub enum EventKind {
    /// License created.
    Created,
    /// Slots, expiry, entitlements or metadata changed.
    Updated,
    /// Suspended.
    Suspended,
    /// Reinstated after a suspension.
    Reinstated,
    /// Revoked.
    Revoked,
    /// The license's `expires_at` passed (recorded once per expiry by the sweep).
    Expired,
    /// An update moved the license's expiry later (or made it perpetual).
    Renewed,
    /// A machine was activated (or re-activated).
    Activated,
    /// A machine deactivated itself (online, or by an offline deactivation code).
    Deactivated,
    /// A validation request (the result code is in the detail).
    Validated,
    /// A token was refreshed (or the refresh refused; the detail says which).
    Refreshed,
    /// An admin removed a machine.
    MachineRemoved,
    /// A machine's lease ended and its slot was freed (the detail says when it ended and what culled it).
    MachineCulled,
    /// A policy was created.
    PolicyCreated,
    /// A policy's terms changed.
    PolicyUpdated,
    /// A policy was deleted.
    PolicyDeleted,
    /// An admin token was created.
    AdminTokenCreated,
    /// An admin token was revoked.
    AdminTokenRevoked,
    /// A webhook endpoint was created.
    WebhookCreated,
    /// A webhook endpoint was deleted.
    WebhookDeleted,
    /// A webhook endpoint's signing secret was rotated.
    WebhookSecretRotated,
    /// A webhook endpoint kept failing and was disabled.
    WebhookDisabled,
    /// A disabled webhook endpoint was enabled again.
    WebhookEnabled,
    /// An admin queued one delivery's event again.
    WebhookDeliveryResent,
    /// The signing key ring was rotated or a key retired (recorded in the store).
    KeysChanged,
    /// A network rule was created.
    IpRuleCreated,
    /// A network rule was deleted.
    IpRuleDeleted,
    /// A network rule refused a request (the detail names the address, the operation and the rule).
    IpBlocked,
}

impl EventKind {
    /// Every kind, in the order docs/webhooks.md lists them.
    pub const ALL: [EventKind; 28] = [
        EventKind::Created,
        EventKind::Updated,
        EventKind::Suspended,
        EventKind::Reinstated,
        EventKind::Revoked,
        EventKind::Expired,
        EventKind::Renewed,
        EventKind::Activated,
        EventKind::Deactivated,
        EventKind::Validated,
        EventKind::Refreshed,
        EventKind::MachineRemoved,
        EventKind::MachineCulled,
        EventKind::PolicyCreated,
        EventKind::PolicyUpdated,
        EventKind::PolicyDeleted,
        EventKind::AdminTokenCreated,
        EventKind::AdminTokenRevoked,
        EventKind::WebhookCreated,
        EventKind::WebhookDeleted,
        EventKind::WebhookSecretRotated,
        EventKind::WebhookDisabled,
        EventKind::WebhookEnabled,
        EventKind::WebhookDeliveryResent,
        EventKind::KeysChanged,
        EventKind::IpRuleCreated,
        EventKind::IpRuleDeleted,
        EventKind::IpBlocked,
    ];

    /// The type name: `GET /v1/events` (`type`), webhook payloads and subscriptions.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "license.created",
            EventKind::Updated => "license.updated",
            EventKind::Suspended => "license.suspended",
            EventKind::Reinstated => "license.reinstated",
            EventKind::Revoked => "license.revoked",
            EventKind::Expired => "license.expired",
            EventKind::Renewed => "license.renewed",
            EventKind::Activated => "machine.activated",
            EventKind::Deactivated => "machine.deactivated",
            EventKind::Validated => "license.validated",
            EventKind::Refreshed => "machine.refreshed",
            EventKind::MachineRemoved => "machine.removed",
            EventKind::MachineCulled => "machine.culled",
            EventKind::PolicyCreated => "policy.created",
            EventKind::PolicyUpdated => "policy.updated",
            EventKind::PolicyDeleted => "policy.deleted",
            EventKind::AdminTokenCreated => "admin_token.created",
            EventKind::AdminTokenRevoked => "admin_token.revoked",
            EventKind::WebhookCreated => "webhook.created",
            EventKind::WebhookDeleted => "webhook.deleted",
            EventKind::WebhookSecretRotated => "webhook.secret_rotated",
            EventKind::WebhookDisabled => "webhook.disabled",
            EventKind::WebhookEnabled => "webhook.enabled",
            EventKind::WebhookDeliveryResent => "webhook.delivery_resent",
            EventKind::KeysChanged => "keys.changed",
            EventKind::IpRuleCreated => "ip_rule.created",
            EventKind::IpRuleDeleted => "ip_rule.deleted",
            EventKind::IpBlocked => "ip.blocked",
        }
    }

    /// The name the events table stores (and the per-license log shows as `kind`).
    pub fn stored_name(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Updated => "updated",
            EventKind::Suspended => "suspended",
            EventKind::Reinstated => "reinstated",
            EventKind::Revoked => "revoked",
            EventKind::Activated => "activated",
            EventKind::Deactivated => "deactivated",
            EventKind::Validated => "validated",
            EventKind::Refreshed => "refreshed",
            EventKind::MachineRemoved => "machine_removed",
            other => other.as_str(),
        }
    }

    /// The kind with this type name.
    pub fn from_type(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The kind with this stored name.
    pub(crate) fn parse(stored: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.stored_name() == stored)
    }
}

/// Who caused an event.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Actor {
    /// An app, through the public endpoints (activate, validate, refresh, deactivate, offline).
    App,
    /// An admin API request with this token.
    AdminToken {
        /// The token's id (`GET /v1/admin-tokens`), or `env` for `ISSUER_ADMIN_TOKEN`.
        id: String,
        /// Its label.
        label: String,
    },
    /// The vendor CLI, on the data directory or database.
    Cli,
    /// The issuer itself (the lease and expiry sweeps, webhook delivery).
    System,
}

impl Actor {
    /// The stored `actor_type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Actor::App => "app",
            Actor::AdminToken { .. } => "admin_token",
            Actor::Cli => "cli",
            Actor::System => "system",
        }
    }

    /// The stored (type, id, label).
    pub(crate) fn columns(&self) -> (&'static str, Option<&str>, Option<&str>) {
        match self {
            Actor::AdminToken { id, label } => (self.type_name(), Some(id), Some(label)),
            other => (other.type_name(), None, None),
        }
    }

    /// The actor of stored columns; `None` for an event recorded before actors were (or a foreign value).
    pub(crate) fn from_columns(kind: Option<&str>, id: Option<String>, label: Option<String>) -> Option<Actor> {
        Some(match kind? {
            "app" => Actor::App,
            "cli" => Actor::Cli,
            "system" => Actor::System,
            "admin_token" => Actor::AdminToken { id: id?, label: label.unwrap_or_default() },
            _ => return None,
        })
    }
}

/// An event to append.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// The license it concerns; `None` for an event of no license (a policy, a token, a webhook endpoint).
    pub license_id: Option<Uuid>,
    /// What happened.
    pub kind: EventKind,
    /// When.
    pub at: OffsetDateTime,
    /// The machine involved, if any.
    pub fingerprint: Option<String>,
    /// The client's IP address, if known.
    pub client_ip: Option<String>,
    /// Who caused it; `None` only for events stored before actors were recorded.
    pub actor: Option<Actor>,
    /// Details (a JSON object), e.g. the result code of a validation; the `data` of webhook payloads.
    pub detail: serde_json::Value,
}

/// A stored event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Position in the log (increasing; on PostgreSQL in commit order per license, see docs/api.md).
    pub id: i64,
    /// The event itself.
    pub event: NewEvent,
}

/// Which events [`crate::Store::events`] lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this kind.
    pub kind: Option<EventKind>,
    /// Only events of this license.
    pub license_id: Option<Uuid>,
    /// Only events with an id above this.
    pub after: i64,
    /// At most this many, oldest first.
    pub limit: u32,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn event_kinds_round_trip_by_type_and_stored_name() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.stored_name()), Some(k));
            assert_eq!(EventKind::from_type(k.as_str()), Some(k));
        }
        assert_eq!(EventKind::Created.stored_name(), "created");
        assert_eq!(EventKind::MachineCulled.stored_name(), "machine.culled");
        let names: std::collections::BTreeSet<_> = EventKind::ALL.iter().map(|k| k.stored_name()).collect();
        assert_eq!(names.len(), EventKind::ALL.len(), "stored names are distinct");
    }

    #[test]
    fn actors_round_trip_through_columns() {
        for a in [Actor::App, Actor::Cli, Actor::System, Actor::AdminToken { id: "ab".into(), label: "ci".into() }] {
            let (t, id, label) = a.columns();
            assert_eq!(Actor::from_columns(Some(t), id.map(Into::into), label.map(Into::into)), Some(a));
        }
        assert_eq!(Actor::from_columns(None, None, None), None);
    }
}
