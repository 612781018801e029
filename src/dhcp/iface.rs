//! The interface DHCP serves: its IPv4 address and subnet, read with getifaddrs(3).
//! Written by hand (through libc) because none of our dependencies lists interface addresses,
//! and a netlink crate would be a large dependency for one read at start.

use crate::config::Subnet;
use std::ffi::CStr;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceAddr {
    pub addr: Ipv4Addr,
    pub subnet: Subnet,
}

/// The first IPv4 address of `name`, or None if it has none (or does not exist).
pub fn ipv4_of(name: &str) -> Option<InterfaceAddr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: cursor is a non-null node of the list getifaddrs returned.
        let ifa = unsafe { &*cursor };
        cursor = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_netmask.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let ifname = unsafe { CStr::from_ptr(ifa.ifa_name) };
        // SAFETY: ifa_addr is non-null; sa_family tells us which sockaddr it is.
        if ifname.to_bytes() != name.as_bytes()
            || unsafe { (*ifa.ifa_addr).sa_family } as i32 != libc::AF_INET
        {
            continue;
        }
        // SAFETY: both are AF_INET sockaddrs, so they are sockaddr_in.
        let (addr, mask) = unsafe {
            let a = &*(ifa.ifa_addr as *const libc::sockaddr_in);
            let m = &*(ifa.ifa_netmask as *const libc::sockaddr_in);
            (
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u32::from_be(m.sin_addr.s_addr),
            )
        };
        found = Some(InterfaceAddr {
            addr,
            subnet: Subnet::new(addr, mask.count_ones() as u8),
        });
        break;
    }
    // SAFETY: list came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    found
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_has_its_address() {
        let lo = super::ipv4_of("lo").expect("lo has 127.0.0.1");
        assert_eq!(lo.addr, std::net::Ipv4Addr::LOCALHOST);
        assert_eq!(lo.subnet.prefix, 8);
        assert!(super::ipv4_of("no-such-interface0").is_none());
    }
}
