//! IP networks: CIDR notation, and the forms of an address rules judge (an IPv4-mapped IPv6 address is its IPv4
//! address; for outbound connections every IPv6 form that carries an IPv4 address is). Used by the client network rules (`service::network`), the trusted
//! proxies (`http::extract`) and the webhooks' outbound rules (`service::webhooks::network`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

/// A network in CIDR notation (`10.0.0.0/8`, `fd00::/8`; a bare address is a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network of `addr` with `prefix` bits; `None` when the prefix is longer than the address.
    pub const fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            None
        } else {
            Some(Cidr { addr, prefix })
        }
    }

    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is judged as its IPv4
    /// address, so a rule for one form covers the other. (The other forms that carry an IPv4 address are judged as
    /// IPv6 here: a client sending from `2002:a00:5::1` does not own 10.0.0.5. Outbound rules decode them first, with
    /// [`canonical`].)
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
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

    /// The same network with its host bits cleared (`10.1.2.3/8` is `10.0.0.0/8`), and an IPv4-mapped IPv6
    /// network (`::ffff:10.0.0.0/104`) as the IPv4 network it names: the form rules are stored and shown in.
    pub fn network(self) -> Cidr {
        match self.addr {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                Cidr { addr: IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask)), prefix: self.prefix }
            }
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) if self.prefix >= 96 => Cidr { addr: IpAddr::V4(v4), prefix: self.prefix - 96 }.network(),
                _ => {
                    let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                    Cidr { addr: IpAddr::V6((u128::from(v6) & mask).into()), prefix: self.prefix }
                }
            },
        }
    }
}

/// The address a connection to `ip` reaches, as the outbound (webhook) rules judge it: an IPv6 address that carries
/// an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4
/// `2002:aabb:ccdd::`) is its IPv4 address, so a rule for one form covers every form.
pub fn canonical(ip: IpAddr) -> IpAddr {
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
pub fn unspecified(ip: IpAddr) -> bool {
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
            // Digits only: `u8::from_str` would take `+8`.
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(bad)?
            }
            Some(_) => return Err(bad()),
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
        for bad in ["10.0.0.0/33", "fd00::/129", "nope", "10.0.0/8", "", "10.0.0.0/+8", "10.0.0.0/", "10.0.0.0/0008"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn networks_are_stored_with_host_bits_cleared_and_mapped_forms_as_ipv4() {
        let n = |s: &str| s.parse::<Cidr>().unwrap().network().to_string();
        assert_eq!(n("10.1.2.3/8"), "10.0.0.0/8");
        assert_eq!(n("10.1.2.3"), "10.1.2.3/32");
        assert_eq!(n("2001:db8::1/32"), "2001:db8::/32");
        assert_eq!(n("::ffff:10.1.2.3/104"), "10.0.0.0/8");
        assert_eq!(n("0.0.0.0/0"), "0.0.0.0/0");
        assert_eq!(n("::/0"), "::/0");
    }
}
