//! Outbound network rules for webhook deliveries: which addresses the issuer may connect to. Checked against every
//! address a URL's host resolves to (by the client's resolver, so DNS cannot swap in another address after the
//! check) and against IP literals, which no resolver sees.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use crate::net::{canonical, unspecified, Cidr};

/// Networks refused unless an allow rule names them: link-local (where cloud metadata services answer, such as
/// 169.254.169.254) and AWS's IPv6 metadata address.
pub const DEFAULT_DENIED: [Cidr; 3] = [
    net(IpAddr::V4(Ipv4Addr::new(169, 254, 0, 0)), 16),
    net(IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)), 128),
    net(IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)), 10),
];

/// A network known at compile time to be well formed.
const fn net(addr: IpAddr, prefix: u8) -> Cidr {
    match Cidr::new(addr, prefix) {
        Some(cidr) => cidr,
        None => panic!("prefix longer than the address"),
    }
}

/// Which addresses deliveries may go to: the unspecified addresses never; a configured deny rule always refuses; with allow rules, only what they
/// name is allowed (and an allow rule can open a default-denied network); otherwise everything but
/// [`DEFAULT_DENIED`] is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkRules {
    /// `webhooks.allow_networks`.
    pub allow: Vec<Cidr>,
    /// `webhooks.deny_networks`.
    pub deny: Vec<Cidr>,
}

impl NetworkRules {
    /// Whether a delivery may connect to `ip`; `Err` says why not.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        let ip = canonical(ip);
        if unspecified(ip) {
            return Err(format!("address {ip} is unspecified (0.0.0.0/8, ::): a connection to it reaches this host"));
        }
        if let Some(net) = self.deny.iter().find(|n| n.contains(ip)) {
            return Err(format!("address {ip} is in the denied network {net} (webhooks.deny_networks)"));
        }
        if self.allow.iter().any(|n| n.contains(ip)) {
            return Ok(());
        }
        if !self.allow.is_empty() {
            return Err(format!("address {ip} is in no network of webhooks.allow_networks"));
        }
        if let Some(net) = DEFAULT_DENIED.iter().find(|n| n.contains(ip)) {
            return Err(format!(
                "address {ip} is in {net}, refused by default (link-local and cloud metadata addresses); \
                 list it in webhooks.allow_networks to allow it"
            ));
        }
        Ok(())
    }
}

/// The delivery client's resolver: the system's, with every answer filtered by the rules. A host with no allowed
/// address fails to resolve, with the reason.
#[derive(Debug)]
pub(super) struct FilteringResolver {
    pub(super) rules: Arc<NetworkRules>,
}

impl reqwest::dns::Resolve for FilteringResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let rules = self.rules.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match rules.check(a.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refused = Some(why);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = refused.unwrap_or_else(|| format!("{host} has no address"));
                return Err(Box::<dyn std::error::Error + Send + Sync>::from(why));
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn metadata_addresses_are_refused_by_default_and_rules_take_precedence() {
        let default = NetworkRules::default();
        assert!(default.check(ip("169.254.169.254")).is_err());
        assert!(default.check(ip("::ffff:169.254.169.254")).is_err());
        assert!(default.check(ip("fd00:ec2::254")).is_err());
        assert!(default.check(ip("127.0.0.1")).is_ok() && default.check(ip("10.0.0.1")).is_ok());
        let opened = NetworkRules { allow: vec!["169.254.0.0/16".parse().unwrap()], deny: vec![] };
        assert!(opened.check(ip("169.254.1.1")).is_ok(), "an allow rule opens a default-denied network");
        assert!(opened.check(ip("10.0.0.1")).is_err(), "with allow rules only they are allowed");
        let both =
            NetworkRules { allow: vec!["127.0.0.0/8".parse().unwrap()], deny: vec!["127.0.0.2/32".parse().unwrap()] };
        assert!(both.check(ip("127.0.0.1")).is_ok() && both.check(ip("127.0.0.2")).is_err(), "deny before allow");
    }

    #[test]
    fn embedded_ipv4_forms_and_the_unspecified_address_do_not_slip_through() {
        let deny_loopback = NetworkRules { allow: vec![], deny: vec!["127.0.0.0/8".parse().unwrap()] };
        for form in ["::ffff:127.0.0.1", "::127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::1"] {
            assert!(deny_loopback.check(ip(form)).is_err(), "{form} is 127.0.0.1");
        }
        for form in ["::ffff:169.254.169.254", "::169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::"] {
            assert!(NetworkRules::default().check(ip(form)).is_err(), "{form} is the metadata address");
        }
        let open = NetworkRules { allow: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()], deny: vec![] };
        for unspecified in ["0.0.0.0", "0.1.2.3", "::", "::ffff:0.0.0.0"] {
            assert!(open.check(ip(unspecified)).is_err(), "{unspecified} is never a destination");
        }
        assert!(
            NetworkRules::default().check(ip("::1")).is_ok()
                && NetworkRules::default().check(ip("2001:db8::1")).is_ok()
        );
    }
}
