//! Which clients DNS answers (RFC 5358: a forwarder must not be an open resolver). By default:
//! loopback, and the subnets of the interfaces that carry a listen address (every interface's
//! when listening on 0.0.0.0 or ::). `[dns] allow` replaces the subnets; loopback stays, so the
//! host can always resolve its guests. Others get REFUSED over UDP and a closed connection
//! over TCP.

use crate::iface;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// An IPv4 or IPv6 network, `ADDR/PREFIX` (a bare address is a single host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    pub fn new(addr: IpAddr, prefix: u8) -> Net {
        Net { addr, prefix }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not a network (ADDR/PREFIX or ADDR)");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Net { addr, prefix })
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The networks whose clients are answered.
#[derive(Debug, Clone)]
pub struct Acl {
    nets: Vec<Net>,
}

impl Acl {
    /// `configured` if given, else the subnets of the interfaces carrying a listen address;
    /// loopback in every case.
    pub fn new(configured: &[Net], listen: &[SocketAddr]) -> Acl {
        let mut nets = vec![
            Net::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
            Net::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
        ];
        if !configured.is_empty() {
            nets.extend_from_slice(configured);
        } else {
            let interfaces = iface::addresses();
            for l in listen {
                let mine = interfaces
                    .iter()
                    .filter(|a| l.ip().is_unspecified() || a.addr == l.ip())
                    .map(|a| Net::new(a.addr, a.prefix));
                nets.extend(mine);
            }
        }
        nets.dedup();
        Acl { nets }
    }

    pub fn admits(&self, ip: IpAddr) -> bool {
        // A dual-stack TCP listener sees IPv4 clients as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(ip))
    }
}

impl fmt::Display for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nets: Vec<String> = self.nets.iter().map(Net::to_string).collect();
        f.write_str(&nets.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_their_addresses() {
        let v4: Net = "192.168.122.0/24".parse().unwrap();
        assert!(v4.contains("192.168.122.77".parse().unwrap()));
        assert!(!v4.contains("192.168.123.1".parse().unwrap()));
        assert!(!v4.contains("::1".parse().unwrap()));
        let v6: Net = "fd00:122::/64".parse().unwrap();
        assert!(v6.contains("fd00:122::5".parse().unwrap()));
        let host: Net = "10.0.0.1".parse().unwrap();
        assert!(
            host.contains("10.0.0.1".parse().unwrap())
                && !host.contains("10.0.0.2".parse().unwrap())
        );
        assert!("10.0.0.0/33".parse::<Net>().is_err() && "x/8".parse::<Net>().is_err());
    }

    #[test]
    fn loopback_is_always_admitted_and_others_only_when_listed() {
        let acl = Acl::new(&["198.51.100.0/24".parse().unwrap()], &[]);
        assert!(acl.admits("127.0.0.1".parse().unwrap()) && acl.admits("::1".parse().unwrap()));
        assert!(acl.admits("198.51.100.9".parse().unwrap()));
        assert!(!acl.admits("203.0.113.9".parse().unwrap()));
        assert!(
            acl.admits("::ffff:198.51.100.9".parse().unwrap()),
            "IPv4-mapped"
        );
        let by_listen = Acl::new(&[], &["127.0.0.1:53".parse().unwrap()]);
        assert!(!by_listen.admits("203.0.113.9".parse().unwrap()));
    }
}
