//! The records of policies and leases: a policy (named license terms), its overage rule, changes to it, and what the
//! store says about a machine's lease (a check-in, a culled machine, a machine's presence at validation).

use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;
use uuid::Uuid;

use super::License;

/// Thirty days: the default window of a deactivation limit.
pub const DEFAULT_DEACTIVATION_PERIOD_SECS: u64 = 30 * 86_400;

/// A policy as stored: the grants a new license copies and the rules its licenses follow (docs/policies.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Unique slug; the policy's id. It never changes.
    pub name: String,
    /// The product of its licenses. It never changes.
    pub product: String,
    /// What its licenses' activations are bound to. It never changes.
    pub kind: super::LicenseKind,
    /// Slots (seats, when floating) of a new license.
    pub max_machines: u32,
    /// A new license expires this many seconds after its creation; `None` is perpetual.
    pub duration_secs: Option<u64>,
    /// Entitlements of a new license.
    pub entitlements: Vec<String>,
    /// Online tokens: seconds from issue to `refresh_after`; `None` is the service's setting.
    pub refresh_interval_secs: Option<u64>,
    /// Online tokens: seconds from `refresh_after` to `token_expires_at`; `None` is the service's setting.
    pub offline_grace_secs: Option<u64>,
    /// Seconds a machine may go without checking in before it is culled; `None` is no lease.
    pub lease_secs: Option<u64>,
    /// Concurrent-use seats (needs a lease); check-ins are not counted by the deactivation limit.
    pub floating: bool,
    /// Activations tolerated above `max_machines`.
    pub overage: Overage,
    /// Whether offline (air-gapped) tokens may be issued.
    pub offline_allowed: bool,
    /// At most this many deactivations per license within `deactivation_period_secs`; `None` is no limit.
    pub deactivation_limit: Option<u32>,
    /// The sliding window of the deactivation limit, in seconds.
    pub deactivation_period_secs: u64,
    /// When it was created (whole seconds).
    pub created_at: OffsetDateTime,
    /// When it last changed (whole seconds).
    pub updated_at: OffsetDateTime,
}

impl Policy {
    /// A policy with the defaults of docs/policies.md (no expiry, no entitlements, the service's token timing, no
    /// lease, not floating, no overage, offline allowed, no deactivation limit); its times are set when it is stored.
    pub fn new(name: impl Into<String>, product: impl Into<String>, max_machines: u32) -> Self {
        Policy {
            name: name.into(),
            product: product.into(),
            kind: super::LicenseKind::Machine,
            max_machines,
            duration_secs: None,
            entitlements: Vec::new(),
            refresh_interval_secs: None,
            offline_grace_secs: None,
            lease_secs: None,
            floating: false,
            overage: Overage::None,
            offline_allowed: true,
            deactivation_limit: None,
            deactivation_period_secs: DEFAULT_DEACTIVATION_PERIOD_SECS,
            created_at: OffsetDateTime::UNIX_EPOCH,
            updated_at: OffsetDateTime::UNIX_EPOCH,
        }
    }
}

/// The columns of a policy's terms in the `policies` table, in the order both backends bind them (after the name).
pub(crate) const TERM_COLUMNS: [&str; 11] = [
    "max_machines",
    "duration_secs",
    "entitlements",
    "refresh_interval_secs",
    "offline_grace_secs",
    "lease_secs",
    "floating",
    "overage",
    "offline_allowed",
    "deactivation_limit",
    "deactivation_period_secs",
];

/// The prefix of a policy's columns read in the same query as another table's (the validation read).
pub(crate) const COLUMN_PREFIX: &str = "policy_";

/// `alias.column AS policy_column, ...` for every column of `policies`: a policy read beside a license.
pub(crate) fn prefixed_columns(alias: &str) -> String {
    ["name", "product", "kind"]
        .iter()
        .chain(TERM_COLUMNS.iter())
        .chain(["created_at", "updated_at"].iter())
        .map(|c| format!("{alias}.{c} AS {COLUMN_PREFIX}{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How many activations above `max_machines` a policy tolerates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Overage {
    /// None: `max_machines` is the limit.
    #[default]
    None,
    /// This many more (`"+2"`).
    Plus(u32),
    /// `max_machines` times this many hundredths, rounded down (`"1.25x"` is 125).
    Factor(u32),
}

/// Largest overage: `+10000` or `10x`.
const MAX_OVERAGE_PLUS: u32 = 10_000;
const MAX_OVERAGE_FACTOR: u32 = 1_000;

impl Overage {
    /// The machines tolerated above `max_machines` (the limit is `max_machines` plus this).
    pub fn extra(self, max_machines: u32) -> u32 {
        match self {
            Overage::None => 0,
            Overage::Plus(n) => n,
            Overage::Factor(hundredths) => {
                let limit = u64::from(max_machines) * u64::from(hundredths) / 100;
                u32::try_from(limit).unwrap_or(u32::MAX).saturating_sub(max_machines)
            }
        }
    }
}

impl fmt::Display for Overage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Overage::None => f.write_str("none"),
            Overage::Plus(n) => write!(f, "+{n}"),
            Overage::Factor(h) if h % 100 == 0 => write!(f, "{}x", h / 100),
            Overage::Factor(h) if h % 10 == 0 => write!(f, "{}.{}x", h / 100, (h % 100) / 10),
            Overage::Factor(h) => write!(f, "{}.{:02}x", h / 100, h % 100),
        }
    }
}

impl FromStr for Overage {
    type Err = String;

    /// `none`, `+N` (1 to 10000) or a factor `F x` above 1 and at most 10, with at most two decimals (`1.25x`).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("`{s}` is not an overage: use \"none\", \"+N\" (e.g. \"+2\") or a factor such as \"1.25x\"");
        let s = s.trim();
        if s == "none" {
            return Ok(Overage::None);
        }
        if let Some(n) = s.strip_prefix('+') {
            let n: u32 = n.parse().map_err(|_| bad())?;
            return if (1..=MAX_OVERAGE_PLUS).contains(&n) {
                Ok(Overage::Plus(n))
            } else {
                Err(format!("an overage of \"+N\" takes N from 1 to {MAX_OVERAGE_PLUS} (\"none\" for no overage)"))
            };
        }
        let factor = s.strip_suffix('x').ok_or_else(bad)?;
        let (whole, frac) = factor.split_once('.').unwrap_or((factor, ""));
        if whole.is_empty() || frac.len() > 2 || !whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let whole: u32 = whole.parse().map_err(|_| bad())?;
        let frac: u32 = if frac.is_empty() { 0 } else { format!("{frac:0<2}").parse().map_err(|_| bad())? };
        let hundredths = whole.checked_mul(100).and_then(|w| w.checked_add(frac)).ok_or_else(bad)?;
        if hundredths <= 100 || hundredths > MAX_OVERAGE_FACTOR {
            return Err("an overage factor lies above 1x and at most 10x (e.g. \"1.25x\")".into());
        }
        Ok(Overage::Factor(hundredths))
    }
}

/// Changes to a policy's terms; `None` fields stay as they are, `Some(None)` clears a nullable one. Its name and
/// product never change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyUpdate {
    /// New slots of new licenses.
    pub max_machines: Option<u32>,
    /// New duration of new licenses.
    pub duration_secs: Option<Option<u64>>,
    /// New entitlements of new licenses.
    pub entitlements: Option<Vec<String>>,
    /// New refresh interval.
    pub refresh_interval_secs: Option<Option<u64>>,
    /// New offline grace.
    pub offline_grace_secs: Option<Option<u64>>,
    /// New lease; `Some(None)` ends every lease of the policy's machines.
    pub lease_secs: Option<Option<u64>>,
    /// Floating or not.
    pub floating: Option<bool>,
    /// New overage.
    pub overage: Option<Overage>,
    /// Offline tokens allowed or not.
    pub offline_allowed: Option<bool>,
    /// New deactivation limit.
    pub deactivation_limit: Option<Option<u32>>,
    /// New window of the deactivation limit.
    pub deactivation_period_secs: Option<u64>,
}

impl PolicyUpdate {
    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        *self == PolicyUpdate::default()
    }

    /// `policy` with these changes.
    pub fn apply(&self, mut policy: Policy) -> Policy {
        fn set<T: Clone>(field: &mut T, to: &Option<T>) {
            if let Some(v) = to {
                field.clone_from(v);
            }
        }
        set(&mut policy.max_machines, &self.max_machines);
        set(&mut policy.duration_secs, &self.duration_secs);
        set(&mut policy.entitlements, &self.entitlements);
        set(&mut policy.refresh_interval_secs, &self.refresh_interval_secs);
        set(&mut policy.offline_grace_secs, &self.offline_grace_secs);
        set(&mut policy.lease_secs, &self.lease_secs);
        set(&mut policy.floating, &self.floating);
        set(&mut policy.overage, &self.overage);
        set(&mut policy.offline_allowed, &self.offline_allowed);
        set(&mut policy.deactivation_limit, &self.deactivation_limit);
        set(&mut policy.deactivation_period_secs, &self.deactivation_period_secs);
        policy
    }
}

/// What [`Tx::delete_policy`](super::Tx::delete_policy) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyDeleted {
    /// The policy is gone.
    Deleted,
    /// No policy has this name.
    NotFound,
    /// This many licenses use it; nothing changed.
    InUse(u64),
}

/// A machine checking in: what [`Tx::activate_machine`](super::Tx::activate_machine) stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewMachine<'a> {
    /// The machine's fingerprint.
    pub fingerprint: &'a str,
    /// A human name, if the app sent one (an existing machine keeps its own when `None`).
    pub name: Option<&'a str>,
    /// The platform, if the app sent one (likewise).
    pub platform: Option<&'a str>,
    /// The time of the check-in.
    pub at: OffsetDateTime,
    /// When its lease ends; `None` is no lease.
    pub lease_expires_at: Option<OffsetDateTime>,
}

/// A machine removed because its lease ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Culled {
    /// Its license.
    pub license_id: Uuid,
    /// Its fingerprint.
    pub fingerprint: String,
    /// When its lease ended.
    pub lease_expired_at: OffsetDateTime,
}

/// What [`Tx::touch_machine`](super::Tx::touch_machine) found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touched {
    /// The machine was active and is now marked as seen; its lease ends then (`None`: no lease, also for a machine
    /// holding an offline token, which never takes one).
    Active {
        /// When its lease ends now.
        lease_expires_at: Option<OffsetDateTime>,
    },
    /// It was culled earlier; nothing was written.
    LeaseExpired,
    /// It is not activated.
    Absent,
}

/// How a unit of work reads a policy ([`Tx::policy`](super::Tx::policy)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyLock {
    /// No lock: the policy as last committed (a used policy is never deleted, and a license reads its rules so).
    None,
    /// The policy cannot be deleted until the unit ends (a license being created from it).
    KeepAlive,
    /// Locked against other units' changes of it until the unit ends (a read-modify-write of the policy).
    Update,
}

/// Whether a machine is on a license, as a validation or a check-in sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// Active, and its lease (if it has one) has not ended.
    Active,
    /// Its lease ended: culled, or not yet culled.
    LeaseExpired,
    /// Not activated (never, or deactivated or removed since).
    Absent,
}

/// The presence of the best of several fingerprints, and which one it is when it is active
/// ([`Store::machine_presence`](super::Store::machine_presence)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BestPresence {
    /// Active if any is, else an ended lease if any has one, else absent.
    pub presence: Presence,
    /// The first of the fingerprints given (the most specific binding) that is active; `None` unless `presence` is
    /// [`Presence::Active`].
    pub active: Option<String>,
}

/// What a validation needs, read in one round trip ([`Store::license_for_machine`](super::Store::license_for_machine)).
#[derive(Clone, Debug, PartialEq)]
pub struct MachineCheck {
    /// The license.
    pub license: License,
    /// Its machines whose lease has not ended (every machine without a lease counts).
    pub machines_used: u32,
    /// The machine asked about.
    pub presence: Presence,
    /// The license's policy, read in the same query (`None` for a license without one).
    pub policy: Option<Policy>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn overage_parses_displays_and_rounds_down() {
        for (text, parsed, shown) in [
            ("none", Overage::None, "none"),
            ("+2", Overage::Plus(2), "+2"),
            ("1.25x", Overage::Factor(125), "1.25x"),
            ("1.5x", Overage::Factor(150), "1.5x"),
            ("1.50x", Overage::Factor(150), "1.5x"),
            ("2x", Overage::Factor(200), "2x"),
            ("1.05x", Overage::Factor(105), "1.05x"),
        ] {
            let o: Overage = text.parse().unwrap();
            assert_eq!(o, parsed, "{text}");
            assert_eq!(o.to_string(), shown, "{text}");
            assert_eq!(o.to_string().parse::<Overage>().unwrap(), o);
        }
        for bad in
            ["", "abc", "+0", "+", "+-1", "+10001", "1x", "0.5x", "1.005x", "10.01x", "x", ".5x", "1.x5", "1.2.3x"]
        {
            assert!(bad.parse::<Overage>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(Overage::Factor(125).extra(4), 1);
        assert_eq!(Overage::Factor(125).extra(3), 0, "floor(3.75) = 3");
        assert_eq!(Overage::Plus(2).extra(1), 2);
        assert_eq!(Overage::Factor(1000).extra(u32::MAX), 0, "saturates, never overflows");
    }

    #[test]
    fn an_update_changes_only_its_fields() {
        let p = Policy::new("pro", "acme-cad", 3);
        let u = PolicyUpdate { lease_secs: Some(Some(3600)), duration_secs: Some(None), ..Default::default() };
        let q = u.apply(p.clone());
        assert_eq!(q.lease_secs, Some(3600));
        assert_eq!(Policy { lease_secs: None, ..q }, p);
        assert!(PolicyUpdate::default().is_empty() && !u.is_empty());
    }
}
