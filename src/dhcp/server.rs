//! The running DHCP service: receives on the configured interface, decides under the pool
//! lock, makes lease changes durable (group commit) and only then replies, expires leases,
//! and publishes guest names to DNS through a watch channel.

use crate::config::{DhcpConfig, DnsConfig};
use crate::dhcp::pool::ClientId;
use crate::dhcp::pool::Pool;
use crate::dhcp::rfc2131::Logged;
use crate::dhcp::rfc2131::{self, Offerings};
use crate::dhcp::socket;
use crate::dhcp::store::{self, Change, LeaseLog, Store, StoreError};
use crate::iface;
use crate::libvirt::{StatusLease, write_status};
use crate::metrics::shard::Direction;
use crate::types::Subnet;
use dhcproto::{Decodable, Decoder, Encodable};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, watch};
use tokio_util::task::AbortOnDropHandle;

const EXPIRY_INTERVAL: Duration = Duration::from_secs(30);
/// Lease changes closer together than this share one status file write.
const STATUS_COALESCE: Duration = Duration::from_millis(100);

#[derive(Debug, Error)]
pub(crate) enum DhcpError {
    #[error("[dhcp] interface {0} has no IPv4 address (or does not exist)")]
    NoInterface(String),
    #[error("[dhcp] {0}")]
    Invalid(String),
    #[error(
        "[dhcp] another DHCP server already serves {interface} (port {port}): {holder}; \
         refusing to share the network with it (for libvirt: remove <dhcp> from the network)"
    )]
    Taken {
        interface: String,
        port: u16,
        holder: String,
    },
    #[error("[dhcp] cannot listen on {interface} port {port}: {source}")]
    Bind {
        interface: String,
        port: u16,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Published guest names: (label, address), under the DHCP domain.
pub(crate) type Names = Vec<(String, Ipv4Addr)>;

pub(crate) struct DhcpServer {
    pool: Mutex<Pool>,
    store: Store,
    offerings: Offerings,
    interface: String,
    client_port: u16,
    socket: UdpSocket,
    names: watch::Sender<Names>,
    bad_input: Mutex<RateLimit>,
    /// libvirt's lease status file, rewritten after lease changes (`status_changed`).
    status_file: Option<PathBuf>,
    status_changed: Notify,
    /// Guest names changed: `names_loop` publishes them again (a burst of changes is one
    /// rebuild, off the lease writer that sends the ACKs).
    names_changed: Notify,
    /// When the expiry loop wakes next (Unix seconds), and how to wake it sooner.
    expiry_wake: AtomicU64,
    expiry_changed: Notify,
    /// Dropped last, after the socket: whoever waits for the service to let go of its port
    /// waits for this (`closed`), not for the last reference, which another thread (the lease
    /// writer's last continuation) may still be dropping.
    dropped: watch::Sender<()>,
}

/// The current Unix time in seconds (0 for a clock set before 1970).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl DhcpServer {
    /// Checks the config against the interface, restores leases, binds the socket.
    pub(crate) fn start(
        cfg: &DhcpConfig,
        dns: &DnsConfig,
        listen: &[SocketAddr],
        status_file: Option<PathBuf>,
    ) -> Result<DhcpServer, DhcpError> {
        let here = iface::ipv4_of(&cfg.interface)
            .ok_or_else(|| DhcpError::NoInterface(cfg.interface.clone()))?;
        cfg.check_against(here.subnet, here.addr)
            .map_err(DhcpError::Invalid)?;
        let ranges: Vec<(crate::config::Range, Subnet)> = cfg
            .ranges
            .iter()
            .map(|r| (*r, r.subnet.unwrap_or(here.subnet)))
            .collect();
        let mut pool = Pool::new(ranges, &cfg.hosts, here.addr, cfg.max_leases);
        let conn = store::open(&cfg.lease_db)?;
        let t = now();
        let leases: Vec<_> = store::load(&conn)?
            .into_iter()
            .filter(|l| l.expires > t)
            .collect();
        let stored = leases.len();
        let left_out = pool.restore(leases);
        tracing::info!(count = stored - left_out, left_out, db = %cfg.lease_db.display(), "leases restored");
        let domain = cfg
            .domain
            .as_ref()
            .or(dns.domain.as_ref())
            .map(|d| d.0.clone());
        let search = if cfg.search.is_empty() {
            domain.iter().cloned().collect()
        } else {
            cfg.search.iter().map(|d| d.0.clone()).collect()
        };
        let dns_servers = if cfg.dns_servers.is_empty() {
            let listening_here = listen
                .iter()
                .any(|l| l.ip() == here.addr || l.ip().is_unspecified());
            if !listening_here {
                tracing::warn!(addr = %here.addr, "DNS does not listen on the DHCP interface's address; guests are told to use it anyway");
            }
            vec![here.addr]
        } else {
            cfg.dns_servers.clone()
        };
        let socket = socket::bind(&cfg.interface, cfg.server_port).map_err(|source| {
            let (interface, port) = (cfg.interface.clone(), cfg.server_port);
            if source.kind() == std::io::ErrorKind::AddrInUse {
                let holder = crate::ports::holder_text(port);
                DhcpError::Taken {
                    interface,
                    port,
                    holder,
                }
            } else {
                DhcpError::Bind {
                    interface,
                    port,
                    source,
                }
            }
        })?;
        let names = pool.names(t);
        Ok(DhcpServer {
            pool: Mutex::new(pool),
            store: Store::start(conn),
            offerings: Offerings {
                server: here.addr,
                lease_time: cfg.lease_time_secs,
                router: Some(cfg.router.unwrap_or(here.addr)),
                dns_servers,
                domain,
                search,
            },
            interface: cfg.interface.clone(),
            client_port: cfg.client_port,
            socket,
            names: watch::channel(names).0,
            bad_input: Mutex::new(RateLimit::default()),
            status_file,
            status_changed: Notify::new(),
            names_changed: Notify::new(),
            expiry_wake: AtomicU64::new(0),
            expiry_changed: Notify::new(),
            dropped: watch::channel(()).0,
        })
    }

    /// Ends (with an error: the sender is gone) once this service has been dropped, its
    /// socket closed.
    pub(crate) fn closed(&self) -> watch::Receiver<()> {
        self.dropped.subscribe()
    }

    /// Guest names as they change.
    pub(crate) fn names(&self) -> watch::Receiver<Names> {
        self.names.subscribe()
    }

    pub(crate) fn domain(&self) -> Option<&str> {
        self.offerings.domain.as_deref()
    }

    /// Serves until the task is dropped.
    pub(crate) async fn run(self: Arc<Self>) {
        let _expiry = AbortOnDropHandle::new(tokio::spawn(self.clone().expire_loop()));
        let _status = AbortOnDropHandle::new(tokio::spawn(self.clone().status_loop()));
        let _names = AbortOnDropHandle::new(tokio::spawn(self.clone().names_loop()));
        let mut buf = vec![0u8; 1500];
        loop {
            let (n, source) = match self.socket.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "dhcp receive error");
                    continue;
                }
            };
            self.handle(&buf[..n], source).await;
        }
    }

    /// Decides at once; a decision that changes a lease is replied to by the lease writer,
    /// once the change is on disk.
    async fn handle(self: &Arc<Self>, raw: &[u8], source: SocketAddr) {
        let msg = match decode(raw) {
            Ok(m) => m,
            Err(why) => return self.bad(source, &format!("undecodable packet: {why}")),
        };
        crate::metrics::dhcp(Direction::Received, message_type(&msg));
        let client = match rfc2131::validate(&msg, raw) {
            Ok(c) => c,
            Err(why) => return self.bad(source, &format!("rejected packet: {why:?}")),
        };
        let logged = {
            let mut pool = self.pool.lock().unwrap();
            rfc2131::decide_logged(&mut pool, &self.offerings, &client, now(), &self.store)
        };
        let Logged {
            decision,
            pending,
            seq,
        } = logged;
        tracing::debug!(%source, "{}", decision.note);
        self.wake_expiry_for(decision.earliest_expiry);
        // A reply that cannot be encoded is not sent; the decision's changes still count
        // (the status file and names follow them).
        let send = decision.reply.and_then(|reply| {
            let dest = socket::destination(&msg, &reply, source, self.client_port, client.mac);
            reply
                .to_vec()
                .map_err(|e| tracing::error!(error = %e, "cannot encode DHCP reply"))
                .ok()
                .map(|bytes| (bytes, dest, message_type(&reply)))
        });
        let Some(pending) = pending else {
            self.send(send);
            self.log(decision.event);
            return;
        };
        let after = AfterCommit {
            names_changed: decision.names_changed,
            send,
            event: decision.event,
            client: client.client.clone(),
            seq,
        };
        let this = self.clone();
        pending.then(move |outcome| this.when_durable(outcome, after));
    }

    /// Once a decision's changes are on disk (run by the lease writer, right after its
    /// commit): the reply goes out (unless a later decision for the same client overtook
    /// it), the event is logged, names and the status file follow. A change that cannot be
    /// made durable withholds the reply.
    fn when_durable(&self, outcome: Result<(), StoreError>, done: AfterCommit) {
        if let Err(e) = outcome {
            tracing::error!(error = %e, "lease not durable; withholding the reply");
            return;
        }
        if self.pool.lock().unwrap().is_latest(&done.client, done.seq) {
            self.send(done.send);
            self.log(done.event);
        } else {
            tracing::debug!("reply not sent: a later decision for the same client overtook it");
        }
        self.status_changed.notify_one();
        if done.names_changed {
            self.names_changed.notify_one();
        }
    }

    /// Rewrites libvirt's lease status file after lease changes, at most every
    /// `STATUS_COALESCE` (a burst of ACKs is one write), so `virsh net-dhcp-leases` and the
    /// libvirt NSS module see each lease well within a second.
    async fn status_loop(self: Arc<Self>) {
        let Some(path) = self.status_file.clone() else {
            return;
        };
        loop {
            let leases = self.pool.lock().unwrap().leases(now());
            let entries: Vec<StatusLease> = leases
                .iter()
                .map(|l| StatusLease {
                    ip: l.addr,
                    mac: l.mac.0,
                    hostname: l.name.clone(),
                    client_id: Some(l.client.clone()),
                    expiry_time: l.expires as i64,
                })
                .collect();
            let target = path.clone();
            let written =
                tokio::task::spawn_blocking(move || write_status(&target, &entries)).await;
            if let Ok(Err(e)) = written {
                tracing::warn!(path = %path.display(), error = %e, "cannot write libvirt's lease status file");
            }
            self.status_changed.notified().await;
            tokio::time::sleep(STATUS_COALESCE).await;
        }
    }

    fn log(&self, event: Option<rfc2131::LeaseEvent>) {
        if let Some(event) = event {
            tracing::info!("{}", event.line(&self.interface));
        }
    }

    /// Sends a reply now, from whichever thread decided or committed it, so replies leave
    /// in the order they were released.
    fn send(&self, send: Option<Reply>) {
        let Some((bytes, dest, kind)) = send else {
            return;
        };
        let target = socket::target(&self.socket, &self.interface, dest);
        match socket::send_now(&self.socket, &bytes, target) {
            Ok(()) => crate::metrics::dhcp(Direction::Sent, kind),
            Err(e) => tracing::warn!(error = %e, %target, "cannot send DHCP reply"),
        }
    }

    /// How each range's addresses are used now (for the metrics).
    pub(crate) fn usage(&self) -> Vec<crate::dhcp::pool::RangeUsage> {
        self.pool.lock().unwrap().usage(now())
    }

    /// Publishes guest names again each time they change.
    async fn names_loop(self: Arc<Self>) {
        loop {
            self.names_changed.notified().await;
            self.publish_names();
        }
    }

    fn publish_names(&self) {
        let names = self.pool.lock().unwrap().names(now());
        self.names.send_if_modified(|current| {
            let changed = *current != names;
            *current = names;
            changed
        });
    }

    fn bad(&self, source: SocketAddr, what: &str) {
        if let Some(suppressed) = self.bad_input.lock().unwrap().allow() {
            tracing::warn!(%source, suppressed, "{what}");
        }
    }

    /// Expires leases when they end (not at a sweep): the name goes from DNS and the row
    /// from the store then. Sleeps until the next lease's end, at most `EXPIRY_INTERVAL`,
    /// woken early when a lease that ends sooner is bound.
    async fn expire_loop(self: Arc<Self>) {
        loop {
            let next = self.pool.lock().unwrap().next_expiry();
            let t = now();
            let wait = next.map_or(EXPIRY_INTERVAL, |e| {
                Duration::from_secs(e.saturating_sub(t)).min(EXPIRY_INTERVAL)
            });
            self.expiry_wake
                .store(t + wait.as_secs(), Ordering::Relaxed);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.expiry_changed.notified() => continue,
            }
            let (expired, pending) = {
                let mut pool = self.pool.lock().unwrap();
                let expired = pool.expire(now());
                let removes = expired.iter().map(|l| Change::Remove(l.addr)).collect();
                (expired, self.store.enqueue(removes))
            };
            if expired.is_empty() {
                continue;
            }
            for l in &expired {
                tracing::info!(
                    "DHCP lease expired({}) {} {}{}",
                    self.interface,
                    l.addr,
                    l.mac,
                    l.name
                        .as_deref()
                        .map(|n| format!(" {n}"))
                        .unwrap_or_default()
                );
            }
            if let Err(e) = pending.durable().await {
                tracing::error!(error = %e, "cannot remove expired leases");
            }
            self.status_changed.notify_one();
            if expired.iter().any(|l| l.name.is_some()) {
                self.names_changed.notify_one();
            }
        }
    }

    /// Wakes the expiry loop if a lease bound now ends before it would wake.
    fn wake_expiry_for(&self, expires: Option<u64>) {
        if expires.is_some_and(|e| e < self.expiry_wake.load(Ordering::Relaxed)) {
            self.expiry_changed.notify_one();
        }
    }
}

/// Decodes a datagram into a DHCP message; a packet must never take the service down.
///
/// dhcproto 0.15 asserts (`debug_assert!`) instead of checking the lengths of options 80, 81,
/// 94 and 152-155, so with debug assertions on, one of another length panics in its decoder
/// (in release the assertion is compiled out and the option is read whatever its length).
/// A packet with such an option (at a length its RFC does not allow) is refused before
/// decoding, the same way in every build; `catch_unwind` stays as the backstop for any other
/// panic in the decoder (the profiles unwind: nothing sets `panic = "abort"`).
pub fn decode(raw: &[u8]) -> Result<dhcproto::v4::Message, String> {
    if let Some(code) = misasserted_option(raw) {
        return Err(format!("option {code} has a malformed length"));
    }
    match std::panic::catch_unwind(|| dhcproto::v4::Message::decode(&mut Decoder::new(raw))) {
        Ok(Ok(m)) => Ok(m),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("malformed option".into()),
    }
}

/// Whether dhcproto 0.15's assertion on an option's length holds (true for options it does
/// not assert on).
fn asserted_length_holds(code: u8, len: usize) -> bool {
    match code {
        80 => len == 0,        // Rapid Commit (RFC 4039)
        81 => len >= 3,        // Client FQDN (RFC 4702)
        94 => len == 3,        // Client Network Interface (RFC 4578)
        152..=155 => len == 4, // Bulk Leasequery times (RFC 6926)
        _ => true,
    }
}

/// The first option whose length dhcproto would assert on, walking the options as it does:
/// from offset 240 to End; consecutive instances of one code are one option (RFC 3396); the
/// walk stops at an option that runs past the packet, which dhcproto does not decode.
fn misasserted_option(raw: &[u8]) -> Option<u8> {
    let mut off = 240;
    let mut run: Option<(u8, usize)> = None;
    loop {
        let code = raw.get(off).copied();
        if let Some((c, len)) = run
            && code != Some(c)
        {
            if !asserted_length_holds(c, len) {
                return Some(c);
            }
            run = None;
        }
        match code {
            None | Some(255) => return None,
            Some(0) => off += 1,
            Some(c) => {
                let len = *raw.get(off + 1)? as usize;
                if off + 2 + len > raw.len() {
                    return None;
                }
                run = Some((c, run.map_or(0, |(_, l)| l) + len));
                off += 2 + len;
            }
        }
    }
}

/// What a decision does once its changes are durable.
struct AfterCommit {
    names_changed: bool,
    send: Option<Reply>,
    event: Option<rfc2131::LeaseEvent>,
    client: ClientId,
    seq: u64,
}

/// A reply ready to go: its bytes, where to, and its message type (option 53).
type Reply = (Vec<u8>, socket::Destination, u8);

/// A message's type (option 53), 0 when it has none.
fn message_type(msg: &dhcproto::v4::Message) -> u8 {
    msg.opts().msg_type().map_or(0, u8::from)
}

/// At most `BURST` warnings per `WINDOW`; then one line saying how many were suppressed.
#[derive(Default)]
struct RateLimit {
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl RateLimit {
    const WINDOW: Duration = Duration::from_secs(10);
    const BURST: u32 = 5;

    /// Some(count suppressed since the last allowed line) if this line may be logged.
    fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .window_start
            .is_none_or(|s| now.duration_since(s) >= Self::WINDOW)
        {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        if self.in_window < Self::BURST {
            self.in_window += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod decode_tests {
    use super::*;
    use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};

    /// A DISCOVER with `extra` (option bytes) just before End.
    fn discover_with(extra: &[u8]) -> Vec<u8> {
        let mut m = Message::new(
            [0; 4].into(),
            [0; 4].into(),
            [0; 4].into(),
            [0; 4].into(),
            &[2, 0, 0, 0, 0, 1],
        );
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Discover));
        let mut raw = m.to_vec().unwrap();
        assert_eq!(raw.pop(), Some(255));
        raw.extend_from_slice(extra);
        raw.push(255);
        raw
    }

    /// Seen from fuzzing: dhcproto 0.15 panics (debug assertions on) on these options at
    /// another length; they are refused before decoding, naming the option.
    #[test]
    fn options_dhcproto_asserts_on_are_refused_at_a_wrong_length() {
        let bad: &[&[u8]] = &[
            &[80, 1, 0],
            &[81, 2, 0, 0],
            &[81, 1, 0, 81, 1, 0], // split (RFC 3396): 2 bytes in all
            &[94, 2, 1, 2],
            &[152, 3, 0, 0, 0],
            &[153, 5, 0, 0, 0, 0, 0],
            &[154, 0],
            &[155, 8, 0, 0, 0, 0, 0, 0, 0, 0],
        ];
        for opt in bad {
            assert_eq!(
                decode(&discover_with(opt)).unwrap_err(),
                format!("option {} has a malformed length", opt[0]),
                "{opt:?}"
            );
        }
    }

    #[test]
    fn the_same_options_at_their_lengths_decode() {
        let good: &[(&[u8], OptionCode)] = &[
            (&[80, 0], OptionCode::RapidCommit),
            (&[81, 6, 0, 0, 0, 1, b'a', 0], OptionCode::ClientFQDN),
            (&[94, 2, 1, 2, 94, 1, 0], OptionCode::ClientNetworkInterface),
            (&[152, 4, 0, 0, 0, 1], OptionCode::BulkLeaseQueryBaseTime),
        ];
        for (opt, code) in good {
            let m = decode(&discover_with(opt)).expect("decodes");
            assert!(m.opts().get(*code).is_some(), "{opt:?}");
        }
        // After End, and when it runs past the packet, an option is not decoded at all.
        let mut after_end = discover_with(&[]);
        after_end.extend_from_slice(&[94, 1, 0]);
        assert!(decode(&after_end).is_ok());
        let mut cut = discover_with(&[]);
        cut.pop();
        cut.extend_from_slice(&[94, 9, 0]);
        assert!(decode(&cut).is_ok());
    }
}
