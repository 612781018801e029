//! Value types shared by the configuration, DNS and DHCP: networks, subnets, MAC addresses,
//! domain names and server addresses. A leaf: nothing here imports from the crate, so
//! `config`, `iface`, `dns::acl` and `dhcp` all depend downward on it. Each type parses from
//! the text a person writes (with an error that says what was expected) and deserialises
//! from it. Network arithmetic is `ipnet`'s.

use ipnet::{IpNet, Ipv4Net};
use serde::Deserialize;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

/// Implements `Deserialize` through `FromStr`, so a config value's error is the type's own.
macro_rules! deserialize_from_str {
    ($t:ty) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// An IPv4 or IPv6 network, `ADDR/PREFIX`; a bare address is a single host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net(IpNet);

impl Net {
    pub(crate) fn new(addr: IpAddr, prefix: u8) -> Net {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        Net(IpNet::new(addr, prefix.min(max)).expect("prefix within the family's length"))
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }

    /// The network address (host bits cleared).
    pub(crate) fn network(&self) -> IpAddr {
        self.0.network()
    }

    pub(crate) fn prefix(&self) -> u8 {
        self.0.prefix_len()
    }
}

impl FromStr for Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not a network (ADDR/PREFIX or ADDR)");
        match s.split_once('/') {
            Some(_) => s.parse::<IpNet>().map(Net).map_err(|_| bad()),
            None => s
                .parse::<IpAddr>()
                .map(|a| Net(IpNet::from(a)))
                .map_err(|_| bad()),
        }
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An IPv4 subnet, `ADDR/PREFIX`, held as its network address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet(Ipv4Net);

impl Subnet {
    pub(crate) fn new(addr: Ipv4Addr, prefix: u8) -> Subnet {
        Subnet(
            Ipv4Net::new(addr, prefix.min(32))
                .expect("prefix at most 32")
                .trunc(),
        )
    }
    pub(crate) fn network(&self) -> Ipv4Addr {
        self.0.network()
    }
    #[cfg(test)]
    pub(crate) fn prefix(&self) -> u8 {
        self.0.prefix_len()
    }
    pub(crate) fn mask(&self) -> Ipv4Addr {
        self.0.netmask()
    }
    pub(crate) fn broadcast(&self) -> Ipv4Addr {
        self.0.broadcast()
    }
    pub(crate) fn contains(&self, a: Ipv4Addr) -> bool {
        self.0.contains(&a)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Subnet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let net: Ipv4Net = s
            .parse()
            .map_err(|_| format!("'{s}' is not a subnet (ADDR/PREFIX)"))?;
        Ok(Subnet::new(net.addr(), net.prefix_len()))
    }
}

/// A MAC address, `aa:bb:cc:dd:ee:ff` (or with dashes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not a MAC address");
        let bytes: Vec<u8> = s
            .split([':', '-'])
            .map(|h| u8::from_str_radix(h, 16))
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        <[u8; 6]>::try_from(bytes).map(Mac).map_err(|_| bad())
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// A domain name, stored lower-cased and dotted without the trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainName(pub String);

impl DomainName {
    /// The first label (`guest1` of `guest1.vm.test`).
    pub(crate) fn first_label(&self) -> &str {
        self.0.split('.').next().unwrap_or(&self.0)
    }

    /// The name a host is published under: its first label, as a host label (`my_vm` is
    /// published as `myvm`, as a DHCP client asking for it would be).
    pub(crate) fn host_label(&self) -> Option<String> {
        host_label(self.first_label())
    }
}

/// A host name usable as one DNS label: letters, digits and inner hyphens, lower-case, at
/// most 63 characters; None if nothing is left.
pub(crate) fn host_label(s: &str) -> Option<String> {
    let label: String = s
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(63)
        .collect();
    let label = label.trim_matches('-').to_string();
    (!label.is_empty()).then_some(label)
}

impl FromStr for DomainName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let name = s.trim_end_matches('.').to_ascii_lowercase();
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if valid {
            Ok(DomainName(name))
        } else {
            Err(format!("'{s}' is not a valid domain name"))
        }
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `ADDR` or `ADDR:PORT` (`[v6]:PORT` for IPv6); a bare address means port 53.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ServerAddr(pub(crate) SocketAddr);

impl FromStr for ServerAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(ServerAddr(sa));
        }
        s.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .map(|ip| ServerAddr(SocketAddr::new(ip, 53)))
            .map_err(|_| format!("'{s}' is not an address (ADDR or ADDR:PORT, [IPv6]:PORT)"))
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

deserialize_from_str!(Net);
deserialize_from_str!(Subnet);
deserialize_from_str!(Mac);
deserialize_from_str!(DomainName);
deserialize_from_str!(ServerAddr);

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
        assert!(host.contains("10.0.0.1".parse().unwrap()));
        assert!(!host.contains("10.0.0.2".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Net>().is_err() && "x/8".parse::<Net>().is_err());
    }

    #[test]
    fn a_subnet_is_held_as_its_network() {
        let s: Subnet = "192.168.122.1/24".parse().unwrap();
        assert_eq!(s.to_string(), "192.168.122.0/24");
        assert_eq!(s.mask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(s.broadcast(), Ipv4Addr::new(192, 168, 122, 255));
        assert!(s.contains(Ipv4Addr::new(192, 168, 122, 200)));
        assert_eq!(
            Subnet::new(Ipv4Addr::new(10, 1, 2, 3), 0).to_string(),
            "0.0.0.0/0"
        );
        assert!("192.168.122.1".parse::<Subnet>().is_err());
    }

    #[test]
    fn names_macs_and_server_addresses_parse_as_written() {
        assert_eq!(
            "Corp.Example.".parse::<DomainName>().unwrap().0,
            "corp.example"
        );
        assert!("a..b".parse::<DomainName>().is_err());
        assert_eq!(
            "guest1.vm.test"
                .parse::<DomainName>()
                .unwrap()
                .first_label(),
            "guest1"
        );
        let underscored: DomainName = "my_vm.vm.test".parse().unwrap();
        assert_eq!(underscored.host_label().as_deref(), Some("myvm"));
        assert_eq!(host_label("-Guest_1-").as_deref(), Some("guest1"));
        assert_eq!(host_label("__"), None);
        let mac: Mac = "52-54-00-AA-bb-01".parse().unwrap();
        assert_eq!(mac.to_string(), "52:54:00:aa:bb:01");
        assert!("52:54:00".parse::<Mac>().is_err());
        assert_eq!("10.0.0.1".parse::<ServerAddr>().unwrap().0.port(), 53);
        assert_eq!("[::1]:5300".parse::<ServerAddr>().unwrap().0.port(), 5300);
        assert_eq!("::1".parse::<ServerAddr>().unwrap().0.port(), 53);
    }
}
