//! Outbound network rules for webhook deliveries: which addresses the issuer may connect to. Checked against every
//! address a URL's host resolves to (by the client's resolver, so DNS cannot swap in another address after the
//! check) and against IP literals, which no resolver sees.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

/// A network in CIDR notation (`10.0.0.0/8`, `fd00::/8`; a bare address is a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is judged as its IPv4
    /// address, so a rule for one form covers the other.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The address a connection to `ip` reaches, as the rules judge it: an IPv6 address that carries an IPv4 address
/// (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:aabb:ccdd::`) is
/// its IPv4 address, so a rule for one form covers every form.
fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // IPv4-compatible, but :: and ::1, which are IPv6's own.
        [0, 0, 0, 0, 0, 0, hi, _] if hi != 0 => IpAddr::V4(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => IpAddr::V4(low),
        [0x2002, a, b, ..] => IpAddr::V4(Ipv4Addr::new((a >> 8) as u8, a as u8, (b >> 8) as u8, b as u8)),
        _ => ip,
    }
}

/// Whether `ip` (canonical) is the unspecified address, which a connection turns into the local host.
fn unspecified(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 0,
        IpAddr::V6(v6) => v6.is_unspecified(),
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a network (like 10.0.0.0/8 or fd00::/8)");
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        // As written: an IPv6 network is matched against IPv6 addresses that carry no IPv4 address (those are judged
        // as their IPv4 address, which IPv4 rules match).
        let addr = IpAddr::from_str(addr).map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Networks refused unless an allow rule names them: link-local (where cloud metadata services answer, such as
/// 169.254.169.254) and AWS's IPv6 metadata address.
pub const DEFAULT_DENIED: [Cidr; 3] = [
    Cidr { addr: IpAddr::V4(Ipv4Addr::new(169, 254, 0, 0)), prefix: 16 },
    Cidr { addr: IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)), prefix: 128 },
    Cidr { addr: IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)), prefix: 10 },
];

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
    fn cidrs_parse_and_match_both_families() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.200.3")) && !net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "an IPv4-mapped address is its IPv4 address");
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")) && !v6.contains(ip("10.1.0.1")));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
        assert!("2002::/16".parse::<Cidr>().is_ok() && "64:ff9b::/96".parse::<Cidr>().is_ok());
        assert_eq!("127.0.0.1".parse::<Cidr>().unwrap().to_string(), "127.0.0.1/32");
        for bad in ["10.0.0.0/33", "fd00::/129", "nope", "10.0.0/8", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
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
