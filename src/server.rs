//! One virtdns instance: builds local names and routes from the config, the host's resolv.conf
//! and hosts files, keeps them current as those files change, and runs the listeners.
//! The caller owns the sockets (`bind`), so tests can start a server on any port in-process.

use crate::config::DnsConfig;
use crate::dns::acl::Acl;
use crate::dns::discover::{self, Probe};
use crate::dns::forward::Forwarder;
use crate::dns::listener::{self, TcpLimits};
use crate::dns::local::LocalNames;
use crate::dns::resolver::Resolver;
use crate::dns::router::{DefaultSource, DomainRoute, RoutingTable};
use crate::dns::upstream::{KNOWLEDGE_TTL, UpstreamPool};
use crate::hosts::HostsEntry;
use crate::resolv_conf::ResolvConf;
use crate::watch;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpListener;

/// How long each SOA probe of split-domain discovery may take.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(1);
/// How often discovery runs again while some server did not answer its probe.
const REDISCOVERY_INTERVAL: Duration = Duration::from_secs(30);
/// How often the rediscovery loop looks for a recovered server.
const RECOVERY_CHECK: Duration = Duration::from_millis(250);

#[derive(Debug, Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub struct Server {
    dns: DnsConfig,
    listen: Vec<SocketAddr>,
    resolver: Arc<Resolver>,
    pool: UpstreamPool,
    state: Mutex<State>,
    /// Bumped on every resolv.conf change, so stale discovery results are not applied.
    generation: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Guests' names from DHCP, as hosts entries.
    guests: Vec<HostsEntry>,
    resolv: ResolvConf,
    probes: Vec<Probe>,
}

impl Server {
    /// Builds the server from settings; reads resolv.conf and hosts files once.
    pub fn new(dns: DnsConfig, listen: Vec<SocketAddr>) -> Server {
        let pool = UpstreamPool::new(dns.timeout_bounds());
        let forwarder = Forwarder::new(pool.clone(), dns.cache_size, dns.max_inflight);
        let local = LocalNames::from_config(&dns, &[]);
        let resolv = ResolvConf::read(&dns.resolv_conf).unwrap_or_default();
        let routes = RoutingTable::from_config(&dns, &listen, &pool, &resolv);
        let acl = Acl::new(&dns.allow, &listen, &crate::iface::addresses());
        let resolver = Arc::new(Resolver::new(acl, local, routes, forwarder));
        Server {
            dns,
            listen,
            resolver,
            pool,
            state: Mutex::new(State {
                resolv,
                ..Default::default()
            }),
            generation: AtomicU64::new(0),
        }
    }

    pub fn resolver(&self) -> &Arc<Resolver> {
        &self.resolver
    }

    /// What `check` prints: local domains, routes, discovered split domains.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let local_domains: Vec<String> = self
            .dns
            .domain
            .iter()
            .map(|d| d.0.clone())
            .chain(self.dns.local_only_domains())
            .collect();
        out.push_str(&format!(
            "listen: {}\n",
            self.listen
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        out.push_str(&format!(
            "local-only domains (never forwarded): {}\n",
            if local_domains.is_empty() {
                "(none)".to_string()
            } else {
                local_domains.join(", ")
            }
        ));
        out.push_str(&format!("static records: {}\n", self.dns.records.len()));
        out.push_str(&format!("clients answered: {}\n", self.resolver.acl()));
        out.push_str(&self.resolver.routes().to_string());
        let state = self.state.lock().unwrap();
        if state.resolv.uses_resolved_stub() {
            out.push_str(
                "note: resolv.conf lists the systemd-resolved stub 127.0.0.53; forwarding to it\n",
            );
        }
        for p in &state.probes {
            out.push_str(&format!("{p}\n"));
        }
        out.push_str("what is known of each upstream:\n");
        for u in self.upstreams() {
            out.push_str(&format!("  {u}\n"));
        }
        out
    }

    /// Probes what kind of server each upstream is (see `dns::probe`), and waits for it.
    pub async fn learn_upstreams(&self) {
        let routes = self.resolver.routes();
        let mut servers: Vec<_> = routes.default.to_vec();
        for r in &routes.domains {
            servers.extend(r.servers.iter().cloned());
        }
        self.resolver.forwarder().learn_now(&servers).await;
    }

    /// Split-domain discovery and the upstream probes, side by side. Returns the discovery
    /// probes.
    pub async fn learn(&self) -> Vec<Probe> {
        tokio::join!(self.discover(), self.learn_upstreams()).0
    }

    /// Every upstream with what is known of it, in address order.
    pub fn upstreams(&self) -> Vec<Arc<crate::dns::upstream::Upstream>> {
        self.pool.all()
    }

    /// Probes the search domains and applies the routes found. Returns the probes.
    pub async fn discover(&self) -> Vec<Probe> {
        let generation = self.generation.load(Ordering::SeqCst);
        let (domains, servers) = {
            let state = self.state.lock().unwrap();
            let routes = self.resolver.routes();
            let local = self.resolver.local();
            // The network's own domains are never asked about upstream.
            let search: Vec<String> = state
                .resolv
                .search
                .iter()
                .filter(|d| local.local_domain_of(d).is_none())
                .cloned()
                .collect();
            (search, routes.default.to_vec())
        };
        if !self.dns.discover_split_domains
            || domains.is_empty()
            || servers.len() < 2
            || self.resolver.routes().default_source == DefaultSource::Forwarders
        {
            return Vec::new();
        }
        let forwarder = self.resolver.forwarder();
        let probes =
            discover::discover(forwarder.exchanger(), &domains, &servers, DISCOVERY_TIMEOUT).await;
        if self.generation.load(Ordering::SeqCst) == generation {
            for p in &probes {
                tracing::info!("{p}");
            }
            let found: Vec<DomainRoute> = probes.iter().filter_map(|p| p.route.clone()).collect();
            let routes = self.resolver.routes().with_discovered(found);
            self.resolver.set_routes(routes);
            self.state.lock().unwrap().probes = probes.clone();
        }
        probes
    }

    /// Rereads resolv.conf; keeps the last good list if it is gone or lists no usable server.
    /// Returns true when the routes changed.
    pub fn reload_resolv_conf(&self) -> bool {
        let path = &self.dns.resolv_conf;
        let Some(resolv) = ResolvConf::read(path) else {
            tracing::warn!(path = %path.display(), "resolv.conf unreadable or gone; keeping the last good server list");
            return false;
        };
        let routes = RoutingTable::from_config(&self.dns, &self.listen, &self.pool, &resolv);
        if routes.default.is_empty() && routes.default_source != DefaultSource::Forwarders {
            tracing::warn!(path = %path.display(), "resolv.conf lists no usable nameserver; keeping the last good server list");
            return false;
        }
        let mut state = self.state.lock().unwrap();
        if state.resolv == resolv {
            return false;
        }
        tracing::info!(path = %path.display(), servers = ?resolv.nameservers, search = ?resolv.search, "resolv.conf changed; using the new servers");
        self.generation.fetch_add(1, Ordering::SeqCst);
        state.resolv = resolv;
        state.probes.clear();
        self.resolver.set_routes(routes);
        true
    }

    pub fn reload_local(&self) {
        let guests = self.state.lock().unwrap().guests.clone();
        self.resolver
            .set_local(LocalNames::from_config(&self.dns, &guests));
        tracing::info!("local names rebuilt");
    }

    /// Publishes DHCP guests' names (`label.domain`, with PTR) and rebuilds local names.
    pub fn set_guest_names(&self, domain: Option<&str>, names: &[(String, Ipv4Addr)]) {
        let entries = names
            .iter()
            .map(|(label, addr)| HostsEntry {
                addr: IpAddr::V4(*addr),
                names: vec![match domain {
                    Some(d) => format!("{label}.{d}"),
                    None => label.clone(),
                }],
            })
            .collect();
        self.state.lock().unwrap().guests = entries;
        self.reload_local();
    }

    /// Binds UDP and TCP on every listen address.
    pub async fn bind(
        listen: &[SocketAddr],
    ) -> Result<(Vec<std::net::UdpSocket>, Vec<TcpListener>), StartError> {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for &addr in listen {
            let err = |source| StartError::Bind { addr, source };
            // One UDP socket per core (SO_REUSEPORT): the kernel spreads clients over them
            // and each is served by its own task.
            let first = reuseport_udp(addr).map_err(err)?;
            let bound = first.local_addr().map_err(err)?;
            udp.push(first);
            for _ in 1..workers {
                udp.push(reuseport_udp(bound).map_err(err)?);
            }
            tcp.push(TcpListener::bind(bound).await.map_err(err)?);
        }
        Ok((udp, tcp))
    }

    /// Serves until `shutdown` completes.
    pub async fn run(
        self: Arc<Self>,
        udp: Vec<std::net::UdpSocket>,
        tcp: Vec<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) {
        let udp_workers = listener::UdpWorkers::start(udp, self.resolver.clone());
        let mut tasks = tokio::task::JoinSet::new();
        let limits = TcpLimits {
            max_connections: self.dns.tcp_max_connections,
            idle_timeout: Duration::from_millis(self.dns.tcp_idle_timeout_ms),
        };
        for l in tcp {
            tasks.spawn(listener::serve_tcp(l, self.resolver.clone(), limits));
        }
        self.spawn_watchers(&mut tasks);
        let this = self.clone();
        tasks.spawn(async move { this.keep_learning().await });
        shutdown.await;
        tasks.abort_all();
        udp_workers.stop();
    }

    /// Discovery and probes at start; the probes again every `KNOWLEDGE_TTL`; discovery again
    /// every `REDISCOVERY_INTERVAL` while some server did not answer its probe, and at once
    /// when a down server comes back.
    async fn keep_learning(&self) {
        self.learn().await;
        let mut last_run = tokio::time::Instant::now();
        let mut last_learned = last_run;
        let mut recoveries = self.pool.recoveries();
        let mut tick = tokio::time::interval(RECOVERY_CHECK);
        loop {
            tick.tick().await;
            let incomplete = self
                .state
                .lock()
                .unwrap()
                .probes
                .iter()
                .any(Probe::incomplete);
            if last_learned.elapsed() >= KNOWLEDGE_TTL {
                last_learned = tokio::time::Instant::now();
                self.learn_upstreams().await;
            }
            let recovered = self.pool.recoveries() != recoveries;
            if incomplete && (recovered || last_run.elapsed() >= REDISCOVERY_INTERVAL) {
                recoveries = self.pool.recoveries();
                last_run = tokio::time::Instant::now();
                self.discover().await;
            }
        }
    }

    fn spawn_watchers(self: &Arc<Self>, tasks: &mut tokio::task::JoinSet<()>) {
        if !self.dns.forwarders_replace_resolv_conf() {
            let this = self.clone();
            let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
            tasks.spawn(watch::watch_files(
                vec![self.dns.resolv_conf.clone()],
                move || {
                    let _ = tx.try_send(());
                },
            ));
            tasks.spawn(async move {
                while rx.recv().await.is_some() {
                    if this.reload_resolv_conf() {
                        this.learn().await;
                    }
                }
            });
        }
        if !self.dns.no_hosts && !self.dns.hosts.is_empty() {
            let this = self.clone();
            tasks.spawn(watch::watch_files(self.dns.hosts.clone(), move || {
                this.reload_local()
            }));
        }
    }
}

fn reuseport_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}
