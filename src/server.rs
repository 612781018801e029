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
use arc_swap::ArcSwap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long each SOA probe of split-domain discovery may take.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(1);
/// How often discovery runs again while some server did not answer its probe.
const REDISCOVERY_INTERVAL: Duration = Duration::from_secs(30);
/// How often the rediscovery loop looks for a recovered server.
const RECOVERY_CHECK: Duration = Duration::from_millis(250);

/// Why DNS could not start serving.
#[derive(Debug, Error)]
pub enum StartError {
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The listen address.
        addr: SocketAddr,
        /// The error binding it.
        source: std::io::Error,
    },
    /// Another DNS server holds the port.
    #[error(
        "cannot listen on {addr}: another DNS server holds the port: {holder} (for libvirt: \
         <dnsmasq:option value='port=0'/> in the network, or <dns enable='no'/>)"
    )]
    Taken {
        /// The listen address.
        addr: SocketAddr,
        /// The processes holding the port, as /proc shows them (`ports::holder_text`).
        holder: String,
    },
}

/// The DNS service: the resolver, its upstream servers, and the state that follows
/// resolv.conf, hosts files, interfaces and guests' names.
pub struct Server {
    /// The `[dns]` settings in force; replaced whole by `reload`.
    dns: ArcSwap<DnsConfig>,
    listen: Vec<SocketAddr>,
    resolver: Arc<Resolver>,
    pool: UpstreamPool,
    state: Mutex<State>,
    /// Bumped on every resolv.conf change, so stale discovery results are not applied.
    generation: AtomicU64,
    /// Bumped whenever guests' names change (the publisher follows it).
    names_changed: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    /// Guests' names from DHCP, as hosts entries.
    guests: Vec<HostsEntry>,
    resolv: ResolvConf,
    probes: Vec<Probe>,
    /// The networks served (their reverse zones are local), as the interfaces last showed.
    served: Vec<crate::types::Net>,
}

impl Server {
    /// Builds the server from settings; reads resolv.conf and hosts files once.
    pub fn new(dns: DnsConfig, listen: Vec<SocketAddr>) -> Server {
        let pool = UpstreamPool::new(dns.timeout_bounds());
        let forwarder = Forwarder::new(pool.clone(), dns.cache_size, dns.max_inflight);
        let served = crate::iface::served_networks(&listen, &crate::iface::addresses());
        let local = LocalNames::from_config(&dns, &[], &served);
        let resolv = ResolvConf::read(&dns.resolv_conf).unwrap_or_default();
        let routes = RoutingTable::from_config(&dns, &listen, &pool, &resolv);
        let acl = Acl::new(&dns.allow, &listen, &crate::iface::addresses());
        let resolver = Arc::new(Resolver::new(acl, local, routes, forwarder));
        Server {
            dns: ArcSwap::from_pointee(dns),
            listen,
            resolver,
            pool,
            state: Mutex::new(State {
                resolv,
                served,
                ..Default::default()
            }),
            generation: AtomicU64::new(0),
            names_changed: tokio::sync::watch::channel(0).0,
        }
    }

    /// The resolver that answers queries.
    pub fn resolver(&self) -> &Arc<Resolver> {
        &self.resolver
    }

    /// The `[dns]` settings in force.
    pub(crate) fn dns(&self) -> Arc<DnsConfig> {
        self.dns.load_full()
    }

    /// Applies new `[dns]` settings (SIGHUP): clients answered, local names and routes are
    /// rebuilt where their settings changed, and only then is the cache emptied. What only a
    /// start applies is named by `Config::changes_awaiting_restart`.
    pub(crate) fn reload(&self, dns: DnsConfig) {
        let old = self.dns();
        let local_changed = dns.domain != old.domain
            || dns.records != old.records
            || dns.hosts != old.hosts
            || dns.no_hosts != old.no_hosts
            || dns.local_ttl != old.local_ttl
            || dns.forwarders != old.forwarders;
        let routes_changed = dns.forwarders != old.forwarders
            || dns.resolv_conf != old.resolv_conf
            || dns.forward_plain_names != old.forward_plain_names
            || dns.discover_split_domains != old.discover_split_domains;
        self.dns.store(Arc::new(dns));
        self.refresh_interfaces();
        if local_changed {
            self.reload_local();
        }
        if routes_changed {
            let dns = self.dns();
            let resolv = ResolvConf::read(&dns.resolv_conf).unwrap_or_default();
            let routes = RoutingTable::from_config(&dns, &self.listen, &self.pool, &resolv);
            let mut state = self.state.lock().unwrap();
            self.generation.fetch_add(1, Ordering::SeqCst);
            state.resolv = resolv;
            state.probes.clear();
            self.apply_routes(routes);
        }
        tracing::info!(local_changed, routes_changed, "configuration reloaded");
    }

    /// Follows the interfaces as they are now: which clients are answered, and which
    /// networks are served (whose reverse zones are local). An interface that appeared or
    /// changed brings its subnet.
    pub(crate) fn refresh_interfaces(&self) {
        let dns = self.dns();
        let interfaces = crate::iface::addresses();
        let acl = Acl::new(&dns.allow, &self.listen, &interfaces);
        if acl != *self.resolver.acl() {
            tracing::info!(clients = %acl, "clients answered");
            self.resolver.set_acl(acl);
        }
        let served = crate::iface::served_networks(&self.listen, &interfaces);
        let changed = {
            let mut state = self.state.lock().unwrap();
            let changed = state.served != served;
            state.served = served;
            changed
        };
        if changed {
            self.reload_local();
        }
    }

    /// What `check` prints: local domains, routes, discovered split domains.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let dns = self.dns();
        let local_domains: Vec<String> = dns
            .domain
            .iter()
            .map(|d| d.0.clone())
            .chain(dns.local_only_domains())
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
        out.push_str(&format!("static records: {}\n", self.dns().records.len()));
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
    pub(crate) async fn learn_upstreams(&self) {
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
    pub(crate) async fn discover(&self) -> Vec<Probe> {
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
        if !self.dns().discover_split_domains
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
            self.apply_routes(routes);
            self.state.lock().unwrap().probes = probes.clone();
        }
        probes
    }

    /// Rereads resolv.conf; keeps the last good list if it is gone or lists no usable server.
    /// Returns true when the routes changed.
    pub(crate) fn reload_resolv_conf(&self) -> bool {
        let dns = self.dns();
        let path = &dns.resolv_conf;
        let Some(resolv) = ResolvConf::read(path) else {
            tracing::warn!(path = %path.display(), "resolv.conf unreadable or gone; keeping the last good server list");
            return false;
        };
        let routes = RoutingTable::from_config(&dns, &self.listen, &self.pool, &resolv);
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
        self.apply_routes(routes);
        true
    }

    /// Puts `routes` in force; servers no longer routed to leave the pool (and their probes
    /// stop).
    fn apply_routes(&self, routes: RoutingTable) {
        let servers = routes.servers();
        self.resolver.set_routes(routes);
        self.pool.retain(&servers);
    }

    pub(crate) fn reload_local(&self) {
        let (guests, served) = {
            let state = self.state.lock().unwrap();
            (state.guests.clone(), state.served.clone())
        };
        self.resolver
            .set_local(LocalNames::from_config(&self.dns(), &guests, &served));
        tracing::info!("local names rebuilt");
    }

    /// Publishes DHCP guests' names (`label.domain`, with PTR) and rebuilds local names.
    pub(crate) fn set_guest_names(&self, domain: Option<&str>, names: &[(String, Ipv4Addr)]) {
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
        self.names_changed.send_modify(|n| *n += 1);
    }

    /// Changes whenever guests' names do.
    pub(crate) fn guest_names_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.names_changed.subscribe()
    }

    /// Binds TCP and, for each of `threads` UDP workers, UDP on every listen address.
    pub async fn bind(
        listen: &[SocketAddr],
        threads: usize,
    ) -> Result<(Vec<std::net::UdpSocket>, Vec<TcpListener>), StartError> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for &addr in listen {
            let err = |source: std::io::Error| {
                if source.kind() == std::io::ErrorKind::AddrInUse {
                    StartError::Taken {
                        addr,
                        holder: crate::ports::holder_text(addr.port()),
                    }
                } else {
                    StartError::Bind { addr, source }
                }
            };
            // One UDP socket per worker (SO_REUSEPORT): the kernel spreads clients over them
            // and each is served by a thread of its own.
            let first = reuseport_udp(addr).map_err(err)?;
            let bound = first.local_addr().map_err(err)?;
            udp.push(first);
            for _ in 1..threads {
                udp.push(reuseport_udp(bound).map_err(err)?);
            }
            tcp.push(tcp_listener(bound).map_err(err)?);
        }
        Ok((udp, tcp))
    }

    /// Serves until `cancel` fires. Returns an error if a listener died: nothing serves on
    /// silently half-dead.
    pub(crate) async fn run(
        self: Arc<Self>,
        udp: Vec<std::net::UdpSocket>,
        tcp: Vec<TcpListener>,
        cancel: CancellationToken,
    ) -> Result<(), String> {
        let (udp_workers, mut udp_died) = listener::UdpWorkers::start(udp, self.resolver.clone());
        let mut tasks = tokio::task::JoinSet::new();
        let dns = self.dns();
        let limits = TcpLimits {
            max_connections: dns.tcp_max_connections,
            idle_timeout: Duration::from_millis(dns.tcp_idle_timeout_ms),
        };
        for l in tcp {
            tasks.spawn(listener::serve_tcp(l, self.resolver.clone(), limits));
        }
        self.spawn_watchers(&mut tasks);
        let this = self.clone();
        tasks.spawn(async move { this.keep_learning().await });
        let result = tokio::select! {
            _ = cancel.cancelled() => Ok(()),
            why = udp_died.recv() => Err(why.unwrap_or_else(|| "UDP listeners ended".into())),
            ended = tasks.join_next() => Err(match ended {
                Some(Err(e)) if e.is_panic() => format!("a DNS task panicked: {e}"),
                _ => "a DNS task ended".to_string(),
            }),
        };
        tasks.abort_all();
        udp_workers.stop();
        result
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

    /// Watches resolv.conf and the hosts files named by the settings in force (so a reload
    /// that names other files is followed too).
    fn spawn_watchers(self: &Arc<Self>, tasks: &mut tokio::task::JoinSet<()>) {
        let this = self.clone();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let paths = {
            let this = self.clone();
            move || {
                let dns = this.dns();
                if dns.forwarders_replace_resolv_conf() {
                    Vec::new()
                } else {
                    vec![dns.resolv_conf.clone()]
                }
            }
        };
        tasks.spawn(watch::watch_files(paths, move || {
            let _ = tx.try_send(());
        }));
        tasks.spawn(async move {
            while rx.recv().await.is_some() {
                if this.reload_resolv_conf() {
                    this.learn().await;
                }
            }
        });
        let this = self.clone();
        let paths = {
            let this = self.clone();
            move || {
                let dns = this.dns();
                if dns.no_hosts {
                    Vec::new()
                } else {
                    dns.hosts.clone()
                }
            }
        };
        tasks.spawn(watch::watch_files(paths, move || this.reload_local()));
    }
}

/// A socket for `addr` that may be bound before the address exists (IP_FREEBIND): a
/// libvirt bridge and its address come and go with the network, and a socket bound to the
/// address serves again as soon as it is back.
fn listen_socket(addr: SocketAddr, kind: socket2::Type) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let protocol = if kind == Type::DGRAM {
        Protocol::UDP
    } else {
        Protocol::TCP
    };
    let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
        socket.set_freebind_v6(true)?;
    } else {
        socket.set_freebind_v4(true)?;
    }
    Ok(socket)
}

/// Receive buffer asked for on each DNS UDP socket: room for bursts (a flood of garbage, a
/// guest booting with many lookups) while a worker is busy; the kernel default (208 KiB)
/// dropped 0.1 % of queries in a soak with garbage bursts.
const UDP_RECV_BUFFER: usize = 4 << 20;

fn reuseport_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = listen_socket(addr, socket2::Type::DGRAM)?;
    crate::ports::set_receive_buffer(&socket, UDP_RECV_BUFFER)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

fn tcp_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = listen_socket(addr, socket2::Type::STREAM)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}
