//! A libvirt network definition (libvirt's `docs/formatnetwork.rst`, schema
//! `src/conf/schemas/network.rng`) read into a [`NetworkDef`]: the parts virtdns serves — name,
//! bridge, `<forward>` mode, `<domain>`, `<dns>` and each `<ip>` with its `<dhcp>`. Elements and
//! attributes virtdns has no use for are ignored, as are elements in other XML namespaces
//! (`<dnsmasq:options>`, `<metadata>` content).
//!
//! Where libvirt fills in a default, the value here is libvirt's: an IPv4 `<ip>` without
//! `netmask` or `prefix` gets its classful prefix and an IPv6 one /64
//! (`virSocketAddrGetIPPrefix`), a `<forward>` without `mode` is NAT, a `<lease>` without `unit`
//! counts minutes. IPv6 `<ip>` entries are kept; [`IpDef::is_ipv6`] flags them, since virtdns
//! serves DHCPv4 only.
//!
//! [`load`] reads the live definition, falling back to the persistent one. A live file is a
//! `<networkstatus>` holding the `<network>` next to libvirt's own bookkeeping (`<class_id>`,
//! `<floor>`, `<taint>`); files written by libvirt before that wrapper existed have `<network>` at
//! the root. libvirt's `virNetworkLoadState` (`src/conf/virnetworkobj.c`) accepts both, and so
//! does [`parse`].

use super::LibvirtPaths;
use crate::types::Mac;
use roxmltree::{Document, Node};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// A network definition, as far as virtdns serves it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkDef {
    pub(crate) name: String,
    /// `<bridge name=>`: always set in a live definition; possibly absent in a persistent one.
    pub(crate) bridge: Option<String>,
    /// `<forward mode=>`: `None` when there is no `<forward>` (an isolated network, whose
    /// dnsmasq forwards nothing); `"nat"` when `<forward>` has no mode.
    pub(crate) forward_mode: Option<String>,
    pub(crate) domain: Option<Domain>,
    pub(crate) dns: Dns,
    /// Every `<ip>`, in document order.
    pub(crate) ips: Vec<IpDef>,
}

/// `<domain name= localOnly= register=>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Domain {
    pub(crate) name: String,
    /// Names in the domain are never forwarded (dnsmasq's `local=/name/`).
    pub(crate) local_only: bool,
    /// libvirt registers the domain with systemd-resolved (since libvirt 10.1).
    pub(crate) register: bool,
}

/// `<dns>`; every field at its default when the element is absent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Dns {
    /// `enable=`: `Some(false)` turns libvirt's DNS server off; absent means on.
    pub(crate) enable: Option<bool>,
    /// `forwardPlainNames=`: `Some(false)` keeps names without a dot local; absent means yes.
    pub(crate) forward_plain_names: Option<bool>,
    pub(crate) forwarders: Vec<Forwarder>,
    pub(crate) hosts: Vec<DnsHost>,
    pub(crate) txts: Vec<Txt>,
    pub(crate) srvs: Vec<Srv>,
}

/// `<forwarder domain= addr=>`: at least one of the two is set. libvirt has no port for it: a
/// forwarder is always port 53.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Forwarder {
    pub(crate) domain: Option<String>,
    pub(crate) addr: Option<IpAddr>,
}

/// `<host ip=><hostname>…</hostname></host>` inside `<dns>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DnsHost {
    pub(crate) ip: IpAddr,
    /// At least one.
    pub(crate) hostnames: Vec<String>,
}

/// `<txt name= value=>`. libvirt passes `value` to dnsmasq's `txt-record=`, which splits it at
/// commas into several strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Txt {
    pub(crate) name: String,
    pub(crate) value: String,
}

/// `<srv service= protocol= domain= target= port= priority= weight=>` (RFC 2782); libvirt
/// prefixes service and protocol with `_`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Srv {
    pub(crate) service: String,
    pub(crate) protocol: String,
    /// Absent: the network's domain.
    pub(crate) domain: Option<String>,
    /// Absent or `.`: the service is not available (RFC 2782).
    pub(crate) target: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) priority: Option<u16>,
    pub(crate) weight: Option<u16>,
}

/// `<ip address= netmask=|prefix= family=>` and its `<dhcp>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IpDef {
    /// The bridge's address on this subnet.
    pub(crate) address: IpAddr,
    /// From `prefix`, or `netmask`, or libvirt's default for the address.
    pub(crate) prefix: u8,
    pub(crate) dhcp: Option<Dhcp>,
}

impl IpDef {
    /// IPv6 entries are kept for completeness; virtdns serves DHCPv4 only.
    pub(crate) fn is_ipv6(&self) -> bool {
        self.address.is_ipv6()
    }

    /// The address, when this is an IPv4 entry.
    pub(crate) fn ipv4(&self) -> Option<Ipv4Addr> {
        match self.address {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        }
    }
}

/// `<dhcp>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Dhcp {
    pub(crate) ranges: Vec<DhcpRange>,
    pub(crate) hosts: Vec<DhcpHost>,
}

/// `<range start= end=>` with its optional `<lease>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DhcpRange {
    pub(crate) start: IpAddr,
    pub(crate) end: IpAddr,
    pub(crate) lease: Option<LeaseTime>,
}

/// `<host mac= id= name= ip=>` inside `<dhcp>`. IPv4 hosts are known by `mac` (or by the
/// `name` the client sends); IPv6 ones by `id` (a DUID) or `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DhcpHost {
    pub(crate) mac: Option<[u8; 6]>,
    pub(crate) id: Option<String>,
    pub(crate) name: Option<String>,
    /// libvirt passes a host without an address to dnsmasq not at all.
    pub(crate) ip: Option<IpAddr>,
    pub(crate) lease: Option<LeaseTime>,
}

/// `<lease expiry= unit=>`: `expiry='0'` is an infinite lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseTime {
    Infinite,
    Seconds(u64),
}

/// A definition that could not be read, located in its file.
#[derive(Debug, Error)]
pub enum NetworkError {
    /// The name is not one a network may have.
    #[error("'{0}' is not a network name")]
    BadName(String),
    /// There is neither a live nor a persistent definition.
    #[error(
        "network {name} is not defined: neither {} nor {} exists",
        live.display(),
        persistent.display()
    )]
    NotFound {
        /// The network's name.
        name: String,
        /// The live definition looked for.
        live: PathBuf,
        /// The persistent definition looked for.
        persistent: PathBuf,
    },
    /// The definition could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: io::Error,
    },
    /// The definition is not well-formed XML, or says something unusable.
    #[error("{}:{line}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line the problem is on, counted from 1.
        line: u32,
        /// What is wrong.
        message: String,
    },
}

/// A definition read by [`load`], with the file it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The definition.
    pub def: NetworkDef,
    /// The file it was read from.
    pub path: PathBuf,
    /// Read from the live definition (the network is running).
    pub(crate) live: bool,
}

/// Reads network `name`'s live definition, or else its persistent one.
pub fn load(paths: &LibvirtPaths, name: &str) -> Result<Loaded, NetworkError> {
    // The name becomes a file name: no separators, nothing hidden or relative.
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\0']) {
        return Err(NetworkError::BadName(name.to_owned()));
    }
    let live = paths.live_definition(name);
    let persistent = paths.persistent_definition(name);
    for (path, is_live) in [(&live, true), (&persistent, false)] {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(NetworkError::Read {
                    path: path.clone(),
                    source,
                });
            }
        };
        let def = parse(&text, path)?;
        if def.name != name {
            return Err(NetworkError::Invalid {
                path: path.clone(),
                line: 1,
                message: format!("defines network '{}', not '{name}'", def.name),
            });
        }
        return Ok(Loaded {
            def,
            path: path.clone(),
            live: is_live,
        });
    }
    Err(NetworkError::NotFound {
        name: name.to_owned(),
        live,
        persistent,
    })
}

/// Parses a definition: `<network>` at the root, or wrapped in `<networkstatus>`. `path` only
/// labels errors.
pub(crate) fn parse(text: &str, path: &Path) -> Result<NetworkDef, NetworkError> {
    let doc = Document::parse(text).map_err(|e| NetworkError::Invalid {
        path: path.to_owned(),
        line: e.pos().row,
        message: format!("not well-formed XML: {e}"),
    })?;
    let cx = Cx { doc: &doc, path };
    let root = doc.root_element();
    let network = match root.tag_name().name() {
        "network" if is_plain(root) => root,
        "networkstatus" if is_plain(root) => child(root, "network")
            .ok_or_else(|| cx.invalid(root, "<networkstatus> holds no <network>".into()))?,
        other => {
            return Err(cx.invalid(
                root,
                format!("the root element is <{other}>, not <network> or <networkstatus>"),
            ));
        }
    };
    cx.network(network)
}

/// The document being read, to locate errors.
struct Cx<'a, 'input> {
    doc: &'a Document<'input>,
    path: &'a Path,
}

impl<'a, 'input> Cx<'a, 'input> {
    fn invalid(&self, node: Node, message: String) -> NetworkError {
        NetworkError::Invalid {
            path: self.path.to_owned(),
            line: self.doc.text_pos_at(node.range().start).row,
            message,
        }
    }

    fn network(&self, n: Node) -> Result<NetworkDef, NetworkError> {
        let name = child(n, "name")
            .and_then(|e| e.text())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| self.invalid(n, "<network> has no <name>".into()))?;
        let domain = match child(n, "domain") {
            Some(d) => Some(Domain {
                name: self.required(d, "name")?.to_owned(),
                local_only: self.yes_no(d, "localOnly")?.unwrap_or(false),
                register: self.yes_no(d, "register")?.unwrap_or(false),
            }),
            None => None,
        };
        let dns = match child(n, "dns") {
            Some(d) => self.dns(d)?,
            None => Dns::default(),
        };
        Ok(NetworkDef {
            name: name.to_owned(),
            bridge: child(n, "bridge")
                .and_then(|b| b.attribute("name"))
                .map(str::to_owned),
            forward_mode: child(n, "forward")
                .map(|f| f.attribute("mode").unwrap_or("nat").to_owned()),
            domain,
            dns,
            ips: children(n, "ip")
                .map(|ip| self.ip(ip))
                .collect::<Result<_, _>>()?,
        })
    }

    fn dns(&self, d: Node) -> Result<Dns, NetworkError> {
        let forwarders = children(d, "forwarder")
            .map(|f| {
                let fwd = Forwarder {
                    domain: f.attribute("domain").map(str::to_owned),
                    addr: self.ip_attr(f, "addr")?,
                };
                if fwd.domain.is_none() && fwd.addr.is_none() {
                    return Err(
                        self.invalid(f, "<forwarder> needs a domain, an addr, or both".into())
                    );
                }
                Ok(fwd)
            })
            .collect::<Result<_, _>>()?;
        let hosts = children(d, "host")
            .map(|h| {
                let ip = self.required_ip(h, "ip")?;
                let hostnames: Vec<String> = children(h, "hostname")
                    .filter_map(|e| e.text())
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                if hostnames.is_empty() {
                    return Err(self.invalid(h, format!("<host ip='{ip}'> has no <hostname>")));
                }
                Ok(DnsHost { ip, hostnames })
            })
            .collect::<Result<_, _>>()?;
        let txts = children(d, "txt")
            .map(|t| {
                Ok(Txt {
                    name: self.required(t, "name")?.to_owned(),
                    value: self.required(t, "value")?.to_owned(),
                })
            })
            .collect::<Result<_, _>>()?;
        let srvs = children(d, "srv")
            .map(|s| {
                Ok(Srv {
                    service: self.required(s, "service")?.to_owned(),
                    protocol: self.required(s, "protocol")?.to_owned(),
                    domain: s.attribute("domain").map(str::to_owned),
                    target: s.attribute("target").map(str::to_owned),
                    port: self.number(s, "port")?,
                    priority: self.number(s, "priority")?,
                    weight: self.number(s, "weight")?,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Dns {
            enable: self.yes_no(d, "enable")?,
            forward_plain_names: self.yes_no(d, "forwardPlainNames")?,
            forwarders,
            hosts,
            txts,
            srvs,
        })
    }

    fn ip(&self, ip: Node) -> Result<IpDef, NetworkError> {
        let address = self.required_ip(ip, "address")?;
        match (ip.attribute("family"), address) {
            (None | Some("ipv4"), IpAddr::V4(_)) | (Some("ipv6"), IpAddr::V6(_)) => {}
            (None | Some("ipv4"), IpAddr::V6(_)) | (Some("ipv6"), IpAddr::V4(_)) => {
                let family = ip.attribute("family").unwrap_or("ipv4 (the default)");
                return Err(self.invalid(
                    ip,
                    format!("<ip address='{address}'> does not match its family {family}"),
                ));
            }
            (Some(other), _) => {
                return Err(
                    self.invalid(ip, format!("<ip family='{other}'>: expected ipv4 or ipv6"))
                );
            }
        }
        let prefix = self.prefix(ip, address)?;
        let dhcp = match child(ip, "dhcp") {
            Some(d) => Some(self.dhcp(d, address)?),
            None => None,
        };
        Ok(IpDef {
            address,
            prefix,
            dhcp,
        })
    }

    /// `prefix=`, else `netmask=`, else libvirt's default (`virSocketAddrGetIPPrefix`): the
    /// classful prefix of an IPv4 address, 64 for IPv6. As there, `prefix='0'` counts as unset.
    fn prefix(&self, ip: Node, address: IpAddr) -> Result<u8, NetworkError> {
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match ip.attribute("prefix") {
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => Some(n).filter(|n| *n > 0),
                _ => {
                    return Err(self.invalid(
                        ip,
                        format!("<ip prefix='{p}'>: expected a number from 0 to {max}"),
                    ));
                }
            },
            None => None,
        };
        let netmask = match ip.attribute("netmask") {
            Some(_) if prefix.is_some() => {
                return Err(self.invalid(ip, "<ip> has both netmask and prefix".into()));
            }
            Some(m) => Some(self.netmask(ip, m, address)?),
            None => None,
        };
        if let Some(p) = prefix.or(netmask) {
            return Ok(p);
        }
        match address {
            IpAddr::V4(a) if a.is_unspecified() => Ok(0),
            IpAddr::V4(a) => match a.octets()[0] {
                0..=127 => Ok(8),
                128..=191 => Ok(16),
                192..=223 => Ok(24),
                _ => Err(self.invalid(
                    ip,
                    format!(
                        "<ip address='{a}'> has neither netmask nor prefix, and no classful default"
                    ),
                )),
            },
            IpAddr::V6(_) => Ok(64),
        }
    }

    fn netmask(&self, ip: Node, mask: &str, address: IpAddr) -> Result<u8, NetworkError> {
        if address.is_ipv6() {
            return Err(self.invalid(ip, "<ip netmask=> is for IPv4; IPv6 takes prefix".into()));
        }
        let bits = mask.trim().parse::<Ipv4Addr>().map(u32::from);
        match bits {
            Ok(b) if b.leading_ones() + b.trailing_zeros() == 32 => Ok(b.leading_ones() as u8),
            _ => Err(self.invalid(ip, format!("<ip netmask='{mask}'> is not a netmask"))),
        }
    }

    fn dhcp(&self, d: Node, subnet_addr: IpAddr) -> Result<Dhcp, NetworkError> {
        let same_family = |n: Node, a: IpAddr| {
            if a.is_ipv4() == subnet_addr.is_ipv4() {
                Ok(a)
            } else {
                Err(self.invalid(
                    n,
                    format!(
                        "<{}> address {a} is not of the family of <ip address='{subnet_addr}'>",
                        n.tag_name().name()
                    ),
                ))
            }
        };
        let ranges = children(d, "range")
            .map(|r| {
                Ok(DhcpRange {
                    start: same_family(r, self.required_ip(r, "start")?)?,
                    end: same_family(r, self.required_ip(r, "end")?)?,
                    lease: self.lease(r)?,
                })
            })
            .collect::<Result<_, _>>()?;
        let hosts = children(d, "host")
            .map(|h| {
                let mac = match h.attribute("mac") {
                    Some(m) => Some(
                        m.trim()
                            .parse::<Mac>()
                            .map_err(|_| {
                                self.invalid(h, format!("<host mac='{m}'> is not a MAC address"))
                            })?
                            .0,
                    ),
                    None => None,
                };
                let host = DhcpHost {
                    mac,
                    id: h.attribute("id").map(str::to_owned),
                    name: h.attribute("name").map(str::to_owned),
                    ip: match self.ip_attr(h, "ip")? {
                        Some(a) => Some(same_family(h, a)?),
                        None => None,
                    },
                    lease: self.lease(h)?,
                };
                if host.mac.is_none() && host.id.is_none() && host.name.is_none() {
                    return Err(self.invalid(h, "<host> needs a mac, an id or a name".into()));
                }
                Ok(host)
            })
            .collect::<Result<_, _>>()?;
        Ok(Dhcp { ranges, hosts })
    }

    /// `<lease expiry= unit=>` inside `<range>` or `<host>`; the unit defaults to minutes.
    fn lease(&self, parent: Node) -> Result<Option<LeaseTime>, NetworkError> {
        let Some(l) = child(parent, "lease") else {
            return Ok(None);
        };
        let expiry = self.required(l, "expiry")?;
        let n: u64 = expiry
            .trim()
            .parse()
            .map_err(|_| self.invalid(l, format!("<lease expiry='{expiry}'> is not a number")))?;
        let unit = match l.attribute("unit").unwrap_or("minutes") {
            "seconds" => 1,
            "minutes" => 60,
            "hours" => 3600,
            other => {
                return Err(self.invalid(
                    l,
                    format!("<lease unit='{other}'>: expected seconds, minutes or hours"),
                ));
            }
        };
        if n == 0 {
            return Ok(Some(LeaseTime::Infinite));
        }
        n.checked_mul(unit)
            .map(|s| Some(LeaseTime::Seconds(s)))
            .ok_or_else(|| self.invalid(l, format!("<lease expiry='{expiry}'> is too large")))
    }

    fn required<'n>(&self, n: Node<'n, '_>, attr: &str) -> Result<&'n str, NetworkError> {
        n.attribute(attr).ok_or_else(|| {
            self.invalid(
                n,
                format!("<{}> has no {attr} attribute", n.tag_name().name()),
            )
        })
    }

    fn required_ip(&self, n: Node, attr: &str) -> Result<IpAddr, NetworkError> {
        let v = self.required(n, attr)?;
        self.ip_value(n, attr, v)
    }

    fn ip_attr(&self, n: Node, attr: &str) -> Result<Option<IpAddr>, NetworkError> {
        n.attribute(attr)
            .map(|v| self.ip_value(n, attr, v))
            .transpose()
    }

    fn ip_value(&self, n: Node, attr: &str, v: &str) -> Result<IpAddr, NetworkError> {
        v.trim().parse().map_err(|_| {
            self.invalid(
                n,
                format!(
                    "<{} {attr}='{v}'> is not an IP address",
                    n.tag_name().name()
                ),
            )
        })
    }

    fn number(&self, n: Node, attr: &str) -> Result<Option<u16>, NetworkError> {
        let Some(v) = n.attribute(attr) else {
            return Ok(None);
        };
        v.trim().parse().map(Some).map_err(|_| {
            self.invalid(
                n,
                format!(
                    "<{} {attr}='{v}'>: expected a number from 0 to 65535",
                    n.tag_name().name()
                ),
            )
        })
    }

    fn yes_no(&self, n: Node, attr: &str) -> Result<Option<bool>, NetworkError> {
        match n.attribute(attr) {
            None => Ok(None),
            Some("yes") => Ok(Some(true)),
            Some("no") => Ok(Some(false)),
            Some(v) => Err(self.invalid(
                n,
                format!("<{} {attr}='{v}'>: expected yes or no", n.tag_name().name()),
            )),
        }
    }
}

/// An element in no namespace: libvirt's own, not an application's or dnsmasq's.
fn is_plain(n: Node) -> bool {
    n.is_element() && n.tag_name().namespace().is_none()
}

fn children<'a, 'input: 'a>(
    n: Node<'a, 'input>,
    name: &'a str,
) -> impl Iterator<Item = Node<'a, 'input>> + 'a {
    n.children()
        .filter(move |c| is_plain(*c) && c.tag_name().name() == name)
}

/// The first child element called `name`, as libvirt's XPath lookups take it.
fn child<'a, 'input: 'a>(n: Node<'a, 'input>, name: &'a str) -> Option<Node<'a, 'input>> {
    children(n, name).next()
}

#[cfg(test)]
mod tests;
