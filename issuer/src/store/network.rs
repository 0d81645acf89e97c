//! The records of network rules and of the addresses licenses were used from (docs/network.md), and what a
//! license's activations are bound to.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::net::Cidr;

/// What a rule does with the addresses it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IpAction {
    /// Admit only addresses an allow rule of the level names (once a level has one).
    Allow,
    /// Refuse the addresses it names, whatever any allow rule says.
    Deny,
}

impl IpAction {
    /// The word stored and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            IpAction::Allow => "allow",
            IpAction::Deny => "deny",
        }
    }
}

impl FromStr for IpAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "allow" => Ok(IpAction::Allow),
            "deny" => Ok(IpAction::Deny),
            other => Err(format!("`{other}` is not an action (allow, deny)")),
        }
    }
}

/// Whom a rule applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum IpScope {
    /// Every request.
    Global,
    /// Requests for the licenses of this policy.
    Policy(String),
    /// Requests for this license.
    License(Uuid),
}

impl IpScope {
    /// The level's name in the API: `global`, `policy` or `license`.
    pub fn level(&self) -> &'static str {
        match self {
            IpScope::Global => "global",
            IpScope::Policy(_) => "policy",
            IpScope::License(_) => "license",
        }
    }
}

/// A stored network rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpRule {
    /// Its id (UUID v7).
    pub id: Uuid,
    /// The network it names (host bits cleared).
    pub cidr: Cidr,
    /// Allow or deny.
    pub action: IpAction,
    /// Whom it applies to.
    pub scope: IpScope,
    /// The vendor's note (why the rule exists); may be empty.
    pub note: String,
    /// When it was created (whole seconds).
    pub created_at: OffsetDateTime,
}

/// What the store keeps of one address a license was used from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpUsage {
    /// The license.
    pub license_id: Uuid,
    /// The client address (an IPv4-mapped IPv6 address is kept as its IPv4 address).
    pub ip: IpAddr,
    /// The first request seen from it (whole seconds).
    pub first_seen: OffsetDateTime,
    /// The last request seen from it (whole seconds).
    pub last_seen: OffsetDateTime,
    /// Requests from it that the rules admitted.
    pub requests: u64,
    /// Requests from it that a rule refused.
    pub blocked: u64,
}

/// What a license's activations are bound to: fixed when the license is created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LicenseKind {
    /// A machine, by its fingerprint.
    #[default]
    Machine,
    /// A domain name (docs/token-format.md §17): `max_machines` counts domains.
    Domain,
}

impl LicenseKind {
    /// The word stored and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            LicenseKind::Machine => "machine",
            LicenseKind::Domain => "domain",
        }
    }
}

impl fmt::Display for LicenseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LicenseKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "machine" => Ok(LicenseKind::Machine),
            "domain" => Ok(LicenseKind::Domain),
            other => Err(format!("`{other}` is not a license kind (machine, domain)")),
        }
    }
}
