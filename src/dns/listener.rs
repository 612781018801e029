//! Sockets facing clients: the UDP receive loop and the TCP acceptor (RFC 7766: pipelined
//! queries answered as they complete, an idle timeout, a bound on connections in all and per
//! client, met by closing the connection idle longest rather than refusing a new one).
//! Listeners know nothing about how queries are answered; they hand bytes to the `Resolver`.

use crate::dns::observe::Arrival;
use crate::dns::posted::Posted;
use crate::dns::resolver::{self, Forwarded, Immediate, Resolver, Source, Transport};
use crate::dns::udp_batch;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::task::AbortOnDropHandle;

/// UDP sockets, each served by a thread of its own with a single-threaded runtime, so a
/// query, its forwarding and its reply never cross threads. `[dns] threads` sockets per
/// listen address (SO_REUSEPORT spreads clients over them); shared state (cache, in-flight
/// table) sits behind short mutexes.
pub(crate) struct UdpWorkers {
    stop: tokio::sync::watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl UdpWorkers {
    /// Starts a worker per socket. The receiver hears why, if a worker stops on its own.
    pub(crate) fn start(
        sockets: Vec<std::net::UdpSocket>,
        resolver: Arc<Resolver>,
    ) -> (UdpWorkers, mpsc::UnboundedReceiver<String>) {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (died, deaths) = mpsc::unbounded_channel();
        let threads = sockets
            .into_iter()
            .enumerate()
            .map(|(i, socket)| {
                let resolver = resolver.clone();
                let mut stopped = stopped.clone();
                let died = died.clone();
                std::thread::Builder::new()
                    .name(format!("udp-{i}"))
                    .spawn(move || {
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("udp worker runtime");
                        runtime.block_on(async move {
                            let socket = match UdpSocket::from_std(socket) {
                                Ok(s) => Arc::new(s),
                                Err(e) => {
                                    let _ = died.send(format!("UDP socket unusable: {e}"));
                                    return;
                                }
                            };
                            tokio::select! {
                                why = serve_udp(socket, resolver) => {
                                    let _ = died.send(why);
                                }
                                _ = stopped.wait_for(|s| *s) => {}
                            }
                        });
                    })
                    .expect("udp worker thread")
            })
            .collect();
        (UdpWorkers { stop, threads }, deaths)
    }

    pub(crate) fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Serves queries arriving on `socket` until the task is dropped, or returns why the socket
/// failed. Queries are taken a batch at a time (`udp_batch`); those answered at once (cache,
/// local data, errors) go back in one batched send, the rest are forwarded
/// (`Resolver::forward_then`: their first upstream exchange starts here, and their replies are
/// posted wherever their walks end), and go out in batches too (`Outbox`).
pub(crate) async fn serve_udp(socket: Arc<UdpSocket>, resolver: Arc<Resolver>) -> String {
    let outbox = Arc::new(Outbox::default());
    let _sender = AbortOnDropHandle::new(tokio::spawn(send_posted(socket.clone(), outbox.clone())));
    let mut batch = udp_batch::RecvBatch::default();
    // Reply buffers, reused from batch to batch.
    let mut replies: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(udp_batch::BATCH);
    let mut spare: Vec<Vec<u8>> = Vec::new();
    loop {
        if let Err(e) = socket.readable().await {
            return format!("UDP socket failed: {e}");
        }
        let n = match socket.try_io(Interest::READABLE, || batch.recv(socket.as_fd())) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                // ICMP errors from earlier replies surface here; they concern one client only.
                tracing::debug!(error = %e, "udp receive error");
                continue;
            }
        };
        // One snapshot judges a batch: the ACL changes only on a reload or when the
        // interfaces do.
        let acl = resolver.acl();
        // One reading of the clock serves the batch: cache expiry and TTL ageing.
        let now = Instant::now();
        for i in 0..n {
            let (packet, peer) = batch.get(i);
            let Some(peer) = peer else { continue };
            let arrival = Arrival::new(Transport::Udp, Some(peer));
            let immediate = if acl.admits(peer.ip()) {
                resolver.answer_now(packet, Transport::Udp, now)
            } else {
                tracing::debug!(%peer, "client not in the allowed networks: REFUSED");
                resolver.refuse(packet)
            };
            match immediate {
                Immediate::Reply(reply, source) => {
                    arrival.answered(packet, source, &reply, None);
                    replies.push((reply, peer));
                }
                Immediate::Cached(answer, q) => {
                    let mut out = spare.pop().unwrap_or_default();
                    let limit = resolver::limit(&q, Transport::Udp);
                    answer.render_into(&mut out, packet, &q, limit, now);
                    arrival.answered(packet, Source::Cache, &out, None);
                    replies.push((out, peer));
                }
                Immediate::Drop => arrival.dropped(),
                Immediate::Forward(q, route, sought) => {
                    let outbox = outbox.clone();
                    let send = move |packet: &[u8], f: Forwarded| {
                        arrival.answered(packet, Source::Forwarded, &f.reply, f.upstream);
                        outbox.post((f.reply, peer));
                    };
                    let (packet, udp) = (packet.to_vec(), Transport::Udp);
                    resolver.forward_then(packet, q, route, sought, udp, now, send);
                }
            }
        }
        send_all(&socket, &replies).await;
        spare.extend(replies.drain(..).map(|(r, _)| r));
        // Replies of every kind come back here, but only cache hits reuse them: keep a batch.
        spare.truncate(udp_batch::BATCH);
    }
}

/// Replies to forwarded queries, waiting to go out together. The upstream reader completes
/// many queries in one wake-up and posts the reply of each whose walk ends there (the others'
/// tasks post theirs as they end); `send_posted` takes the lot and sends it with one
/// sendmmsg: one system call, and one wake-up of a client reading many, instead of a sendto
/// for each.
type Outbox = Posted<(Vec<u8>, SocketAddr)>;

/// Sends what is posted to `outbox`, a batch at a time, for as long as the listener runs.
async fn send_posted(socket: Arc<UdpSocket>, outbox: Arc<Outbox>) {
    let mut batch = Vec::new();
    loop {
        outbox.take(&mut batch).await;
        send_all(&socket, &batch).await;
        batch.clear();
    }
}

/// Sends a batch of replies; whatever the socket cannot take at once is sent as it drains.
async fn send_all(socket: &UdpSocket, replies: &[(Vec<u8>, SocketAddr)]) {
    let sent = socket
        .try_io(Interest::WRITABLE, || {
            udp_batch::send(socket.as_fd(), replies)
        })
        .unwrap_or(0);
    for (reply, peer) in &replies[sent..] {
        let _ = socket.send_to(reply, *peer).await;
    }
}

/// Queries of one TCP connection answered concurrently.
const PIPELINE_DEPTH: usize = 64;

/// Limits for TCP clients.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpLimits {
    pub(crate) max_connections: usize,
    pub(crate) idle_timeout: Duration,
}

impl TcpLimits {
    /// Connections one client address may hold: a quarter of `max_connections` (64 of the
    /// default 256), at least one. One client alone cannot take every slot, and a client may
    /// still keep several connections in use at once.
    pub(crate) fn per_client(&self) -> usize {
        (self.max_connections / 4).max(1)
    }
}

/// Accepts TCP clients on `listener` until the task is dropped.
///
/// At the connection limit the connection that has been idle longest (no query in progress)
/// is closed to make room (RFC 7766 6.2.3), so clients holding connections open, silent or
/// trickling bytes, cannot lock others out; a client at its own limit (`per_client`) gives
/// up its own oldest idle connection instead. A new connection is refused only when every
/// connection it could replace has a query in progress.
pub(crate) async fn serve_tcp(listener: TcpListener, resolver: Arc<Resolver>, limits: TcpLimits) {
    let table = Arc::new(Mutex::new(ConnTable::new(
        limits.max_connections,
        limits.per_client(),
    )));
    let mut pressure = PressureLog::default();
    let mut report = tokio::time::interval(PRESSURE_REPORT);
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = report.tick() => {
                pressure.report();
                continue;
            }
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !resolver.admits(peer.ip()) {
            tracing::debug!(%peer, "client not in the allowed networks: connection closed");
            continue;
        }
        let (evict, evicted) = oneshot::channel();
        let (closed, gone) = oneshot::channel();
        let admission = lock(&table).admit(peer.ip(), Closer { evict, gone });
        let id = match admission {
            Admission::Admitted { id, evicted } => {
                if let Some(e) = evicted {
                    tracing::trace!(
                        %peer,
                        victim = %e.client,
                        why = %e.why,
                        "tcp: closing the connection idle longest"
                    );
                    pressure.evicted(e.why, e.client);
                    let _ = e.closer.evict.send(());
                    // Wait for its socket to close before taking more: the sockets open stay
                    // within the limit even while connections arrive faster than they can be
                    // served. An idle connection closes at once; the wait is bounded all the
                    // same.
                    let _ = tokio::time::timeout(EVICTION_WAIT, e.closer.gone).await;
                }
                id
            }
            Admission::Refused(why) => {
                tracing::trace!(%peer, %why, "tcp: no idle connection to close; new one closed");
                pressure.refused(peer.ip());
                continue;
            }
        };
        let slot = Slot {
            table: table.clone(),
            id,
            _closed: closed,
        };
        let resolver = resolver.clone();
        tokio::spawn(serve_connection(
            stream,
            resolver,
            limits.idle_timeout,
            slot,
            evicted,
        ));
    }
}

/// How often connections closed or refused under pressure are summed up in the log.
const PRESSURE_REPORT: Duration = Duration::from_secs(1);

/// Connections closed or refused under pressure since the last report: one log line a second
/// at most, however many there are (a line each would let a client flood the log).
#[derive(Default)]
struct PressureLog {
    for_client: usize,
    for_limit: usize,
    refused: usize,
    /// The client whose connection went (or was refused) last.
    last: Option<IpAddr>,
}

impl PressureLog {
    fn evicted(&mut self, why: Pressure, client: IpAddr) {
        match why {
            Pressure::ClientLimit => self.for_client += 1,
            Pressure::TotalLimit => self.for_limit += 1,
        }
        self.last = Some(client);
    }

    fn refused(&mut self, client: IpAddr) {
        self.refused += 1;
        self.last = Some(client);
    }

    fn report(&mut self) {
        let Some(last) = self.last.take() else {
            return;
        };
        if self.refused > 0 {
            tracing::warn!(
                closed_for_client = self.for_client,
                closed_for_limit = self.for_limit,
                refused = self.refused,
                %last,
                "tcp: connection limits reached; idle connections closed to make room, new ones \
                 refused where every connection had a query in progress"
            );
        } else {
            tracing::info!(
                closed_for_client = self.for_client,
                closed_for_limit = self.for_limit,
                %last,
                "tcp: connection limits reached; idle connections closed to make room"
            );
        }
        *self = PressureLog::default();
    }
}

/// The longest the acceptor waits for a connection it closed to be gone.
const EVICTION_WAIT: Duration = Duration::from_millis(20);

fn lock<T>(table: &Mutex<ConnTable<T>>) -> std::sync::MutexGuard<'_, ConnTable<T>> {
    table.lock().unwrap_or_else(|e| e.into_inner())
}

/// How the acceptor closes a connection: it tells its task, then hears when it is gone.
struct Closer {
    evict: oneshot::Sender<()>,
    gone: oneshot::Receiver<()>,
}

/// A connection's place in the table, given back when the connection ends (after its socket
/// is closed).
struct Slot {
    table: Arc<Mutex<ConnTable<Closer>>>,
    id: ConnId,
    /// Dropped with the slot: tells an acceptor waiting on `Closer::gone`.
    _closed: oneshot::Sender<()>,
}

impl Slot {
    /// Marks a query of this connection in progress until the returned guard is dropped.
    fn begin(&self) -> InProgress {
        lock(&self.table).begin(self.id);
        InProgress {
            table: self.table.clone(),
            id: self.id,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.table).close(self.id);
    }
}

/// A query in progress: read, and its reply not yet written. The connection is not idle (it
/// cannot be closed to make room) while one exists.
struct InProgress {
    table: Arc<Mutex<ConnTable<Closer>>>,
    id: ConnId,
}

impl Drop for InProgress {
    fn drop(&mut self) {
        lock(&self.table).end(self.id);
    }
}

/// One TCP client: queries are read in a loop and each answered in its own task; a writer
/// sends replies in completion order, each with its length prefix in a single write. The
/// connection ends when the client closes it, when no whole message arrives within `idle`,
/// or when `evicted` fires (it was idle and its slot went to another connection); replies
/// to queries already read are still written.
async fn serve_connection(
    stream: TcpStream,
    resolver: Arc<Resolver>,
    idle: Duration,
    slot: Slot,
    mut evicted: oneshot::Receiver<()>,
) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<(Vec<u8>, InProgress)>(PIPELINE_DEPTH);
    let write_loop = tokio::spawn(async move {
        while let Some((reply, query)) = rx.recv().await {
            let mut framed = Vec::with_capacity(reply.len() + 2);
            framed.extend_from_slice(&(reply.len() as u16).to_be_bytes());
            framed.extend_from_slice(&reply);
            // A client that stops reading loses the connection, not a slot forever.
            let written = tokio::time::timeout(idle, writer.write_all(&framed)).await;
            drop(query);
            if !matches!(written, Ok(Ok(()))) {
                return;
            }
        }
    });
    // At most PIPELINE_DEPTH queries of one connection are worked on at once; beyond that the
    // connection is not read until one is answered.
    let in_flight = Arc::new(Semaphore::new(PIPELINE_DEPTH));
    loop {
        // A whole message (length prefix and body) must arrive within the idle timeout of the
        // previous one (or of the connection's start): a client that sends nothing, or a
        // length prefix and then bytes one by one, is cut when it runs out. Bytes alone do
        // not make a connection busy, so such a client is also the first to go under pressure.
        let read = async {
            let len = reader.read_u16().await? as usize;
            let mut packet = vec![0u8; len];
            reader.read_exact(&mut packet).await?;
            Ok::<_, std::io::Error>(packet)
        };
        // Closed to make room, the connection was idle: a message that arrived just then was
        // not in progress yet and goes unanswered (the client asks again), so the connection
        // closes at once.
        let packet = tokio::select! {
            biased;
            _ = &mut evicted => break,
            read = tokio::time::timeout(idle, read) => match read {
                Ok(Ok(p)) => p,
                _ => break,
            },
        };
        let query = slot.begin();
        let Ok(Ok(permit)) = tokio::time::timeout(idle, in_flight.clone().acquire_owned()).await
        else {
            break;
        };
        let resolver = resolver.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Some(reply) = resolver.answer_from(peer, &packet, Transport::Tcp).await {
                let _ = tx.send((reply, query)).await;
            }
            drop(permit);
        });
    }
    drop(tx);
    // Closing the read half does not close the socket; it closes once the writer is done.
    drop(reader);
    let _ = write_loop.await;
    drop(slot);
}

/// A TCP connection's number in a `ConnTable`.
pub(crate) type ConnId = u64;

/// Why a connection was closed, or a new one refused, to respect the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pressure {
    /// The client already held its share of connections.
    ClientLimit,
    /// All connections were taken.
    TotalLimit,
}

impl std::fmt::Display for Pressure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pressure::ClientLimit => "client's connection limit reached",
            Pressure::TotalLimit => "connection limit reached",
        })
    }
}

/// A connection closed to make room for a new one.
#[derive(Debug)]
pub(crate) struct Eviction<T> {
    pub(crate) client: IpAddr,
    pub(crate) why: Pressure,
    /// What closes it (the listener's signal to the connection's task).
    pub(crate) closer: T,
}

/// What became of a new connection.
#[derive(Debug)]
pub(crate) enum Admission<T> {
    /// Taken, possibly in place of another connection.
    Admitted {
        id: ConnId,
        evicted: Option<Eviction<T>>,
    },
    /// Not taken: every connection it could replace has a query in progress.
    Refused(Pressure),
}

/// The TCP connections open, per client address, and which are idle since when: the choice of
/// which connection makes room for a new one, without sockets. `T` is whatever closes a
/// connection.
///
/// A connection is idle while none of its queries is in progress (read, reply not yet written);
/// bytes of a message not yet whole do not count. Its idle time starts when it is opened and
/// again each time its last query in progress is answered, so under pressure the connection
/// that has gone longest without being used goes first, and one in use never does. Time is
/// the order of events (a counter), not a clock.
#[derive(Debug)]
pub(crate) struct ConnTable<T> {
    max_total: usize,
    max_per_client: usize,
    clock: u64,
    next_id: ConnId,
    conns: HashMap<ConnId, Conn<T>>,
    /// Idle connections by (idle since, id): the first is the one idle longest.
    idle: BTreeSet<(u64, ConnId)>,
    clients: HashMap<IpAddr, Client>,
}

#[derive(Debug)]
struct Conn<T> {
    client: IpAddr,
    in_progress: usize,
    idle_since: u64,
    closer: T,
}

#[derive(Debug, Default)]
struct Client {
    open: usize,
    idle: BTreeSet<(u64, ConnId)>,
}

impl<T> ConnTable<T> {
    pub(crate) fn new(max_total: usize, max_per_client: usize) -> ConnTable<T> {
        ConnTable {
            max_total,
            max_per_client,
            clock: 0,
            next_id: 0,
            conns: HashMap::new(),
            idle: BTreeSet::new(),
            clients: HashMap::new(),
        }
    }

    /// Connections open.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Connections `client` holds.
    pub(crate) fn held_by(&self, client: IpAddr) -> usize {
        self.clients
            .get(&client.to_canonical())
            .map_or(0, |c| c.open)
    }

    /// Whether `id` is open.
    #[cfg(test)]
    pub(crate) fn contains(&self, id: ConnId) -> bool {
        self.conns.contains_key(&id)
    }

    /// A new connection from `client`. At the client's limit its own connection idle longest
    /// makes room; at the total limit, the connection idle longest of all. When no such
    /// connection is idle the new one is refused: queries in progress are never cut.
    pub(crate) fn admit(&mut self, client: IpAddr, closer: T) -> Admission<T> {
        let client = client.to_canonical();
        if self.max_total == 0 || self.max_per_client == 0 {
            return Admission::Refused(Pressure::TotalLimit);
        }
        let evicted = if self.held_by(client) >= self.max_per_client {
            let oldest = self.clients.get(&client).and_then(|c| c.idle.first());
            match oldest {
                Some(&(_, id)) => Some(self.evict(id, Pressure::ClientLimit)),
                None => return Admission::Refused(Pressure::ClientLimit),
            }
        } else if self.conns.len() >= self.max_total {
            match self.idle.first() {
                Some(&(_, id)) => Some(self.evict(id, Pressure::TotalLimit)),
                None => return Admission::Refused(Pressure::TotalLimit),
            }
        } else {
            None
        };
        let id = self.next_id;
        self.next_id += 1;
        let since = self.tick();
        self.conns.insert(
            id,
            Conn {
                client,
                in_progress: 0,
                idle_since: since,
                closer,
            },
        );
        self.idle.insert((since, id));
        let c = self.clients.entry(client).or_default();
        c.open += 1;
        c.idle.insert((since, id));
        Admission::Admitted { id, evicted }
    }

    /// A query of `id` is in progress (a whole message was read). No effect on a connection
    /// no longer in the table.
    pub(crate) fn begin(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.in_progress += 1;
        if conn.in_progress == 1 {
            let key = (conn.idle_since, id);
            self.idle.remove(&key);
            if let Some(c) = self.clients.get_mut(&conn.client) {
                c.idle.remove(&key);
            }
        }
    }

    /// A query of `id` was answered (or dropped); the connection is idle from now when it was
    /// the last one in progress.
    pub(crate) fn end(&mut self, id: ConnId) {
        let now = self.clock + 1;
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.in_progress == 0 {
            return;
        }
        conn.in_progress -= 1;
        if conn.in_progress == 0 {
            self.clock = now;
            conn.idle_since = now;
            self.idle.insert((now, id));
            if let Some(c) = self.clients.get_mut(&conn.client) {
                c.idle.insert((now, id));
            }
        }
    }

    /// `id` ended on its own; its slot is free. No effect when it was evicted already.
    pub(crate) fn close(&mut self, id: ConnId) -> Option<T> {
        self.remove(id)
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn evict(&mut self, id: ConnId, why: Pressure) -> Eviction<T> {
        let client = self.conns[&id].client;
        let closer = self.remove(id).expect("an idle connection is in the table");
        Eviction {
            client,
            why,
            closer,
        }
    }

    fn remove(&mut self, id: ConnId) -> Option<T> {
        let conn = self.conns.remove(&id)?;
        let key = (conn.idle_since, id);
        self.idle.remove(&key);
        if let Some(c) = self.clients.get_mut(&conn.client) {
            c.idle.remove(&key);
            c.open -= 1;
            if c.open == 0 {
                self.clients.remove(&conn.client);
            }
        }
        Some(conn.closer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replies posted by forwarding tasks that finish in the same turn of the runtime all
    /// reach their clients, in the order posted, more than a sendmmsg batch of them included;
    /// and the outbox is empty once the sender has run.
    #[tokio::test]
    async fn replies_posted_together_all_go_out_in_order() {
        let server = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let peer = client.local_addr().unwrap();
        let outbox = Arc::new(Outbox::default());
        let _sender =
            AbortOnDropHandle::new(tokio::spawn(send_posted(server.clone(), outbox.clone())));
        let replies = udp_batch::BATCH + 8;
        let tasks: Vec<_> = (0..replies)
            .map(|i| {
                let outbox = outbox.clone();
                tokio::spawn(async move { outbox.post((vec![i as u8; 12], peer)) })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let mut buf = [0u8; 64];
        for i in 0..replies {
            let received = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf));
            let (n, from) = received.await.expect("every reply arrives").unwrap();
            assert_eq!(
                (&buf[..n], from),
                (&[i as u8; 12][..], server.local_addr().unwrap())
            );
        }
        assert_eq!(outbox.len(), 0);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Admits a connection named `name`; returns its id and the name of the one evicted.
    fn open(t: &mut ConnTable<&'static str>, client: &str, name: &'static str) -> OpenResult {
        match t.admit(ip(client), name) {
            Admission::Admitted { id, evicted } => {
                OpenResult::Admitted(id, evicted.map(|e| (e.closer, e.why)))
            }
            Admission::Refused(why) => OpenResult::Refused(why),
        }
    }

    #[derive(Debug, PartialEq)]
    enum OpenResult {
        Admitted(ConnId, Option<(&'static str, Pressure)>),
        Refused(Pressure),
    }

    fn id(r: OpenResult) -> ConnId {
        match r {
            OpenResult::Admitted(id, _) => id,
            r => panic!("not admitted: {r:?}"),
        }
    }

    fn evicted(r: OpenResult) -> Option<(&'static str, Pressure)> {
        match r {
            OpenResult::Admitted(_, e) => e,
            r => panic!("not admitted: {r:?}"),
        }
    }

    #[test]
    fn under_the_limits_nothing_goes() {
        let mut t = ConnTable::new(3, 3);
        for name in ["a", "b", "c"] {
            assert_eq!(evicted(open(&mut t, "10.0.0.1", name)), None);
        }
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn at_the_limit_the_connection_idle_longest_goes_not_the_new_one() {
        let mut t = ConnTable::new(3, 3);
        let a = id(open(&mut t, "10.0.0.1", "a"));
        id(open(&mut t, "10.0.0.2", "b"));
        id(open(&mut t, "10.0.0.3", "c"));
        let r = open(&mut t, "10.0.0.4", "d");
        assert_eq!(evicted(r), Some(("a", Pressure::TotalLimit)));
        assert!(!t.contains(a));
        assert_eq!(t.len(), 3);
        // Next: b, then c, then d (in the order they became idle).
        assert_eq!(
            evicted(open(&mut t, "10.0.0.5", "e")),
            Some(("b", Pressure::TotalLimit))
        );
        assert_eq!(
            evicted(open(&mut t, "10.0.0.5", "f")),
            Some(("c", Pressure::TotalLimit))
        );
    }

    #[test]
    fn a_connection_with_a_query_in_progress_is_not_idle() {
        let mut t = ConnTable::new(3, 3);
        let a = id(open(&mut t, "10.0.0.1", "a"));
        let b = id(open(&mut t, "10.0.0.2", "b"));
        id(open(&mut t, "10.0.0.3", "c"));
        t.begin(a);
        t.begin(b);
        assert_eq!(
            evicted(open(&mut t, "10.0.0.4", "d")),
            Some(("c", Pressure::TotalLimit)),
            "the oldest connections are busy: the idle one goes"
        );
        // d is idle: it goes next, even though it is the newest.
        assert_eq!(
            evicted(open(&mut t, "10.0.0.4", "e")),
            Some(("d", Pressure::TotalLimit))
        );
    }

    #[test]
    fn when_every_connection_is_busy_the_new_one_is_refused() {
        let mut t = ConnTable::new(2, 2);
        let a = id(open(&mut t, "10.0.0.1", "a"));
        let b = id(open(&mut t, "10.0.0.2", "b"));
        t.begin(a);
        t.begin(b);
        t.begin(b);
        assert_eq!(
            open(&mut t, "10.0.0.3", "c"),
            OpenResult::Refused(Pressure::TotalLimit)
        );
        assert_eq!(t.len(), 2);
        // b still has one query in progress after one is answered: still busy.
        t.end(b);
        assert_eq!(
            open(&mut t, "10.0.0.3", "c"),
            OpenResult::Refused(Pressure::TotalLimit)
        );
        t.end(a);
        assert_eq!(
            evicted(open(&mut t, "10.0.0.3", "c")),
            Some(("a", Pressure::TotalLimit))
        );
    }

    #[test]
    fn idle_time_starts_again_when_the_last_query_is_answered() {
        let mut t = ConnTable::new(3, 3);
        let a = id(open(&mut t, "10.0.0.1", "a"));
        id(open(&mut t, "10.0.0.2", "b"));
        id(open(&mut t, "10.0.0.3", "c"));
        // a is the oldest connection, but it was just used: b has been idle longest.
        t.begin(a);
        t.end(a);
        assert_eq!(
            evicted(open(&mut t, "10.0.0.4", "d")),
            Some(("b", Pressure::TotalLimit))
        );
        assert_eq!(
            evicted(open(&mut t, "10.0.0.4", "e")),
            Some(("c", Pressure::TotalLimit))
        );
        assert_eq!(
            evicted(open(&mut t, "10.0.0.4", "f")),
            Some(("a", Pressure::TotalLimit))
        );
    }

    #[test]
    fn a_client_at_its_limit_gives_up_its_own_oldest_idle_connection() {
        let mut t = ConnTable::new(10, 2);
        // Another client's connection is older than all of the busy client's.
        id(open(&mut t, "10.0.0.9", "other"));
        let a = id(open(&mut t, "10.0.0.1", "a"));
        id(open(&mut t, "10.0.0.1", "b"));
        assert_eq!(
            evicted(open(&mut t, "10.0.0.1", "c")),
            Some(("a", Pressure::ClientLimit))
        );
        assert!(!t.contains(a));
        assert_eq!(t.held_by(ip("10.0.0.1")), 2);
        assert_eq!(t.held_by(ip("10.0.0.9")), 1);
        // Other clients are not affected by one client's limit.
        assert_eq!(evicted(open(&mut t, "10.0.0.2", "d")), None);
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn a_client_whose_connections_are_all_busy_is_refused_another() {
        let mut t = ConnTable::new(10, 2);
        let a = id(open(&mut t, "10.0.0.1", "a"));
        let b = id(open(&mut t, "10.0.0.1", "b"));
        // Idle connections of others are not taken for a client over its share.
        id(open(&mut t, "10.0.0.2", "other"));
        t.begin(a);
        t.begin(b);
        assert_eq!(
            open(&mut t, "10.0.0.1", "c"),
            OpenResult::Refused(Pressure::ClientLimit)
        );
        assert_eq!(t.len(), 3);
        t.end(b);
        assert_eq!(
            evicted(open(&mut t, "10.0.0.1", "c")),
            Some(("b", Pressure::ClientLimit))
        );
    }

    #[test]
    fn one_client_cannot_take_every_slot() {
        let mut t = ConnTable::new(8, 2);
        // 1000 connections from one address: it keeps two, the rest stays free.
        for _ in 0..1000 {
            open(&mut t, "10.0.0.1", "flood");
        }
        assert_eq!(t.len(), 2);
        for i in 0..6 {
            assert_eq!(evicted(open(&mut t, &format!("10.0.1.{i}"), "x")), None);
        }
        assert_eq!(t.len(), 8);
    }

    #[test]
    fn an_ipv4_client_seen_as_mapped_ipv6_is_the_same_client() {
        let mut t = ConnTable::new(10, 1);
        id(open(&mut t, "10.0.0.1", "a"));
        assert_eq!(
            evicted(open(&mut t, "::ffff:10.0.0.1", "b")),
            Some(("a", Pressure::ClientLimit))
        );
        assert_eq!(t.held_by(ip("10.0.0.1")), 1);
    }

    #[test]
    fn a_connection_gone_is_forgotten_and_late_events_change_nothing() {
        let mut t = ConnTable::new(2, 2);
        let a = id(open(&mut t, "10.0.0.1", "a"));
        let b = id(open(&mut t, "10.0.0.1", "b"));
        t.begin(b);
        assert_eq!(t.close(a), Some("a"));
        assert_eq!(t.close(a), None);
        // Evicted, then its task ends: the table does not count it twice.
        let c = id(open(&mut t, "10.0.0.2", "c"));
        t.end(b);
        assert_eq!(
            evicted(open(&mut t, "10.0.0.3", "d")),
            Some(("c", Pressure::TotalLimit))
        );
        t.begin(c);
        t.end(c);
        assert_eq!(t.close(c), None);
        assert_eq!(t.len(), 2);
        assert_eq!(t.held_by(ip("10.0.0.2")), 0);
        // A stray end on an idle connection does not move it to the back.
        t.end(b);
        assert_eq!(
            evicted(open(&mut t, "10.0.0.4", "e")),
            Some(("b", Pressure::TotalLimit))
        );
        t.close(b);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn a_limit_of_zero_refuses_everything() {
        let mut t = ConnTable::new(0, 0);
        assert_eq!(
            open(&mut t, "10.0.0.1", "a"),
            OpenResult::Refused(Pressure::TotalLimit)
        );
        assert!(t.is_empty());
    }

    #[test]
    fn the_default_share_of_a_client_is_a_quarter_of_the_limit() {
        let limits = |max_connections| TcpLimits {
            max_connections,
            idle_timeout: Duration::from_secs(10),
        };
        assert_eq!(limits(256).per_client(), 64);
        assert_eq!(limits(3).per_client(), 1);
        assert_eq!(limits(0).per_client(), 1);
    }
}
