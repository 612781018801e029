//! Reverse names (RFC 1035 3.5 in-addr.arpa, RFC 3596 ip6.arpa) and the reverse zones virtdns
//! answers itself, never forwarding them:
//!
//! - the reverse zones of the networks it serves (the guests' addresses: PTR for the names it
//!   knows, NXDOMAIN for the rest — the host's upstreams know nothing of them);
//! - the zones of RFC 6303 whose answer is the same everywhere (loopback, "this network",
//!   link-local, the documentation ranges, the broadcast address, ::, ::1, fe80::/10,
//!   2001:db8::/32): answering them here changes no answer the host would get, and keeps
//!   the queries off the network.
//!
//! The private ranges of RFC 6303 (10/8, 172.16/12, 192.168/16, fd00::/8) other than the
//! served networks are forwarded on purpose: a home router or a company's DNS answers PTR for
//! its own LAN there, and the host gets those answers (the parity rule).

use crate::types::Net;
use std::net::IpAddr;

/// RFC 6303 zones whose answer is NXDOMAIN wherever asked.
pub(crate) const RFC6303_ALWAYS_LOCAL: &[&str] = &[
    "0.in-addr.arpa",
    "127.in-addr.arpa",
    "254.169.in-addr.arpa",
    "2.0.192.in-addr.arpa",
    "100.51.198.in-addr.arpa",
    "113.0.203.in-addr.arpa",
    "255.255.255.255.in-addr.arpa",
    "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
    "8.e.f.ip6.arpa",
    "9.e.f.ip6.arpa",
    "a.e.f.ip6.arpa",
    "b.e.f.ip6.arpa",
    "8.b.d.0.1.0.0.2.ip6.arpa",
];

/// The in-addr.arpa / ip6.arpa name of an address, dotted without the trailing dot.
pub(crate) fn reverse_name(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

/// The reverse zones that cover `net`: zones end on label boundaries (8 bits for IPv4, 4 for
/// IPv6), so a /20 is covered by its sixteen /24 zones and a /12 by its sixteen /16 zones
/// (at most 256); a network narrower than a boundary, such as a /25, by the enclosing zone.
pub(crate) fn zones_of(net: Net) -> Vec<String> {
    let (step, bits) = match net.network() {
        IpAddr::V4(_) => (8u8, 32u8),
        IpAddr::V6(_) => (4u8, 128u8),
    };
    let prefix = net.prefix();
    let up = prefix.div_ceil(step) * step;
    let down = prefix / step * step;
    // Finer zones for a network a few bits wider than a boundary (a /20 is sixteen /24s);
    // the enclosing zone for one narrower than a boundary (a /25 is answered as its /24).
    let boundary = if up - prefix <= 8 && up < bits {
        up
    } else {
        down
    };
    let count = 1u32 << (boundary - prefix.min(boundary));
    let labels = (boundary / step) as usize;
    (0..count)
        .map(|i| {
            let addr = add_at(net.network(), i, boundary);
            let full = reverse_name(addr);
            let parts: Vec<&str> = full.split('.').collect();
            let keep = parts.len() - 2 - labels; // drop the host labels, keep arpa's two
            parts[keep..].join(".")
        })
        .collect()
}

/// `addr` plus `i` counted at bit position `boundary` (the first bit after the prefix).
fn add_at(addr: IpAddr, i: u32, boundary: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let shift = 32 - boundary as u32;
            let base = u32::from(v4);
            IpAddr::V4((base + (i.checked_shl(shift).unwrap_or(0))).into())
        }
        IpAddr::V6(v6) => {
            let shift = 128 - boundary as u32;
            let base = u128::from(v6);
            IpAddr::V6((base + ((i as u128).checked_shl(shift).unwrap_or(0))).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zones(net: &str) -> Vec<String> {
        zones_of(net.parse().unwrap())
    }

    #[test]
    fn reverse_zones_cover_a_network_on_label_boundaries() {
        assert_eq!(zones("192.168.122.0/24"), ["122.168.192.in-addr.arpa"]);
        assert_eq!(zones("10.0.0.0/8"), ["10.in-addr.arpa"]);
        assert_eq!(zones("192.168.0.0/16"), ["168.192.in-addr.arpa"]);
        let z = zones("192.168.96.0/20");
        assert_eq!(z.len(), 16);
        assert_eq!(z[0], "96.168.192.in-addr.arpa");
        assert_eq!(z[15], "111.168.192.in-addr.arpa");
        assert_eq!(zones("192.168.122.128/25"), ["122.168.192.in-addr.arpa"]);
        assert_eq!(
            zones("fd00:122::/64"),
            ["0.0.0.0.0.0.0.0.2.2.1.0.0.0.d.f.ip6.arpa"]
        );
        assert_eq!(zones("fd00:122::/62").len(), 4);
    }

    #[test]
    fn reverse_names_of_addresses() {
        assert_eq!(
            reverse_name("192.168.122.45".parse().unwrap()),
            "45.122.168.192.in-addr.arpa"
        );
        assert!(reverse_name("::1".parse().unwrap()).starts_with("1.0.0.0."));
    }
}
