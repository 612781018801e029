//! The TOML configuration file: its schema, defaults and validation.
//!
//! Every value is checked while it is deserialized, so a mistake is reported by the TOML
//! parser with the file, line and problem (`ConfigError`), and virtdns refuses to start
//! rather than run half-configured.

use crate::types::{DomainName, ServerAddr};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// Where virtdns listens when neither the config nor the command line says.
/// Where DNS listens without configuration: loopback, on a port that needs no privilege and
/// that no common service takes (5353 is mDNS, which avahi-daemon holds on most desktops).
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:5300";

/// A configuration problem, located in its file.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a value in it is wrong.
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line the problem is on, counted from 1.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// The configuration file (virtdns.toml(5)): one section per service.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The `[dns]` section; its defaults when absent.
    #[serde(default)]
    pub dns: DnsConfig,
    /// DHCPv4 service; absent means no DHCP.
    pub dhcp: Option<DhcpConfig>,
    /// Publishing guests' names to an organisation's DNS (RFC 2136); absent means none.
    pub publish: Option<PublishConfig>,
    /// The libvirt network this instance serves, whose definition fills `[dns]`.
    pub(crate) libvirt: Option<LibvirtConfig>,
    /// The Prometheus endpoint; absent means none.
    pub(crate) metrics: Option<MetricsConfig>,
    /// What `[libvirt]` settled when the config was loaded (not a key of the file).
    #[serde(skip)]
    pub(crate) network: Option<LibvirtNetwork>,
}

/// The `[dns]` section: where to listen, whom to answer, where to forward and what to answer
/// locally.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Addresses to serve on; a bare address means port 53.
    pub(crate) listen: Vec<ServerAddr>,
    /// Networks whose clients are answered (loopback always is); default: the subnets of the
    /// interfaces carrying a listen address.
    pub(crate) allow: Vec<crate::types::Net>,
    /// The host's resolver configuration, followed as it changes.
    pub(crate) resolv_conf: PathBuf,
    /// Hosts files answered locally, reloaded on change.
    pub(crate) hosts: Vec<PathBuf>,
    /// Ignore hosts files entirely.
    pub(crate) no_hosts: bool,
    /// The network's own domain: answered from local data only.
    pub(crate) domain: Option<DomainName>,
    /// When false, names without a dot are never forwarded.
    pub(crate) forward_plain_names: bool,
    /// Route each resolv.conf search domain to the nameserver authoritative for it.
    pub(crate) discover_split_domains: bool,
    /// Upper bound on cached answers.
    pub(crate) cache_size: usize,
    /// Upper bound on queries being forwarded at once; beyond it clients get SERVFAIL.
    pub(crate) max_inflight: usize,
    /// Threads serving UDP clients, each with a socket of its own per listen address.
    pub(crate) threads: usize,
    /// TTL of answers built from local data.
    pub(crate) local_ttl: u32,
    /// Bounds of the per-attempt upstream timeout, which follows each server's RTT.
    pub(crate) min_timeout_ms: u64,
    pub(crate) max_timeout_ms: u64,
    /// Simultaneous TCP clients.
    pub(crate) tcp_max_connections: usize,
    /// A TCP connection without a query for this long is closed.
    pub(crate) tcp_idle_timeout_ms: u64,
    /// One log line per client query (`dns::querylog`); SIGUSR1 toggles it at run time.
    pub(crate) log_queries: bool,
    #[serde(rename = "forwarder")]
    pub(crate) forwarders: Vec<Forwarder>,
    #[serde(rename = "record")]
    pub(crate) records: Vec<StaticRecord>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            listen: Vec::new(),
            allow: Vec::new(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            hosts: vec![PathBuf::from("/etc/hosts")],
            no_hosts: false,
            domain: None,
            forward_plain_names: true,
            discover_split_domains: true,
            cache_size: 10_000,
            max_inflight: 4096,
            threads: 1,
            local_ttl: 0,
            min_timeout_ms: 200,
            max_timeout_ms: 2000,
            tcp_max_connections: 256,
            tcp_idle_timeout_ms: 10_000,
            log_queries: false,
            forwarders: Vec::new(),
            records: Vec::new(),
        }
    }
}

impl DnsConfig {
    /// Threads serving UDP clients (`[dns] threads`).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Forwarders with only an address replace resolv.conf as the default servers.
    pub(crate) fn forwarders_replace_resolv_conf(&self) -> bool {
        self.forwarders.iter().any(|f| f.domain.is_none())
    }

    /// Domains given as forwarders without an address: answered locally, never forwarded.
    pub(crate) fn local_only_domains(&self) -> impl Iterator<Item = String> + '_ {
        self.forwarders
            .iter()
            .filter(|f| f.addrs.is_empty())
            .filter_map(|f| f.domain.as_ref().map(|d| d.0.clone()))
    }

    pub(crate) fn timeout_bounds(&self) -> (Duration, Duration) {
        (
            Duration::from_millis(self.min_timeout_ms),
            Duration::from_millis(self.max_timeout_ms),
        )
    }
}

mod dhcp;
mod libvirt;
mod metrics;
mod publish;
pub use dhcp::{DhcpConfig, Range, StaticHost, default_lease_db};
pub(crate) use libvirt::{LibvirtConfig, LibvirtNetwork};
#[cfg(test)]
pub(crate) use metrics::DEFAULT_METRICS_LISTEN;
pub(crate) use metrics::MetricsConfig;
pub(crate) use publish::{KeyAlgorithm, PublishConfig};

/// One or several values: `addr = "x"` or `addr = ["x", "y"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

/// Deserialises `key = "x"` or `key = ["x", "y"]` into a list.
fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    OneOrMany::<T>::deserialize(d).map(Vec::from)
}

impl<T> From<OneOrMany<T>> for Vec<T> {
    fn from(v: OneOrMany<T>) -> Self {
        match v {
            OneOrMany::One(t) => vec![t],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A `[[dns.forwarder]]` entry, with libvirt's `<forwarder>` meaning.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawForwarder")]
pub(crate) struct Forwarder {
    pub(crate) domain: Option<DomainName>,
    pub(crate) addrs: Vec<ServerAddr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForwarder {
    domain: Option<DomainName>,
    addr: Option<OneOrMany<ServerAddr>>,
}

impl TryFrom<RawForwarder> for Forwarder {
    type Error = String;
    fn try_from(raw: RawForwarder) -> Result<Self, String> {
        let addrs: Vec<ServerAddr> = raw.addr.map(Vec::from).unwrap_or_default();
        if raw.domain.is_none() && addrs.is_empty() {
            return Err("a forwarder needs a domain, an addr, or both".into());
        }
        Ok(Forwarder {
            domain: raw.domain,
            addrs,
        })
    }
}

/// A `[[dns.record]]` entry: a static record served from local data.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawRecord")]
pub struct StaticRecord {
    /// The owner name.
    pub name: DomainName,
    /// The record's type and data.
    pub data: RecordData,
}

/// The type and data of a static record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    /// An IPv4 address.
    A(std::net::Ipv4Addr),
    /// An IPv6 address.
    Aaaa(std::net::Ipv6Addr),
    /// The canonical name of an alias.
    Cname(DomainName),
    /// The name an address points to.
    Ptr(DomainName),
    /// Text: its character strings.
    Txt(Vec<String>),
    /// A mail exchanger.
    Mx {
        /// Lower is preferred.
        preference: u16,
        /// The mail server's name.
        exchange: DomainName,
    },
    /// A service's location (RFC 2782).
    Srv {
        /// Lower is tried first.
        priority: u16,
        /// The relative share among records of equal priority.
        weight: u16,
        /// The service's port.
        port: u16,
        /// The host providing the service.
        target: DomainName,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecord {
    name: DomainName,
    #[serde(rename = "type")]
    rtype: String,
    value: OneOrMany<String>,
}

impl TryFrom<RawRecord> for StaticRecord {
    type Error = String;
    fn try_from(raw: RawRecord) -> Result<Self, String> {
        let values: Vec<String> = raw.value.into();
        let one = || -> Result<&str, String> {
            match values.as_slice() {
                [v] => Ok(v.as_str()),
                _ => Err(format!("a {} record takes one value", raw.rtype)),
            }
        };
        let bad = |what: &str| format!("{} record value: {what}", raw.rtype.to_uppercase());
        let fields = |n: usize| -> Result<Vec<&str>, String> {
            let f: Vec<&str> = one()?.split_whitespace().collect();
            if f.len() == n {
                Ok(f)
            } else {
                Err(bad(&format!("expected {n} fields")))
            }
        };
        let number = |s: &str| {
            s.parse::<u16>()
                .map_err(|_| bad(&format!("'{s}' is not a number")))
        };
        let data = match raw.rtype.to_ascii_uppercase().as_str() {
            "A" => RecordData::A(one()?.parse().map_err(|_| bad("not an IPv4 address"))?),
            "AAAA" => RecordData::Aaaa(one()?.parse().map_err(|_| bad("not an IPv6 address"))?),
            "CNAME" => RecordData::Cname(one()?.parse()?),
            "PTR" => RecordData::Ptr(one()?.parse()?),
            "TXT" => RecordData::Txt(values.clone()),
            "MX" => {
                let f = fields(2)?;
                RecordData::Mx {
                    preference: number(f[0])?,
                    exchange: f[1].parse()?,
                }
            }
            "SRV" => {
                let f = fields(4)?;
                RecordData::Srv {
                    priority: number(f[0])?,
                    weight: number(f[1])?,
                    port: number(f[2])?,
                    target: f[3].parse()?,
                }
            }
            other => {
                return Err(format!(
                    "record type '{other}' is not supported (A, AAAA, CNAME, TXT, SRV, MX, PTR)"
                ));
            }
        };
        Ok(StaticRecord {
            name: raw.name,
            data,
        })
    }
}

impl Config {
    /// Parses config text; `path` only labels errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1))
                .unwrap_or(1);
            let line = match e.span() {
                // A span starting right after a newline belongs to the next line.
                Some(s) if text[..s.start.min(text.len())].ends_with('\n') => line + 1,
                _ => line,
            };
            ConfigError::Invalid {
                path: path.to_owned(),
                line,
                message: e.message().trim().to_string(),
            }
        })?;
        config.check_cross_fields(text, path)?;
        Ok(config)
    }

    /// Reads and checks the file at `path`, then applies the libvirt network it names.
    pub(crate) fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::parse(&text, path)?;
        libvirt::apply(&mut config, &text, path)?;
        Ok(config)
    }

    /// The settings of `next` that differ from this configuration's and that only a start
    /// applies: sockets bound and parts built once (the listen addresses and UDP threads, the
    /// cache and the forwarder's limit, the TCP listeners' limits, the name publisher, the metrics
    /// endpoint).
    pub(crate) fn changes_awaiting_restart(&self, next: &Config) -> Vec<&'static str> {
        let (now, then) = (&self.dns, &next.dns);
        [
            ("[dns] listen", now.listen != then.listen),
            ("[dns] cache_size", now.cache_size != then.cache_size),
            ("[dns] max_inflight", now.max_inflight != then.max_inflight),
            ("[dns] threads", now.threads != then.threads),
            (
                "[dns] tcp_max_connections",
                now.tcp_max_connections != then.tcp_max_connections,
            ),
            (
                "[dns] tcp_idle_timeout_ms",
                now.tcp_idle_timeout_ms != then.tcp_idle_timeout_ms,
            ),
            ("[publish]", self.publish != next.publish),
            ("[metrics]", self.metrics != next.metrics),
        ]
        .into_iter()
        .filter_map(|(setting, changed)| changed.then_some(setting))
        .collect()
    }

    /// The zone guests' names are published in: `[publish] zone`, else the DHCP domain.
    pub(crate) fn publish_zone(&self) -> Option<&DomainName> {
        let publish = self.publish.as_ref()?;
        publish
            .zone
            .as_ref()
            .or_else(|| self.dhcp.as_ref()?.domain.as_ref())
            .or(self.dns.domain.as_ref())
    }

    fn check_cross_fields(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            line: line_of_key(text, key),
            message,
        };
        if self.dhcp.as_ref().is_some_and(|d| d.interface.is_empty()) && self.libvirt.is_none() {
            return Err(invalid(
                "[dhcp]",
                "[dhcp] needs an interface (or a [libvirt] network, whose bridge it then is)"
                    .into(),
            ));
        }
        if let Some(publish) = &self.publish {
            if self.dhcp.is_none() {
                return Err(invalid(
                    "[publish]",
                    "[publish] publishes DHCP's guests: it needs a [dhcp] section".into(),
                ));
            }
            if publish.servers.is_empty() {
                return Err(invalid(
                    "server",
                    "[publish] needs at least one server".into(),
                ));
            }
            if self.publish_zone().is_none() {
                return Err(invalid(
                    "[publish]",
                    "[publish] needs a zone (or a [dhcp] or [dns] domain to use as one)".into(),
                ));
            }
        }
        let dns = &self.dns;
        if dns.min_timeout_ms == 0 || dns.min_timeout_ms > dns.max_timeout_ms {
            return Err(invalid(
                "min_timeout_ms",
                format!(
                    "min_timeout_ms ({}) must be above 0 and at most max_timeout_ms ({})",
                    dns.min_timeout_ms, dns.max_timeout_ms
                ),
            ));
        }
        if dns.max_inflight == 0 {
            return Err(invalid(
                "max_inflight",
                "max_inflight must be at least 1".into(),
            ));
        }
        if !(1..=MAX_THREADS).contains(&dns.threads) {
            return Err(invalid(
                "threads",
                format!("threads must be 1 to {MAX_THREADS}, not {}", dns.threads),
            ));
        }
        Ok(())
    }
}

/// Most UDP threads `[dns] threads` may ask for: each costs a thread, a socket per listen
/// address and an upstream epoll set, in every virtdns on the host (one per network).
const MAX_THREADS: usize = 64;

/// The line where `key = ...` is set, or where the table `[key]` opens (1 if not found).
fn line_of_key(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            if key.starts_with('[') {
                return l.starts_with(key);
            }
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(1, |i| i + 1)
}

#[cfg(test)]
mod tests;
