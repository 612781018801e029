//! Where a name goes: the routing table built from the config, resolv.conf and split-domain
//! discovery, and the decision for one name (libvirt `<forwarder>` semantics).
//!
//! Order: local data and local-only domains (handled by `dns::local` before this), then plain
//! names when they may not leave, then the longest matching domain route (configured
//! forwarders before discovered split domains at equal length), then the default servers
//! (addr-only forwarders if any, else resolv.conf).

use crate::config::DnsConfig;
use crate::dns::local::{is_single_label, is_within};
use crate::dns::upstream::Upstream;
use crate::dns::upstream::UpstreamPool;
use crate::resolv_conf::ResolvConf;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A server list, shared by the table and every route taken from it (no copy per query).
pub(crate) type Servers = Arc<[Arc<Upstream>]>;

/// Where a domain route came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteSource {
    /// `[[dns.forwarder]]` with domain and addr.
    Forwarder,
    /// Known to the servers listed, by the SOA probe of a resolv.conf search domain.
    Discovered,
}

/// The servers for a domain and every name under it.
#[derive(Debug, Clone)]
pub struct DomainRoute {
    /// The domain, lower-cased, without the trailing dot.
    pub domain: Arc<str>,
    /// Its servers, in order.
    pub servers: Servers,
    /// Where the route came from.
    pub source: RouteSource,
}

/// Where the default server list came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultSource {
    /// Forwarders with only an addr, which replace resolv.conf.
    Forwarders,
    /// The host's resolv.conf (path), in its order.
    ResolvConf(Arc<Path>),
}

impl fmt::Display for DefaultSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DefaultSource::Forwarders => write!(f, "config forwarders"),
            DefaultSource::ResolvConf(p) => write!(f, "resolv.conf order ({})", p.display()),
        }
    }
}

/// How to walk a server list (resolv.conf `options`, and the route's scope).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkOptions {
    /// How many times the server list is walked (`options attempts:`).
    pub attempts: u32,
    /// Each walk starts one server further along (`options rotate`).
    pub rotate: bool,
    /// glibc's per-try timeout (`options timeout:`): no attempt waits longer than this.
    pub timeout_cap: Duration,
    /// The servers were chosen for the name's own domain, so every one of them serves it.
    pub scoped: bool,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            attempts: 2,
            rotate: false,
            timeout_cap: Duration::from_secs(5),
            scoped: false,
        }
    }
}

/// An immutable routing snapshot, swapped whole when resolv.conf or discovery changes it.
#[derive(Debug, Clone)]
pub struct RoutingTable {
    /// Longest domain first.
    pub(crate) domains: Vec<DomainRoute>,
    /// The default servers, in the host's order: never reordered.
    pub(crate) default: Servers,
    pub(crate) default_source: DefaultSource,
    pub(crate) forward_plain_names: bool,
    pub(crate) options: WalkOptions,
}

/// The decision for one name that local data did not answer.
#[derive(Debug, Clone)]
pub enum Route {
    /// Forward to these servers, in order.
    Forward {
        /// The servers, in order.
        servers: Servers,
        /// Which rule chose them.
        rule: Rule,
        /// How to walk them.
        options: WalkOptions,
    },
    /// A single-label name with `forward_plain_names = false`: NXDOMAIN, never forwarded.
    PlainNameStaysLocal,
}

/// Which rule picked the servers, for logs and `explain`; rendered only when displayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// A domain route: the domain, and where the route came from.
    Domain(Arc<str>, RouteSource),
    /// The default servers, and where they came from.
    Default(DefaultSource),
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Domain(d, RouteSource::Forwarder) => write!(f, "forwarder for domain {d}"),
            Rule::Domain(d, RouteSource::Discovered) => write!(
                f,
                "split domain {d} (discovered from the resolv.conf search list), its servers in resolv.conf order"
            ),
            Rule::Default(source) => source.fmt(f),
        }
    }
}

impl RoutingTable {
    /// A table from its domain routes (sorted here: longest domain first), the default servers,
    /// and how to treat plain names and walk the lists.
    pub fn new(
        mut domains: Vec<DomainRoute>,
        default: Vec<Arc<Upstream>>,
        default_source: DefaultSource,
        forward_plain_names: bool,
        options: WalkOptions,
    ) -> RoutingTable {
        // Stable sort: configured forwarders stay ahead of discovered routes of equal length.
        domains.sort_by_key(|r| {
            (
                std::cmp::Reverse(r.domain.len()),
                r.source == RouteSource::Discovered,
            )
        });
        RoutingTable {
            domains,
            default: default.into(),
            default_source,
            forward_plain_names,
            options,
        }
    }

    /// The route for `name` (lower-cased, dotted, no trailing dot).
    pub(crate) fn route(&self, name: &str) -> Route {
        if !self.forward_plain_names && is_single_label(name) {
            return Route::PlainNameStaysLocal;
        }
        if let Some(r) = self.domains.iter().find(|r| is_within(name, &r.domain)) {
            return Route::Forward {
                servers: r.servers.clone(),
                rule: Rule::Domain(r.domain.clone(), r.source),
                options: WalkOptions {
                    scoped: true,
                    ..self.options
                },
            };
        }
        Route::Forward {
            servers: self.default.clone(),
            rule: Rule::Default(self.default_source.clone()),
            options: self.options,
        }
    }

    /// Every server the table routes to.
    pub(crate) fn servers(&self) -> Vec<SocketAddr> {
        let mut all: Vec<SocketAddr> = self.default.iter().map(|s| s.addr).collect();
        for r in &self.domains {
            all.extend(r.servers.iter().map(|s| s.addr));
        }
        all.sort();
        all.dedup();
        all
    }

    /// Discovered routes replaced by `found`, configured ones kept. The default order is the
    /// host's and stays as it is.
    pub(crate) fn with_discovered(&self, found: Vec<DomainRoute>) -> RoutingTable {
        let mut domains: Vec<DomainRoute> = self
            .domains
            .iter()
            .filter(|r| r.source == RouteSource::Forwarder)
            .cloned()
            .collect();
        domains.extend(found);
        RoutingTable::new(
            domains,
            self.default.to_vec(),
            self.default_source.clone(),
            self.forward_plain_names,
            self.options,
        )
    }
}

/// True if forwarding to `server` would send queries back to ourselves.
pub(crate) fn is_own_address(server: SocketAddr, listen: &[SocketAddr]) -> bool {
    listen.iter().any(|l| {
        *l == server
            || (l.port() == server.port()
                && l.ip().is_unspecified()
                && (server.ip().is_loopback() || server.ip().is_unspecified()))
    })
}

impl RoutingTable {
    /// The table the config and the host's resolv.conf give: forwarders' domains, and the
    /// default servers (addr-only forwarders if any, else resolv.conf's, in its order). A
    /// server that is one of virtdns's own listen addresses is refused (it would loop).
    pub(crate) fn from_config(
        dns: &DnsConfig,
        listen: &[SocketAddr],
        pool: &UpstreamPool,
        resolv: &ResolvConf,
    ) -> RoutingTable {
        let usable = |addr: SocketAddr| {
            if is_own_address(addr, listen) {
                tracing::error!(%addr, "refusing to forward to virtdns's own listen address (it would loop)");
                false
            } else {
                true
            }
        };
        let mut domains = Vec::new();
        let mut defaults = Vec::new();
        for f in &dns.forwarders {
            let servers: Vec<_> = f
                .addrs
                .iter()
                .map(|a| a.0)
                .filter(|a| usable(*a))
                .map(|a| pool.get(a))
                .collect();
            match &f.domain {
                Some(d) if !f.addrs.is_empty() => domains.push(DomainRoute {
                    domain: d.0.as_str().into(),
                    servers: servers.into(),
                    source: RouteSource::Forwarder,
                }),
                Some(_) => {} // local only: handled by LocalNames
                None => defaults.extend(servers),
            }
        }
        let (default, source, options) = if dns.forwarders_replace_resolv_conf() {
            (defaults, DefaultSource::Forwarders, WalkOptions::default())
        } else {
            if resolv.uses_resolved_stub() {
                tracing::info!(
                    "resolv.conf lists the systemd-resolved stub 127.0.0.53; forwarding to it"
                );
            }
            let servers = resolv
                .nameservers
                .iter()
                .copied()
                .filter(|a| usable(*a))
                .map(|a| pool.get(a))
                .collect();
            let options = WalkOptions {
                attempts: resolv.attempts,
                rotate: resolv.rotate,
                timeout_cap: Duration::from_secs(resolv.timeout_secs.into()),
                scoped: false,
            };
            (
                servers,
                DefaultSource::ResolvConf(dns.resolv_conf.as_path().into()),
                options,
            )
        };
        RoutingTable::new(domains, default, source, dns.forward_plain_names, options)
    }
}

impl fmt::Display for RoutingTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |servers: &[Arc<Upstream>]| {
            servers
                .iter()
                .map(|s| s.addr.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(f, "domain routes (longest suffix wins):")?;
        if self.domains.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for r in &self.domains {
            let source = match r.source {
                RouteSource::Forwarder => "config forwarder",
                RouteSource::Discovered => "discovered split domain",
            };
            writeln!(f, "  {} -> {} [{source}]", r.domain, list(&r.servers))?;
        }
        writeln!(f, "default upstreams, in order [{}]:", self.default_source)?;
        if self.default.is_empty() {
            writeln!(f, "  (none: names outside local data get SERVFAIL)")?;
        }
        for s in self.default.iter() {
            let stub = if s.addr.ip() == crate::resolv_conf::RESOLVED_STUB {
                " (systemd-resolved stub)"
            } else {
                ""
            };
            writeln!(f, "  {}{stub}", s.addr)?;
        }
        writeln!(
            f,
            "attempts {}, rotate {}, timeout cap {:?}, forward plain names {}",
            self.options.attempts,
            self.options.rotate,
            self.options.timeout_cap,
            self.forward_plain_names
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::upstream::UpstreamPool;

    fn table(forward_plain: bool) -> RoutingTable {
        let pool = UpstreamPool::new((Duration::from_millis(200), Duration::from_secs(2)));
        let s = |a: &str| vec![pool.get(a.parse().unwrap())];
        let route = |d: &str, a: &str, source| DomainRoute {
            domain: d.into(),
            servers: s(a).into(),
            source,
        };
        RoutingTable::new(
            vec![
                route("corp.example", "10.0.0.1:53", RouteSource::Discovered),
                route("dev.corp.example", "10.0.0.2:53", RouteSource::Forwarder),
                route("corp.example", "10.0.0.3:53", RouteSource::Forwarder),
            ],
            s("10.0.0.9:53"),
            DefaultSource::ResolvConf(Path::new("/etc/resolv.conf").into()),
            forward_plain,
            WalkOptions::default(),
        )
    }

    fn first_server(t: &RoutingTable, name: &str) -> String {
        match t.route(name) {
            Route::Forward { servers, .. } => servers[0].addr.to_string(),
            Route::PlainNameStaysLocal => "local".into(),
        }
    }

    #[test]
    fn longest_suffix_wins_and_config_beats_discovery() {
        let t = table(true);
        let cases = [
            ("a.dev.corp.example", "10.0.0.2:53"),
            ("dev.corp.example", "10.0.0.2:53"),
            ("www.corp.example", "10.0.0.3:53"),
            ("corp.example", "10.0.0.3:53"),
            ("notcorp.example", "10.0.0.9:53"),
            ("example", "10.0.0.9:53"),
        ];
        for (name, want) in cases {
            assert_eq!(first_server(&t, name), want, "{name}");
        }
    }

    #[test]
    fn escaped_dots_are_not_label_boundaries() {
        let t = table(false);
        assert_eq!(first_server(&t, "printer\\.lan"), "local");
        assert_eq!(first_server(&t, "x\\.corp.example"), "10.0.0.9:53");
        assert_eq!(first_server(&t, "x\\\\.corp.example"), "10.0.0.3:53");
    }

    #[test]
    fn plain_names_stay_local_when_asked() {
        assert_eq!(first_server(&table(false), "printer"), "local");
        assert_eq!(first_server(&table(true), "printer"), "10.0.0.9:53");
        assert_eq!(first_server(&table(false), "a.b"), "10.0.0.9:53");
    }
}
