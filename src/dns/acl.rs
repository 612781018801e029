//! Which clients DNS answers (RFC 5358: a forwarder must not be an open resolver). By default:
//! loopback, and the subnets of the interfaces that carry a listen address (every interface's
//! when listening on 0.0.0.0 or ::). `[dns] allow` replaces the subnets; loopback stays, so the
//! host can always resolve its guests. Others get REFUSED over UDP and a closed connection
//! over TCP.

use crate::iface;
use crate::types::Net;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The networks whose clients are answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    nets: Vec<Net>,
}

impl Acl {
    /// `configured` if given, else the subnets of the interfaces carrying a listen address;
    /// loopback in every case.
    pub fn new(configured: &[Net], listen: &[SocketAddr], interfaces: &[iface::Address]) -> Acl {
        let mut nets = vec![
            Net::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
            Net::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
        ];
        if !configured.is_empty() {
            nets.extend_from_slice(configured);
        } else {
            nets.extend(iface::served_networks(listen, interfaces));
        }
        nets.dedup();
        Acl { nets }
    }

    pub(crate) fn admits(&self, ip: IpAddr) -> bool {
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
    fn loopback_is_always_admitted_and_others_only_when_listed() {
        let acl = Acl::new(&["198.51.100.0/24".parse().unwrap()], &[], &[]);
        assert!(acl.admits("127.0.0.1".parse().unwrap()) && acl.admits("::1".parse().unwrap()));
        assert!(acl.admits("198.51.100.9".parse().unwrap()));
        assert!(!acl.admits("203.0.113.9".parse().unwrap()));
        assert!(
            acl.admits("::ffff:198.51.100.9".parse().unwrap()),
            "IPv4-mapped"
        );
        let lo = iface::Address {
            interface: "lo".into(),
            addr: "127.0.0.1".parse().unwrap(),
            prefix: 8,
        };
        let br = iface::Address {
            interface: "virbr0".into(),
            addr: "192.168.122.1".parse().unwrap(),
            prefix: 24,
        };
        let by_listen = Acl::new(&[], &["127.0.0.1:53".parse().unwrap()], &[lo, br.clone()]);
        assert!(!by_listen.admits("203.0.113.9".parse().unwrap()));
        assert!(!by_listen.admits("192.168.122.7".parse().unwrap()));
        let on_bridge = Acl::new(&[], &["192.168.122.1:53".parse().unwrap()], &[br]);
        assert!(on_bridge.admits("192.168.122.7".parse().unwrap()));
        assert!(!by_listen.admits("203.0.113.9".parse().unwrap()));
    }
}
