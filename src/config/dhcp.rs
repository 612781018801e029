//! The `[dhcp]` section: interface, ranges, options handed to guests, static hosts, and the
//! lease database. Checks that need only the file happen while it is parsed; checks against
//! the interface's actual subnet happen when the DHCP server starts (`dhcp::server`).

use crate::types::{DomainName, Mac, Subnet};
use serde::Deserialize;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The `[dhcp]` section: the interface served, its ranges, the options handed to guests,
/// static hosts and the lease database.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawDhcp")]
pub struct DhcpConfig {
    /// The interface served: the network's bridge.
    pub interface: String,
    pub(crate) ranges: Vec<Range>,
    pub(crate) lease_time_secs: u32,
    /// Option 3; default: the interface's address.
    pub(crate) router: Option<Ipv4Addr>,
    /// Option 6; default: virtdns's address on the interface.
    pub(crate) dns_servers: Vec<Ipv4Addr>,
    /// Option 15; default: the DNS local domain.
    pub(crate) domain: Option<DomainName>,
    /// Option 119; default: the domain.
    pub(crate) search: Vec<DomainName>,
    pub(crate) hosts: Vec<StaticHost>,
    pub(crate) max_leases: usize,
    /// The SQLite lease database.
    pub lease_db: PathBuf,
    /// UDP ports: 67 and 68 unless testing.
    pub(crate) server_port: u16,
    pub(crate) client_port: u16,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDhcp {
    /// Required unless `[libvirt]` names a network (then: its bridge).
    #[serde(default)]
    interface: String,
    #[serde(default, rename = "range")]
    ranges: Vec<Range>,
    #[serde(default = "default_lease_time")]
    lease_time_secs: u32,
    router: Option<Ipv4Addr>,
    #[serde(default)]
    dns_servers: Vec<Ipv4Addr>,
    domain: Option<DomainName>,
    #[serde(default)]
    search: Vec<DomainName>,
    #[serde(default, rename = "host")]
    hosts: Vec<StaticHost>,
    #[serde(default = "default_max_leases")]
    max_leases: usize,
    /// Default: one database per interface, so two networks never share one.
    lease_db: Option<PathBuf>,
    #[serde(default = "default_server_port")]
    server_port: u16,
    #[serde(default = "default_client_port")]
    client_port: u16,
}

fn default_lease_time() -> u32 {
    3600
}
fn default_max_leases() -> usize {
    4096
}
/// Where the leases of the network on `interface` live unless `lease_db` says otherwise.
pub fn default_lease_db(interface: &str) -> PathBuf {
    PathBuf::from(format!("/var/lib/virtdns/{interface}.leases.sqlite"))
}
fn default_server_port() -> u16 {
    67
}
fn default_client_port() -> u16 {
    68
}

/// A range of addresses to hand out, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawRange")]
pub struct Range {
    /// The first address of the range.
    pub start: Ipv4Addr,
    /// The last address of the range.
    pub end: Ipv4Addr,
    /// The subnet the range serves; default: the interface's. Required for ranges served
    /// through a relay (matched against giaddr or option 118).
    pub subnet: Option<Subnet>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRange {
    start: Ipv4Addr,
    end: Ipv4Addr,
    subnet: Option<Subnet>,
}

impl TryFrom<RawRange> for Range {
    type Error = String;
    fn try_from(r: RawRange) -> Result<Self, String> {
        if u32::from(r.start) > u32::from(r.end) {
            return Err(format!(
                "range start {} is after its end {}",
                r.start, r.end
            ));
        }
        if let Some(net) = r.subnet {
            for a in [r.start, r.end] {
                if !net.contains(a) {
                    return Err(format!("range address {a} is outside its subnet {net}"));
                }
            }
        }
        Ok(Range {
            start: r.start,
            end: r.end,
            subnet: r.subnet,
        })
    }
}

impl Range {
    pub(crate) fn contains(&self, a: Ipv4Addr) -> bool {
        (u32::from(self.start)..=u32::from(self.end)).contains(&u32::from(a))
    }
    fn overlaps(&self, other: &Range) -> bool {
        self.contains(other.start) || self.contains(other.end) || other.contains(self.start)
    }
}

/// A guest known by MAC: a fixed address, a name, or both.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticHost {
    /// The guest's MAC.
    pub mac: Mac,
    /// Its fixed address, if it has one.
    pub address: Option<Ipv4Addr>,
    /// Its host name, if it has one.
    pub name: Option<DomainName>,
}

impl TryFrom<RawDhcp> for DhcpConfig {
    type Error = String;
    fn try_from(raw: RawDhcp) -> Result<Self, String> {
        if raw.ranges.is_empty() {
            return Err("[dhcp] needs at least one [[dhcp.range]]".into());
        }
        for (i, a) in raw.ranges.iter().enumerate() {
            for b in &raw.ranges[i + 1..] {
                if a.overlaps(b) {
                    return Err(format!(
                        "ranges {}-{} and {}-{} overlap",
                        a.start, a.end, b.start, b.end
                    ));
                }
            }
        }
        if raw.lease_time_secs < 60 {
            return Err(format!(
                "lease_time_secs {} is below 60",
                raw.lease_time_secs
            ));
        }
        for (i, h) in raw.hosts.iter().enumerate() {
            if h.address.is_none() && h.name.is_none() {
                return Err(format!(
                    "static host {} needs an address, a name, or both",
                    h.mac
                ));
            }
            for other in &raw.hosts[i + 1..] {
                if other.mac == h.mac {
                    return Err(format!("static host {} is listed twice", h.mac));
                }
                if other.address.is_some() && other.address == h.address {
                    return Err(format!(
                        "static hosts {} and {} share the address {}",
                        h.mac,
                        other.mac,
                        h.address.unwrap()
                    ));
                }
            }
        }
        let lease_db = raw
            .lease_db
            .unwrap_or_else(|| default_lease_db(&raw.interface));
        Ok(DhcpConfig {
            interface: raw.interface,
            ranges: raw.ranges,
            lease_time_secs: raw.lease_time_secs,
            router: raw.router,
            dns_servers: raw.dns_servers,
            domain: raw.domain,
            search: raw.search,
            hosts: raw.hosts,
            max_leases: raw.max_leases,
            lease_db,
            server_port: raw.server_port,
            client_port: raw.client_port,
        })
    }
}

impl DhcpConfig {
    /// Checks the ranges and static hosts against the interface's subnet; the message names
    /// what is wrong.
    pub fn check_against(&self, iface: Subnet, server: Ipv4Addr) -> Result<(), String> {
        for r in &self.ranges {
            let net = r.subnet.unwrap_or(iface);
            for a in [r.start, r.end] {
                if !net.contains(a) {
                    return Err(format!(
                        "range {}-{} is outside the subnet {net} of interface {}",
                        r.start, r.end, self.interface
                    ));
                }
            }
            if r.contains(net.network()) || r.contains(net.broadcast()) {
                return Err(format!(
                    "range {}-{} includes the network or broadcast address of {net}",
                    r.start, r.end
                ));
            }
        }
        for h in &self.hosts {
            if let Some(a) = h.address {
                let inside = self
                    .ranges
                    .iter()
                    .any(|r| r.subnet.unwrap_or(iface).contains(a));
                if !inside && !iface.contains(a) {
                    return Err(format!(
                        "static host {} address {a} is outside every subnet served",
                        h.mac
                    ));
                }
                if a == server {
                    return Err(format!(
                        "static host {} address {a} is the server's own",
                        h.mac
                    ));
                }
            }
        }
        Ok(())
    }
}
