//! The network rules as one instance holds them in memory, and the one decision they make: is this client address
//! admitted for this license?
//!
//! Three levels apply to a request for a license: the license's own rules, its policy's, and the global ones (the
//! configuration's and the stored ones). Deny comes before allow: a deny rule at any level that names the address
//! refuses it, whatever an allow rule says. Then each level that has allow rules must name the address in one of
//! them: an allow list narrows what a level admits, and a narrower level cannot widen a broader one (a license
//! allowed 203.0.113.0/24 under a global allow list of 10.0.0.0/8 admits nothing outside 10.0.0.0/8).

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;
use uuid::Uuid;

use crate::net::Cidr;
use crate::store::{IpAction, IpRule, IpScope, License};

/// The global rules of the configuration (`ip_allow`, `ip_deny`; docs/network.md): they cannot be deleted over
/// the API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpRuleSettings {
    /// Config `ip_allow`, env `ISSUER_IP_ALLOW`.
    pub allow: Vec<Cidr>,
    /// Config `ip_deny`, env `ISSUER_IP_DENY`.
    pub deny: Vec<Cidr>,
}

/// The rule a decision rests on, as events and errors show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    /// The stored rule's id; `None` for a rule of the configuration.
    pub id: Option<String>,
    /// Its network.
    pub cidr: String,
    /// `allow` or `deny`.
    pub action: IpAction,
    /// `global`, `policy` or `license`.
    pub level: &'static str,
}

/// Why a client address was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocked {
    /// A deny rule names it.
    Denied {
        /// The address.
        ip: IpAddr,
        /// The rule.
        rule: RuleRef,
    },
    /// A level has allow rules and none names it.
    NotAllowed {
        /// The address.
        ip: IpAddr,
        /// The level: `global`, `policy` or `license`.
        level: &'static str,
    },
}

impl Blocked {
    /// The address refused.
    pub fn ip(&self) -> IpAddr {
        match self {
            Blocked::Denied { ip, .. } | Blocked::NotAllowed { ip, .. } => *ip,
        }
    }

    /// What the blocked event records.
    pub fn detail(&self, operation: &str) -> serde_json::Value {
        match self {
            Blocked::Denied { ip, rule } => serde_json::json!({
                "ip": ip.to_string(), "operation": operation, "reason": "denied", "level": rule.level, "rule": rule,
            }),
            Blocked::NotAllowed { ip, level } => serde_json::json!({
                "ip": ip.to_string(), "operation": operation, "reason": "not_allowed", "level": level, "rule": null,
            }),
        }
    }
}

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Blocked::Denied { ip, rule } => {
                write!(f, "requests from {ip} are refused by a {} deny rule ({})", rule.level, rule.cidr)
            }
            Blocked::NotAllowed { ip, level } => {
                write!(f, "requests from {ip} are refused: the {level} allow rules do not name it")
            }
        }
    }
}

/// The rules of one level.
#[derive(Clone, Debug, Default)]
struct Level {
    allow: Vec<(Cidr, RuleRef)>,
    deny: Vec<(Cidr, RuleRef)>,
}

impl Level {
    fn add(&mut self, cidr: Cidr, rule: RuleRef) {
        match rule.action {
            IpAction::Allow => self.allow.push((cidr, rule)),
            IpAction::Deny => self.deny.push((cidr, rule)),
        }
    }

    fn denies(&self, ip: IpAddr) -> Option<&RuleRef> {
        self.deny.iter().find(|(c, _)| c.contains(ip)).map(|(_, r)| r)
    }

    /// Whether the level's allow list (if it has one) admits `ip`.
    fn admits(&self, ip: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|(c, _)| c.contains(ip))
    }
}

/// Every rule, indexed by level.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    global: Level,
    policies: HashMap<String, Level>,
    licenses: HashMap<Uuid, Level>,
}

impl RuleSet {
    /// The rules of the configuration and the store together.
    pub fn build(settings: &IpRuleSettings, stored: &[IpRule]) -> RuleSet {
        let mut set = RuleSet::default();
        let configured = |cidr: &Cidr, action| RuleRef { id: None, cidr: cidr.to_string(), action, level: "global" };
        for cidr in &settings.allow {
            set.global.add(*cidr, configured(cidr, IpAction::Allow));
        }
        for cidr in &settings.deny {
            set.global.add(*cidr, configured(cidr, IpAction::Deny));
        }
        for rule in stored {
            let r = RuleRef {
                id: Some(rule.id.to_string()),
                cidr: rule.cidr.to_string(),
                action: rule.action,
                level: rule.scope.level(),
            };
            let level = match &rule.scope {
                IpScope::Global => &mut set.global,
                IpScope::Policy(name) => set.policies.entry(name.clone()).or_default(),
                IpScope::License(id) => set.licenses.entry(*id).or_default(),
            };
            level.add(rule.cidr, r);
        }
        set
    }

    /// Whether the global rules admit `ip`: what a request is judged by before its license is known (a refused
    /// network learns nothing, not even whether a key exists).
    pub fn check_global(&self, ip: IpAddr) -> Result<(), Blocked> {
        self.check_levels(ip, &[&self.global])
    }

    /// Whether every level that applies to `license` admits `ip`: deny rules of any level first, then each level's
    /// allow list.
    pub fn check(&self, ip: IpAddr, license: &License) -> Result<(), Blocked> {
        let none = Level::default();
        let own = self.licenses.get(&license.id).unwrap_or(&none);
        let policy = license.policy.as_ref().and_then(|p| self.policies.get(p)).unwrap_or(&none);
        self.check_levels(ip, &[own, policy, &self.global])
    }

    /// The levels, most specific first: the first deny found is the one reported.
    fn check_levels(&self, ip: IpAddr, levels: &[&Level]) -> Result<(), Blocked> {
        let ip = ip.to_canonical();
        if let Some(rule) = levels.iter().find_map(|l| l.denies(ip)) {
            return Err(Blocked::Denied { ip, rule: rule.clone() });
        }
        for level in levels {
            if !level.admits(ip) {
                let name = level.allow.first().map_or("global", |(_, r)| r.level);
                return Err(Blocked::NotAllowed { ip, level: name });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use time::OffsetDateTime;

    use super::*;

    fn rule(cidr: &str, action: IpAction, scope: IpScope) -> IpRule {
        IpRule {
            id: Uuid::now_v7(),
            cidr: cidr.parse::<Cidr>().unwrap().network(),
            action,
            scope,
            note: String::new(),
            created_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn license(policy: Option<&str>) -> License {
        License {
            id: Uuid::now_v7(),
            key: "K".into(),
            email: "a@example.com".into(),
            product: "p".into(),
            max_machines: 1,
            expires_at: None,
            entitlements: vec![],
            metadata: serde_json::Map::new(),
            status: crate::store::LicenseStatus::Active,
            policy: policy.map(Into::into),
            kind: crate::store::LicenseKind::Machine,
            created_at: OffsetDateTime::UNIX_EPOCH,
            updated_at: OffsetDateTime::UNIX_EPOCH,
            validation_count: 0,
            last_validated_at: None,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn no_rules_admit_everything() {
        let set = RuleSet::build(&IpRuleSettings::default(), &[]);
        assert!(set.check(ip("203.0.113.9"), &license(None)).is_ok() && set.check_global(ip("::1")).is_ok());
    }

    #[test]
    fn deny_comes_before_allow_at_every_level() {
        let l = license(Some("pro"));
        let rules = [
            rule("10.0.0.0/8", IpAction::Allow, IpScope::Global),
            rule("10.1.0.0/16", IpAction::Deny, IpScope::Policy("pro".into())),
            rule("10.1.2.3/32", IpAction::Allow, IpScope::License(l.id)),
        ];
        let set = RuleSet::build(&IpRuleSettings::default(), &rules);
        let Err(Blocked::Denied { rule, .. }) = set.check(ip("10.1.2.3"), &l) else { panic!("a policy deny wins") };
        assert_eq!((rule.level, rule.cidr.as_str()), ("policy", "10.1.0.0/16"));
        // The license's allow list admits only 10.1.2.3: 10.2.0.1 is in the global list but not the license's.
        assert_eq!(set.check(ip("10.2.0.1"), &l), Err(Blocked::NotAllowed { ip: ip("10.2.0.1"), level: "license" }));
        // Another license of no policy: only the global allow list applies.
        assert!(set.check(ip("10.1.2.3"), &license(None)).is_ok());
        assert_eq!(
            set.check(ip("192.0.2.1"), &license(None)),
            Err(Blocked::NotAllowed { ip: ip("192.0.2.1"), level: "global" })
        );
    }

    #[test]
    fn a_narrower_allow_list_does_not_widen_a_broader_one() {
        let l = license(None);
        let rules = [rule("203.0.113.0/24", IpAction::Allow, IpScope::License(l.id))];
        let settings = IpRuleSettings { allow: vec!["10.0.0.0/8".parse().unwrap()], deny: vec![] };
        let set = RuleSet::build(&settings, &rules);
        assert_eq!(
            set.check(ip("203.0.113.5"), &l),
            Err(Blocked::NotAllowed { ip: ip("203.0.113.5"), level: "global" })
        );
        assert_eq!(set.check(ip("10.0.0.1"), &l), Err(Blocked::NotAllowed { ip: ip("10.0.0.1"), level: "license" }));
    }

    #[test]
    fn configured_and_stored_global_rules_both_apply_to_both_families() {
        let settings = IpRuleSettings { allow: vec![], deny: vec!["2001:db8::/32".parse().unwrap()] };
        let set = RuleSet::build(&settings, &[rule("198.51.100.0/24", IpAction::Deny, IpScope::Global)]);
        let Err(Blocked::Denied { rule: configured, .. }) = set.check_global(ip("2001:db8::7")) else {
            panic!("configured")
        };
        assert_eq!(configured.id, None);
        assert!(matches!(
            set.check_global(ip("198.51.100.20")),
            Err(Blocked::Denied { rule: RuleRef { id: Some(_), .. }, .. })
        ));
        // An IPv4-mapped client address is judged as its IPv4 address.
        assert!(set.check_global(ip("::ffff:198.51.100.20")).is_err());
        // Other IPv6 forms that embed an IPv4 address are IPv6 addresses of their own (6to4, NAT64), and IPv6 rules
        // name them.
        assert!(set.check_global(ip("2002:c633:6414::1")).is_ok(), "6to4 of 198.51.100.20 is not that address");
        let v6 = RuleSet::build(&IpRuleSettings::default(), &[rule("2002::/16", IpAction::Deny, IpScope::Global)]);
        assert!(v6.check_global(ip("2002:c633:6414::1")).is_err(), "a 6to4 rule matches 6to4 clients");
        assert!(set.check_global(ip("2001:db9::1")).is_ok() && set.check_global(ip("198.51.101.1")).is_ok());
    }
}
