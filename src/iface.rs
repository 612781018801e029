//! The machine's interface addresses, read with getifaddrs(3): the DHCP interface's IPv4
//! address and subnet, and the subnets DNS answers by default (`dns::acl`).
//! Written by hand (through libc) because none of our dependencies lists interface addresses,
//! and a netlink crate would be a large dependency for a read at start.

use crate::sys;
use crate::types::{Net, Subnet};
use std::net::{IpAddr, Ipv4Addr};

/// An interface's IPv4 address, and the subnet it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceAddr {
    /// The address.
    pub addr: Ipv4Addr,
    /// The subnet (the address's network and prefix length).
    pub subnet: Subnet,
}

/// One address of one interface, with its prefix length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub(crate) interface: String,
    pub(crate) addr: IpAddr,
    pub(crate) prefix: u8,
}

/// Every IPv4 and IPv6 address of every interface.
pub(crate) fn addresses() -> Vec<Address> {
    let Ok(list) = sys::InterfaceAddresses::read() else {
        return Vec::new();
    };
    list.iter()
        .map(|(name, addr, prefix)| Address {
            interface: name.to_string_lossy().into_owned(),
            addr,
            prefix,
        })
        .collect()
}

/// The first IPv4 address of `name`, or None if it has none (or does not exist).
pub(crate) fn ipv4_of(name: &str) -> Option<InterfaceAddr> {
    addresses().into_iter().find_map(|a| match a.addr {
        IpAddr::V4(v4) if a.interface == name => Some(InterfaceAddr {
            addr: v4,
            subnet: Subnet::new(v4, a.prefix),
        }),
        _ => None,
    })
}

/// The networks virtdns serves: those of the interfaces carrying a listen address (every
/// interface's when listening on 0.0.0.0 or ::). Loopback counts only when listened on.
pub(crate) fn served_networks(listen: &[std::net::SocketAddr], interfaces: &[Address]) -> Vec<Net> {
    let mut nets: Vec<Net> = Vec::new();
    for l in listen {
        let mine = interfaces
            .iter()
            .filter(|a| l.ip().is_unspecified() || a.addr == l.ip())
            .map(|a| Net::new(a.addr, a.prefix));
        for n in mine {
            if !nets.contains(&n) {
                nets.push(n);
            }
        }
    }
    nets
}

/// An interface as DHCP serves it: its index (new each time the interface is created) and
/// its IPv4 address. When either changes, sockets bound to it must be bound again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub(crate) index: u32,
    /// Its IPv4 address.
    pub v4: InterfaceAddr,
}

/// The interface called `name`, if it exists and has an IPv4 address.
pub fn link(name: &str) -> Option<Link> {
    let c_name = std::ffi::CString::new(name).ok()?;
    let index = sys::if_nametoindex(&c_name);
    let v4 = ipv4_of(name)?;
    (index != 0).then_some(Link { index, v4 })
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_has_its_address() {
        let lo = super::ipv4_of("lo").expect("lo has 127.0.0.1");
        assert_eq!(lo.addr, std::net::Ipv4Addr::LOCALHOST);
        assert_eq!(lo.subnet.prefix(), 8);
        assert!(super::ipv4_of("no-such-interface0").is_none());
        assert!(super::link("lo").is_some_and(|l| l.index > 0 && l.v4 == lo));
        assert!(super::link("no-such-interface0").is_none());
    }
}
