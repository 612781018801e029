//! Upstream UDP sockets: every query goes out from a source port of its own, drawn at random
//! from all ports above 1023, and one reader per thread takes the replies of all of them.
//!
//! This module owns each upstream UDP query from the choice of its port to the close (or
//! reuse) of its socket: the port, the wait, and the matching of what arrives.
//!
//! - **A fresh random port per query** (RFC 5452 9.2, RFC 6056), uniform over the ports
//!   above 1023 that nothing else should want: the kernel's ephemeral range
//!   (`ip_local_port_range`, less `ip_local_reserved_ports`) and every other port except
//!   the UDP ports in /etc/services and a few tunnel ports (`AVOID`), so a service starting
//!   at that moment does not find its port taken. That is at least as wide as Unbound's
//!   draw (1024 to 65535 less IANA's list); the kernel's range alone (28 232 ports by
//!   default) would give a forger 1.2 bits less to guess. A datagram from any other address
//!   or port than the server's is dropped, and the query carries a random ID: a forger must
//!   guess port and ID afresh for every query.
//! - **Not connected.** The sockets send with `sendto` and check each datagram's source
//!   themselves, which is what `connect` would have the kernel do, for one system call (and
//!   its rehashing of the socket) less per query: 9 % of the CPU of a cold query in
//!   bench/dns (17.97 against 19.78 µs, six alternating runs). ICMP errors, which the kernel
//!   reports only to connected sockets unless asked, are asked for (IP_RECVERR): the error
//!   queue names the destination of the datagram that drew each, and an error that names
//!   another destination than the query's server is passed over, as the kernel does for a
//!   connected socket. Asking also brings the errors a connected socket is not told of (host
//!   or network unreachable, time exceeded); glibc's resolver asks for them too (since 2.30,
//!   BZ #24047), so a server the host's resolver leaves at once is left at once here too.
//! - **Two ways to a port, one distribution.** A draw that lands in the kernel's range is
//!   left to the kernel, which picks uniformly within it: an idle socket's first send binds
//!   it to a random ephemeral port, and when its query is over it is disconnected
//!   (`connect(AF_UNSPEC)` gives the port back), emptied of anything still queued (nothing
//!   sent to an old port may reach a later query), and kept for a later query. A draw
//!   outside that range is bound explicitly on a new socket, which closes with its query: an
//!   explicitly bound port cannot be given back, and the kernel lets no socket widen its
//!   range. So no port serves two queries. Over a long-lived socket, the kernel's way adds
//!   two system calls to a query (disconnect, one empty read); the other adds a socket's
//!   whole life (socket, IP_RECVERR, bind, joining the epoll set, close, and the first send
//!   of a new socket), several times as much. The costly way is taken for the share of
//!   ports outside the kernel's range: 56 % with the default range, none if the
//!   administrator widened it to 1024-65535.
//! - **A socket error is one query's error.** An ICMP error (port unreachable, real or
//!   forged) names a port, and a port carries one query: an error about a datagram to that
//!   query's server fails that exchange, as an I/O error the walk takes as that server
//!   failing that attempt, and nothing else. A socket that saw such an error, or an error
//!   still queued when its query is over, is closed, not reused.
//! - **A reply counts only if** its source is the server's and it passes the query's
//!   `Expect` (ID and question, and the cookie and case `dns::guard` asks for); anything else
//!   is read, counted by why, and dropped while the wait goes on. The wait ends with the
//!   reply, the error, or the caller's timeout (which reads the counts, then drops `Sent`).
//! - **Two ways to wait.** A task awaits `Sent::reply` under a timeout of its own; or, with
//!   `start`, nothing waits: the query's `Completion` is handed how it ended by the reader,
//!   which keeps such queries' deadlines itself (one timer per thread, not one per query). A
//!   forwarded query whose first server answers at once is then answered within the reader's
//!   wake-up, with no task, channel or timer of its own (`dns::forward`).
//! - **Sent together.** A query's socket is readied (a port of its own) and its wait set up at
//!   once, by whoever asks (a forwarding task, or the listener for a walk it begins); the
//!   datagram itself is left for the thread's reader task, which sends every query left since
//!   it last ran, back to back. A local server (systemd-resolved's stub, a
//!   forwarder on the host) then wakes once for many queries, not once for each, and each
//!   wake-up is paid for by the sender. A send that fails fails that query (as an I/O error,
//!   like an ICMP error) and closes its socket; a query abandoned first is never sent.
//! - **One reader per thread.** Each thread keeps an epoll set of its own, registered with
//!   tokio once; sockets join it when created and leave it when closed, and a reader task
//!   takes the ready sockets of many queries with one epoll_wait. Registering every socket
//!   with tokio instead would cost an epoll_ctl to add and one to delete per new socket.
//!   Sockets are one per query in flight: the soft limit on open files is raised to the hard
//!   limit (at most `FD_LIMIT`) when the first reader starts.
//!
//! Written by hand: no crate we use chooses source ports this way or reads many short-lived
//! sockets through one epoll set.

mod deadlines;

use crate::dns::guard::{Dropped, Expect, Rejection};
use crate::dns::posted::Posted;
use crate::dns::wire::ReplyInfo;
use crate::sys::{self, Epoll, EpollEvent};
use deadlines::Deadlines;
use socket2::{Domain, Socket, Type};
use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

/// Largest UDP reply read from an upstream (we advertise `wire::EDNS_PAYLOAD`).
const UDP_REPLY_MAX: usize = 4096;
/// Ready sockets taken per epoll_wait.
const EVENTS: usize = 64;
/// Source ports are drawn from here up: every port above the well-known ones.
const FIRST_PORT: u16 = 1024;
/// Draws before a port taken by others makes us leave the choice to the kernel.
const BIND_TRIES: usize = 16;
/// UDP ports of tunnels and discovery protocols a virtualization host may open at any time
/// and that /etc/services often omits: SSDP, STUN, LLMNR, VXLAN, Geneve, Linux's VXLAN
/// default, WireGuard.
const AVOID: &[u16] = &[1900, 3478, 5355, 4789, 6081, 8472, 51820];
/// Idle sockets (no port, no query) a thread keeps per address family.
const IDLE_MAX: usize = 1024;
/// The soft limit on open files is raised towards this (or the hard limit, if lower).
const FD_LIMIT: u64 = 65536;

/// A query's outcome: its reply, or the error of its socket.
type Reply = io::Result<Received>;

/// A query's reply: the bytes, what they say, what was dropped while it waited, when the query
/// went out and when the reply was read. One clock reading serves every query sent, and every
/// reply read, in one wake-up of the reader; the round trip is the server's, without the
/// time the query waited to be sent.
#[derive(Debug)]
pub struct Received {
    pub(crate) reply: Vec<u8>,
    pub(crate) info: ReplyInfo,
    pub(crate) dropped: Dropped,
    pub(crate) sent: Instant,
    pub(crate) at: Instant,
}

/// How a query that no task awaits ended (`start`).
#[derive(Debug)]
pub enum Ended {
    /// Its reply, or its socket's error (an ICMP error, the send's own, or the reader
    /// stopping).
    Replied(Reply),
    /// Nothing acceptable by its deadline; what was dropped meanwhile.
    TimedOut(Dropped),
    /// Never sent: no socket could be had, or the exchanger starts none (the caller then
    /// exchanges as it would have without `start`).
    NotStarted,
}

/// What is told how a query started with `start` ended. Called by the reader, outside its
/// lock; dropped uncalled only when the reader's runtime shuts down.
pub trait Completion: Send {
    /// What the query's reply must match (kept here, not copied for the wait).
    fn expect(&self) -> &Expect;

    /// Takes how the query ended.
    fn complete(self: Box<Self>, ended: Ended);
}

/// Who learns how a query ended.
enum Done {
    /// A task awaiting `Sent::reply`, under a timeout of its own; what the reply must match
    /// (boxed: a wait is moved as it starts and ends, and most have a completion instead).
    Task(oneshot::Sender<Reply>, Box<Expect>),
    /// A completion called by the reader, at the latest at its deadline (in `Slots::deadlines`).
    Call(Box<dyn Completion>),
}

/// The query a socket carries.
struct Waiting {
    /// Where it went: the only source its reply may come from.
    server: SocketAddr,
    /// What reached the port and was not the reply.
    dropped: Dropped,
    /// Which query this is: a socket carries many, one after another.
    token: u64,
    /// When it went out (set by the send).
    sent: Option<Instant>,
    done: Done,
}

impl Waiting {
    /// What its reply must match.
    fn expect(&self) -> &Expect {
        match &self.done {
            Done::Task(_, expect) => expect,
            Done::Call(completion) => completion.expect(),
        }
    }
}

/// A socket in the thread's epoll set.
struct Slot {
    /// Bumped when the socket closes, so an event or a `Sent` for an old socket finds nothing.
    generation: u32,
    socket: Option<UdpSocket>,
    /// Bound by the kernel at its first send: disconnected and kept after its query.
    reusable: bool,
    v6: bool,
    waiting: Option<Waiting>,
}

/// A thread's sockets. A socket's epoll data is its slot's key: index and generation.
#[derive(Default)]
struct Slots {
    slots: Vec<Slot>,
    /// Slots without a socket.
    empty: Vec<u32>,
    /// Keys of reusable sockets without a port or a query, by family.
    idle_v4: Vec<u64>,
    idle_v6: Vec<u64>,
    tokens: u64,
    /// The queries with a completion, by deadline; each ends by its deadline.
    deadlines: Deadlines,
    /// Completions to call once the lock is let go, and how their queries ended.
    completed: Vec<(Box<dyn Completion>, Ended)>,
}

/// A query left to send: its socket's key, its token, its bytes (as built: no copy).
type Unsent = (u64, u64, Vec<u8>);

fn key(index: u32, generation: u32) -> u64 {
    u64::from(generation) << 32 | u64::from(index)
}

impl Slots {
    /// The slot of `key`, if its socket is still the one the key names.
    fn slot(&mut self, key: u64) -> Option<&mut Slot> {
        let slot = self.slots.get_mut((key & 0xffff_ffff) as usize)?;
        (u64::from(slot.generation) == key >> 32 && slot.socket.is_some()).then_some(slot)
    }

    /// Adds `socket` to a slot and to the epoll set; returns its key.
    fn add(&mut self, epoll: &Epoll, socket: Socket, v6: bool, reusable: bool) -> io::Result<u64> {
        let index = self.empty.pop().unwrap_or_else(|| {
            self.slots.push(Slot {
                generation: 0,
                socket: None,
                reusable: false,
                v6: false,
                waiting: None,
            });
            (self.slots.len() - 1) as u32
        });
        let slot = &mut self.slots[index as usize];
        slot.reusable = reusable;
        slot.v6 = v6;
        let key = key(index, slot.generation);
        let socket = slot.socket.insert(socket.into());
        // Anything that arrived before this is reported at once.
        let events = (libc::EPOLLIN | libc::EPOLLET) as u32;
        if let Err(e) = epoll.add(socket.as_fd(), events, key) {
            self.close(key);
            return Err(e);
        }
        Ok(key)
    }

    /// A new socket for `server`'s family in the epoll set: bound to `port`, or left for its
    /// first send to bind (and then reusable).
    fn open(&mut self, epoll: &Epoll, server: SocketAddr, port: Option<u16>) -> io::Result<u64> {
        let socket = Socket::new(Domain::for_address(server), Type::DGRAM.nonblocking(), None)?;
        if server.is_ipv6() {
            // Reaches servers written as mapped IPv4 addresses whatever net.ipv6.bindv6only
            // says (an idle IPv6 socket may serve either kind next).
            socket.set_only_v6(false)?;
        }
        sys::set_recv_errors(socket.as_fd(), server.is_ipv6())?;
        if let Some(port) = port {
            let any: IpAddr = match server {
                SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
                SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
            };
            socket.bind(&SocketAddr::new(any, port).into())?;
        }
        self.add(epoll, socket, server.is_ipv6(), port.is_none())
    }

    /// Sends the queries left to send, one after another, emptying `unsent`. A query whose
    /// wait already ended is not sent; one whose send fails gets that error.
    fn send(&mut self, unsent: &mut Vec<Unsent>) {
        let now = Instant::now();
        for (key, token, query) in unsent.drain(..) {
            let Some(slot) = self.slot(key) else { continue };
            let Some(waiting) = slot.waiting.as_mut().filter(|w| w.token == token) else {
                continue;
            };
            waiting.sent = Some(now);
            let socket = slot.socket.as_ref().expect("slot has a socket");
            if let Err(e) = socket.send_to(&query, waiting.server) {
                self.fail(key, e);
            }
        }
    }

    /// The socket of `key` failed: its query gets `error`, and the socket closes.
    fn fail(&mut self, key: u64, error: io::Error) {
        if let Some(waiting) = self.slot(key).and_then(|s| s.waiting.take()) {
            self.end(waiting, Ended::Replied(Err(error)));
        }
        self.close(key);
    }

    /// Tells whoever learns how `waiting`'s query ended (a completion: once the lock is let
    /// go, see `Reader::run_completions`).
    fn end(&mut self, waiting: Waiting, ended: Ended) {
        match waiting.done {
            Done::Task(reply, _) => {
                let Ended::Replied(result) = ended else {
                    return; // a task keeps its own timeout
                };
                let _ = reply.send(result);
            }
            // Its deadline's entry stays, passed over when it comes due.
            Done::Call(completion) => self.completed.push((completion, ended)),
        }
    }

    /// Ends every query with a completion whose deadline is past: it timed out.
    fn expire(&mut self, now: Instant) {
        for (key, token) in self.deadlines.take_due(now) {
            if let Some(waiting) = self.take_waiting(key, token) {
                let dropped = waiting.dropped;
                self.end(waiting, Ended::TimedOut(dropped));
                self.finish(key);
            }
        }
    }

    /// The query `token` on `key`, taken off its socket if it still waits there (a socket
    /// carries many queries, one after another).
    fn take_waiting(&mut self, key: u64, token: u64) -> Option<Waiting> {
        let slot = self.slot(key)?;
        if slot.waiting.as_ref()?.token != token {
            return None;
        }
        slot.waiting.take()
    }

    /// When the earliest deadline of a query with a completion falls due (or a later one's).
    fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.next()
    }

    /// Closes the socket of `key` (which takes it out of the epoll set).
    fn close(&mut self, key: u64) {
        let index = (key & 0xffff_ffff) as u32;
        if let Some(slot) = self.slot(key) {
            slot.socket = None;
            slot.waiting = None;
            slot.generation = slot.generation.wrapping_add(1);
            self.empty.push(index);
        }
    }

    /// Puts a query to `server` on the socket of `key`; returns its token.
    fn wait(&mut self, key: u64, server: SocketAddr, done: Done) -> u64 {
        self.tokens += 1;
        let token = self.tokens;
        let slot = self.slot(key).expect("socket just added");
        slot.waiting = Some(Waiting {
            server,
            dropped: Dropped::default(),
            token,
            sent: None,
            done,
        });
        token
    }

    /// The query on `key` is over: a reusable socket gives its port back, drops whatever is
    /// still queued (nothing sent to an old port may reach a later query) and waits idle,
    /// unless an error was among what it held; any other socket closes.
    fn finish(&mut self, key: u64) {
        let Some(slot) = self.slot(key) else { return };
        slot.waiting = None;
        let (reusable, v6) = (slot.reusable, slot.v6);
        let idle = if v6 {
            self.idle_v6.len()
        } else {
            self.idle_v4.len()
        };
        let index = (key & 0xffff_ffff) as u32;
        let socket = self.slots[index as usize].socket.as_ref();
        let socket = socket.expect("slot has a socket");
        if !reusable
            || idle >= IDLE_MAX
            || sys::disconnect(socket.as_fd()).is_err()
            || !drained(socket)
        {
            self.close(key);
            return;
        }
        if v6 {
            self.idle_v6.push(key);
        } else {
            self.idle_v4.push(key);
        }
    }

    /// An idle socket of this family, if there is one.
    fn idle(&mut self, v6: bool) -> Option<u64> {
        loop {
            let key = if v6 {
                self.idle_v6.pop()
            } else {
                self.idle_v4.pop()
            }?;
            // One closed since (and its slot perhaps reused) is passed over.
            if self.slot(key).is_some_and(|s| s.waiting.is_none()) {
                return Some(key);
            }
        }
    }

    /// Ends the query `token` on `key` if it still waits (its `Sent` was dropped).
    fn abandon(&mut self, key: u64, token: u64) {
        if self.take_waiting(key, token).is_some() {
            self.finish(key);
        }
    }

    /// Reads what arrived on the socket of `key`: the first datagram from the server that
    /// answers its query completes it; an error (ICMP) that names the server fails it and
    /// closes the socket; anything else is dropped.
    fn deliver(&mut self, key: u64, buf: &mut [u8], at: Instant) {
        loop {
            let Some(slot) = self.slot(key) else { return };
            let socket = slot.socket.as_ref().expect("slot has a socket");
            let (n, from) = match socket.recv_from(buf) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let server = slot.waiting.as_ref().map(|w| w.server);
                    if server.is_none_or(|server| errors_name(socket, server)) {
                        self.fail(key, e);
                        return;
                    }
                    tracing::debug!(error = %e, "ignoring an ICMP error about another destination");
                    continue;
                }
            };
            let Some(waiting) = &mut slot.waiting else {
                continue;
            };
            if !same_peer(from, waiting.server) {
                tracing::debug!(%from, "dropping a datagram from another source than the server");
                waiting.dropped.note(&Rejection::Stranger);
                continue;
            }
            let packet = &buf[..n];
            match waiting.expect().check(packet) {
                Ok(info) => {
                    let waiting = slot.waiting.take().expect("checked above");
                    let received = Received {
                        reply: packet.to_vec(),
                        info,
                        dropped: waiting.dropped,
                        sent: waiting.sent.unwrap_or(at),
                        at,
                    };
                    self.end(waiting, Ended::Replied(Ok(received)));
                    self.finish(key);
                    return;
                }
                Err(why) => {
                    tracing::debug!(%why, "dropping a datagram that does not answer our query");
                    waiting.dropped.note(&why);
                }
            }
        }
    }
}

/// A thread's epoll set of upstream sockets and their queries.
struct Reader {
    epoll: Arc<Epoll>,
    slots: Mutex<Slots>,
    /// Queries left to send (its task sends them); those whose wait has ended since are
    /// skipped.
    unsent: Posted<Unsent>,
    /// Its task has ended (the runtime shut down, or the epoll set failed): the thread
    /// needs a new reader.
    stopped: AtomicBool,
}

thread_local! {
    static READER: RefCell<Option<Arc<Reader>>> = const { RefCell::new(None) };
}

/// The calling thread's reader, started on first use (and again after its runtime ended).
fn reader() -> io::Result<Arc<Reader>> {
    READER.with(|current| {
        let mut current = current.borrow_mut();
        if let Some(reader) = current
            .as_ref()
            .filter(|r| !r.stopped.load(Ordering::Relaxed))
        {
            return Ok(reader.clone());
        }
        raise_fd_limit();
        let reader = Arc::new(Reader {
            epoll: Arc::new(Epoll::new()?),
            slots: Mutex::default(),
            unsent: Posted::default(),
            stopped: AtomicBool::new(false),
        });
        let set = sys::watch(reader.epoll.clone())?;
        tokio::spawn(serve(set, Running(reader.clone())));
        *current = Some(reader.clone());
        Ok(reader)
    })
}

/// The reader as its task holds it; when tokio drops the task (run or not), the reader is
/// stopped.
struct Running(Arc<Reader>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::Relaxed);
        // Nothing will send or read for the queries still waiting: they fail now ("upstream
        // reader stopped"), not at their timeout.
        self.0.unsent.clear();
        let (waiting, completed): (Vec<Waiting>, _) = match self.0.slots.lock() {
            Ok(mut slots) => {
                slots.deadlines.clear();
                let completed = std::mem::take(&mut slots.completed);
                let waiting = slots.slots.iter_mut().filter_map(|s| s.waiting.take());
                (waiting.collect(), completed)
            }
            Err(_) => Default::default(),
        };
        // Outside the lock: a task's query sees its channel closed, a completion is told.
        for (completion, ended) in completed {
            completion.complete(ended);
        }
        for waiting in waiting {
            if let Done::Call(completion) = waiting.done {
                let stopped = io::Error::other("upstream reader stopped");
                completion.complete(Ended::Replied(Err(stopped)));
            }
        }
    }
}

/// The reader's task, one per thread, doing three things:
///
/// - **Sending what was left to send.** A batch of client queries, and the forwarding tasks
///   it wakes, run one after another, and each query is left; this task, woken by the first,
///   runs after them all and sends them back to back. A server on this host (a local stub
///   such as systemd-resolved) then finds the next query while still awake from the first,
///   instead of being woken once per query, which the sender pays for.
/// - **Reading replies.** Whenever the epoll set has ready sockets, it takes up to `EVENTS` of
///   them at once and reads each. Sockets are in the set edge-triggered: a socket is reported
///   once per arrival, and each one reported is read until it would block, or its query is
///   over.
/// - **Keeping deadlines** of the queries no task awaits, with one timer: when it fires, what
///   is ready is read first, then what is past its deadline ends. Each wake-up ends with the
///   completions of the queries that ended in it.
///
/// One task, so that they end together: a reader whose task ended is replaced whole.
async fn serve(set: AsyncFd<Arc<Epoll>>, running: Running) {
    let reader = &running.0;
    let mut events = [EpollEvent { events: 0, u64: 0 }; EVENTS];
    let mut buf = vec![0u8; UDP_REPLY_MAX];
    let mut unsent = Vec::new();
    let mut ended = Vec::new();
    // The one timer of the queries with a completion: armed for the earliest deadline, or a
    // later one that has since ended early (it then fires, ends nothing, and is armed anew).
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            () = reader.unsent.take(&mut unsent) => {
                reader.slots.lock().unwrap().send(&mut unsent);
            }
            () = &mut timer, if armed.is_some() => {
                armed = None;
                // What is ready is read before anything expires: a reply that came in time is
                // taken even if the reader wakes late.
                loop {
                    match reader.read_ready(&mut events, &mut buf) {
                        Ok(EVENTS) => {}
                        Ok(_) => break,
                        Err(e) => return failed(e),
                    }
                }
                reader.slots.lock().unwrap().expire(Instant::now());
            }
            ready = set.readable() => {
                let Ok(mut ready) = ready else {
                    return;
                };
                // Fewer than asked: the set was empty. An arrival since is a new event for
                // tokio, and clearing only forgets the readiness this wake-up reported.
                match reader.read_ready(&mut events, &mut buf) {
                    Ok(n) if n < EVENTS => ready.clear_ready(),
                    Ok(_) => {}
                    Err(e) => return failed(e),
                }
            }
        }
        let next = reader.run_completions(&mut ended);
        if let Some(next) = next.filter(|next| armed.is_none_or(|at| *next < at)) {
            timer.as_mut().reset(next.into());
            armed = Some(next);
        }
    }
}

/// The reader's epoll set failed: its task ends, and the next query starts a new one.
fn failed(e: io::Error) {
    tracing::error!(error = %e, "upstream reader failed; starting a new one");
}

impl Reader {
    /// Reads what arrived on the sockets the epoll set reports ready, up to `EVENTS` of them;
    /// how many it reported.
    fn read_ready(&self, events: &mut [EpollEvent], buf: &mut [u8]) -> io::Result<usize> {
        let n = loop {
            match self.epoll.ready(events) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                result => break result?,
            }
        };
        if n > 0 {
            let at = Instant::now();
            let mut slots = self.slots.lock().unwrap();
            for event in &events[..n] {
                slots.deliver(event.u64, buf, at);
            }
        }
        Ok(n)
    }

    /// Calls the completions of the queries that ended (outside the lock: a completion may
    /// start another query); returns the earliest deadline still to keep. `ended` is an empty
    /// list to trade for the one filled (so neither is grown anew at every wake-up), and is
    /// left empty.
    fn run_completions(&self, ended: &mut Vec<(Box<dyn Completion>, Ended)>) -> Option<Instant> {
        let next = {
            let mut slots = self.slots.lock().unwrap();
            std::mem::swap(&mut slots.completed, ended);
            slots.next_deadline()
        };
        for (completion, ended) in ended.drain(..) {
            // A completion that panics loses its own query, as a task that panics does, and
            // not the reader with every other query waiting on it.
            let complete = std::panic::AssertUnwindSafe(|| completion.complete(ended));
            if std::panic::catch_unwind(complete).is_err() {
                tracing::error!("a forwarded query's completion panicked; that query is lost");
            }
        }
        next
    }
}

/// A query on a port of its own, sent (or about to be: see `serve`); `reply` waits for the
/// answer. Dropping it (at a timeout) ends the query, frees its port, and if it was not sent
/// yet, it never is.
pub(crate) struct Sent {
    reader: Arc<Reader>,
    key: u64,
    token: u64,
    reply: oneshot::Receiver<Reply>,
}

/// Sends `query` to `server` from a fresh port drawn at random (when the reader's task next
/// runs); its reply is the first datagram `expect` accepts.
pub(crate) fn send(server: SocketAddr, expect: &Expect, query: Vec<u8>) -> io::Result<Sent> {
    let sent = wait_on(server, expect, Slots::fresh)?;
    sent.post(query);
    Ok(sent)
}

/// `send`, with nothing awaiting the reply: `completion` (which says what the reply must
/// match) is told how the query ended, by the reader, at the latest at `deadline` (or at once
/// that it was not started, if no socket could be had: `send` then has the error).
pub(crate) fn start(
    server: SocketAddr,
    query: Vec<u8>,
    deadline: Instant,
    completion: Box<dyn Completion>,
) {
    let Ok(reader) = reader() else {
        return completion.complete(Ended::NotStarted);
    };
    let mut slots = reader.slots.lock().unwrap();
    let Ok(key) = slots.fresh(&reader.epoll, server) else {
        drop(slots);
        return completion.complete(Ended::NotStarted);
    };
    let token = slots.wait(key, server, Done::Call(completion));
    slots.deadlines.add(deadline, key, token);
    drop(slots);
    reader.unsent.post((key, token, query));
}

impl Slots {
    /// A socket for a query to `server` on a port drawn at random: its key.
    fn fresh(&mut self, epoll: &Epoll, server: SocketAddr) -> io::Result<u64> {
        let ports = ports();
        for _ in 0..BIND_TRIES {
            match ports.draw() {
                Source::Kernel => break,
                Source::Own(port) => match self.open(epoll, server, Some(port)) {
                    Err(e) if port_taken(&e) => continue,
                    key => return key,
                },
            }
        }
        self.on_port(epoll, server, None)
    }

    /// A new socket bound to `port`, or with `None` an idle socket (or a new one) that its
    /// send binds to a port of the kernel's choosing.
    fn on_port(&mut self, epoll: &Epoll, server: SocketAddr, port: Option<u16>) -> io::Result<u64> {
        match port.map_or_else(|| self.idle(server.is_ipv6()), |_| None) {
            Some(key) => Ok(key),
            None => self.open(epoll, server, port),
        }
    }
}

/// Whether a bind failed because the port is not ours to take (in use, or below
/// ip_unprivileged_port_start): another draw will do.
fn port_taken(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied
    )
}

/// Readies a socket (`socket` picks it) and sets up the wait for a reply to a query to
/// `server` on it; `Sent::post` then leaves the query for the reader's task to send.
fn wait_on(
    server: SocketAddr,
    expect: &Expect,
    socket: impl FnOnce(&mut Slots, &Epoll, SocketAddr) -> io::Result<u64>,
) -> io::Result<Sent> {
    let reader = reader()?;
    let (done, reply) = oneshot::channel();
    let mut slots = reader.slots.lock().unwrap();
    let key = socket(&mut slots, &reader.epoll, server)?;
    let token = slots.wait(key, server, Done::Task(done, Box::new(*expect)));
    drop(slots);
    Ok(Sent {
        reader,
        key,
        token,
        reply,
    })
}

/// Whether `from` is `server`: address and port, and for a link-local server the interface
/// (its scope; a reply from any other address carries none).
fn same_peer(from: SocketAddr, server: SocketAddr) -> bool {
    match (from, server) {
        (SocketAddr::V6(from), SocketAddr::V6(server)) => {
            from.ip() == server.ip()
                && from.port() == server.port()
                && (!server.ip().is_unicast_link_local() || from.scope_id() == server.scope_id())
        }
        _ => from == server,
    }
}

/// Whether the errors queued on `socket` (IP_RECVERR) include one drawn by a datagram to
/// `server`; reading them empties the queue. An unconnected socket is told of the errors that
/// name its port, whatever the destination of the datagram that drew them; a connected
/// socket's kernel passes over those about another destination, and so does this. An error
/// whose entry is gone (read with an earlier one, or never queued for want of buffer space)
/// cannot be placed, and is passed over too: the query then ends with its reply or timeout.
fn errors_name(socket: &UdpSocket, server: SocketAddr) -> bool {
    let socket = socket2::SockRef::from(socket);
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 64];
    let mut named = false;
    while let Ok((_, destination)) = socket.recv_from_with_flags(&mut buf, libc::MSG_ERRQUEUE) {
        named |= destination
            .as_socket()
            .is_some_and(|d| same_peer(d, server));
    }
    named
}

/// Reads and drops whatever is still queued on a socket whose query is over; whether it can
/// be kept: not if an error was among it (what is queued behind an error is read too, and
/// the socket then closes, with its error queue).
fn drained(socket: &UdpSocket) -> bool {
    let mut byte = [0u8; 1];
    let mut clean = true;
    loop {
        match socket.recv(&mut byte) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return clean,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => clean = false,
        }
    }
}

impl Sent {
    /// Leaves `query` for the reader's task to send.
    fn post(&self, query: Vec<u8>) {
        self.reader.unsent.post((self.key, self.token, query));
    }

    /// The matching reply, or the socket's error (an ICMP error, or the send's own: this
    /// query's alone).
    pub(crate) async fn reply(&mut self) -> Reply {
        match (&mut self.reply).await {
            Ok(reply) => reply,
            Err(_) => Err(io::Error::other("upstream reader stopped")),
        }
    }

    /// What was dropped so far while this query waits (read at its timeout).
    pub(crate) fn dropped(&self) -> Dropped {
        let mut slots = self.reader.slots.lock().unwrap();
        slots
            .slot(self.key)
            .and_then(|s| s.waiting.as_ref())
            .filter(|w| w.token == self.token)
            .map_or_else(Dropped::default, |w| w.dropped)
    }

    /// The source port this query went out from.
    #[cfg(test)]
    fn port(&self) -> u16 {
        let mut slots = self.reader.slots.lock().unwrap();
        let slot = slots.slot(self.key).expect("in flight");
        let socket = slot.socket.as_ref().unwrap();
        socket.local_addr().unwrap().port()
    }
}

impl Drop for Sent {
    fn drop(&mut self) {
        // Over already if the reader completed it.
        self.reader
            .slots
            .lock()
            .unwrap()
            .abandon(self.key, self.token);
    }
}

/// Where a query's port comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The kernel's ephemeral range, chosen at the first send.
    Kernel,
    /// This port, outside the kernel's range, bound explicitly.
    Own(u16),
}

/// The ports drawn from: the kernel's range (`kernel` ports after its reserved ones) and the
/// ports above 1023 outside it that are not skipped (`outside`).
struct Ports {
    kernel: u32,
    outside: Vec<u16>,
}

impl Ports {
    /// Reads the kernel's range and reserved ports and /etc/services.
    fn of_this_host() -> Ports {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let range = read("/proc/sys/net/ipv4/ip_local_port_range");
        let mut bounds = range.split_whitespace().filter_map(|p| p.parse().ok());
        let range = match (bounds.next(), bounds.next()) {
            (Some(low), Some(high)) if low <= high => (low, high),
            _ => (32768, 60999),
        };
        let reserved = read("/proc/sys/net/ipv4/ip_local_reserved_ports");
        let services = read("/etc/services");
        Ports::new(range, &reserved, &services)
    }

    fn new(kernel: (u16, u16), reserved: &str, services: &str) -> Ports {
        let mut skip = vec![false; 1 << 16];
        for (first, last) in port_ranges(reserved) {
            for port in first..=last {
                skip[usize::from(port)] = true;
            }
        }
        let in_kernel = (kernel.0..=kernel.1)
            .filter(|&p| !skip[usize::from(p)])
            .count() as u32;
        for port in AVOID.iter().copied().chain(services_udp_ports(services)) {
            skip[usize::from(port)] = true;
        }
        let outside = (FIRST_PORT..=u16::MAX)
            .filter(|p| !(kernel.0..=kernel.1).contains(p) && !skip[usize::from(*p)])
            .collect();
        Ports {
            kernel: in_kernel,
            outside,
        }
    }

    /// A port drawn uniformly from all of them.
    fn draw(&self) -> Source {
        let i = rand::random_range(0..self.kernel + self.outside.len() as u32);
        match i.checked_sub(self.kernel) {
            None => Source::Kernel,
            Some(i) => Source::Own(self.outside[i as usize]),
        }
    }
}

fn ports() -> &'static Ports {
    static PORTS: OnceLock<Ports> = OnceLock::new();
    PORTS.get_or_init(Ports::of_this_host)
}

/// The UDP ports of an /etc/services text ("name port/udp aliases # comment").
fn services_udp_ports(text: &str) -> impl Iterator<Item = u16> + '_ {
    text.lines().filter_map(|line| {
        let line = line.split('#').next()?;
        let (port, proto) = line.split_whitespace().nth(1)?.split_once('/')?;
        (proto == "udp").then(|| port.parse().ok()).flatten()
    })
}

/// The ranges of a kernel port list ("8080,9000-9010").
fn port_ranges(text: &str) -> impl Iterator<Item = (u16, u16)> + '_ {
    text.trim().split(',').filter_map(|item| {
        let (first, last) = item.split_once('-').unwrap_or((item, item));
        Some((first.trim().parse().ok()?, last.trim().parse().ok()?))
    })
}

/// Lifts the soft limit on open files to the hard limit, at most `FD_LIMIT`, once.
fn raise_fd_limit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok((soft, hard)) = sys::open_files_limit() else {
            return;
        };
        let wanted = hard.min(FD_LIMIT as libc::rlim_t);
        if soft < wanted
            && let Err(error) = sys::set_open_files_limit(wanted, hard)
        {
            tracing::warn!(
                %error,
                "cannot raise the limit on open files; upstream queries in flight are bounded by it"
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::dns::wire::{self, Query};

    fn question(name: &str) -> (Vec<u8>, Query) {
        let bytes = wire::build_query(&wire::name_from_dotted(name).unwrap(), 1, 0);
        let q = wire::parse_query(&bytes).unwrap();
        (bytes, q)
    }

    /// The upstream query for `name` with this ID, and what its reply must match.
    fn upstream(name: &str, id: u16) -> (Vec<u8>, Expect) {
        let (client, q) = question(name);
        (
            wire::upstream_query(&client, &q, id, false),
            Expect::plain(&q, id),
        )
    }

    /// `send` from `port`, or with `None` from a port of the kernel's choosing.
    fn send_from(
        server: SocketAddr,
        expect: &Expect,
        query: &[u8],
        port: Option<u16>,
    ) -> io::Result<Sent> {
        let sent = wait_on(server, expect, |slots, epoll, server| {
            slots.on_port(epoll, server, port)
        })?;
        sent.post(query.to_vec());
        Ok(sent)
    }

    /// Sends a query for `name` to `server` with a random ID.
    fn ask(server: SocketAddr, name: &str) -> Sent {
        let (query, expect) = upstream(name, rand::random());
        send(server, &expect, query.clone()).unwrap()
    }

    /// The reply a server gives to `query`: the same bytes, marked as a response.
    fn reply_to(query: &[u8]) -> Vec<u8> {
        let mut reply = query.to_vec();
        reply[2] |= 0x80;
        reply
    }

    async fn recv(server: &tokio::net::UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buf = [0u8; 512];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), server.recv_from(&mut buf))
            .await
            .expect("query arrives")
            .unwrap();
        (buf[..n].to_vec(), from)
    }

    async fn reply_of(mut sent: Sent) -> Reply {
        tokio::time::timeout(Duration::from_secs(5), sent.reply())
            .await
            .expect("reply or error within 5 s")
    }

    fn sockets_in_use() -> usize {
        let reader = reader().unwrap();
        let slots = reader.slots.lock().unwrap();
        slots.slots.iter().filter(|s| s.waiting.is_some()).count()
    }

    #[tokio::test]
    async fn replies_reach_the_query_whose_id_and_question_match() {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sent = ask(server.local_addr().unwrap(), "a.example");
        let (query, from) = recv(&server).await;
        let reply = reply_to(&query);
        // A forged reply with another ID, one for another question, then the real one.
        let mut forged = reply.clone();
        forged[0] ^= 0xff;
        server.send_to(&forged, from).await.unwrap();
        let (other, _) = question("b.example");
        let mut other = reply_to(&other);
        other[..2].copy_from_slice(&query[..2]);
        server.send_to(&other, from).await.unwrap();
        server.send_to(&reply, from).await.unwrap();
        let Received {
            reply: got,
            dropped,
            ..
        } = reply_of(sent).await.unwrap();
        assert_eq!(
            dropped.other, 2,
            "the forgery and the other question, counted"
        );
        assert_eq!(got, reply);
    }

    /// The sockets are not connected: a reply is taken only from the server's address and
    /// port. The same bytes from another port of the same host are dropped and counted.
    #[tokio::test]
    async fn replies_from_another_source_are_dropped_and_counted() {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sent = ask(server.local_addr().unwrap(), "a.example");
        let (query, from) = recv(&server).await;
        let reply = reply_to(&query);
        stranger.send_to(&reply, from).await.unwrap();
        server.send_to(&reply, from).await.unwrap();
        let Received {
            reply: got,
            dropped,
            ..
        } = reply_of(sent).await.unwrap();
        assert_eq!(got, reply);
        assert_eq!(dropped.other, 1, "the stranger's copy, counted");
    }

    /// What `dns::guard` asks of a reply is asked of every datagram on the port: one in another
    /// case and one with another client cookie are dropped and counted, the server's taken; a
    /// query that gets only such datagrams times out with the counts still readable.
    #[tokio::test]
    async fn replies_failing_case_or_cookie_are_dropped_and_counted() {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let guard = crate::dns::guard::Guard::new(addr);
        let (client, q) = question("abcdefghijklmnopqrstuvwxyz.example");
        let udp = crate::dns::transport::Protocol::Udp;
        let (query, expect) = guard.prepare(&client, &q, udp, true, true, true);
        let sent = send(addr, &expect, query.clone()).unwrap();
        let (query, from) = recv(&server).await;
        let reply = reply_to(&query);
        let mut lower = reply.clone();
        lower[12..q.question_end - 4].make_ascii_lowercase();
        let mut cookie = reply.clone();
        let last = cookie.len() - 1;
        cookie[last] ^= 0xff;
        for datagram in [&lower, &cookie, &reply] {
            server.send_to(datagram, from).await.unwrap();
        }
        let Received {
            reply: got,
            dropped,
            ..
        } = reply_of(sent).await.unwrap();
        assert_eq!(got, reply);
        assert_eq!((dropped.case, dropped.wrong_cookie), (1, 1), "{dropped:?}");

        let (query, expect) = guard.prepare(&client, &q, udp, true, true, true);
        let mut sent = send(addr, &expect, query.clone()).unwrap();
        let (query, from) = recv(&server).await;
        let mut lower = reply_to(&query);
        lower[12..q.question_end - 4].make_ascii_lowercase();
        server.send_to(&lower, from).await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(200), sent.reply()).await;
        assert!(waited.is_err(), "nothing acceptable came");
        assert_eq!(sent.dropped().case, 1);
    }

    #[tokio::test]
    async fn every_query_has_a_port_of_its_own_drawn_from_the_whole_range() {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let sent: Vec<Sent> = (0..100)
            .map(|i| ask(addr, &format!("n{i}.example")))
            .collect();
        let mut seen = Vec::new();
        for _ in 0..100 {
            seen.push(recv(&server).await.1.port());
        }
        // A port the kernel chooses is chosen at the send.
        let mut ports: Vec<u16> = sent.iter().map(Sent::port).collect();
        for port in &seen {
            assert!(ports.contains(port), "sent from the query's own port");
        }
        assert!(ports.iter().all(|&p| p >= FIRST_PORT));
        // Both ways to a port are taken (by chance not, with the default range: 0.56^100 and
        // 0.44^100).
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
        let mut range = range.split_whitespace().map(|p| p.parse::<u16>().unwrap());
        let kernel = range.next().unwrap()..=range.next().unwrap();
        let in_kernel = |p: &u16| kernel.contains(p);
        assert!(ports.iter().any(in_kernel), "{ports:?}");
        if super::ports().outside.len() > 10_000 {
            assert!(!ports.iter().all(in_kernel), "{ports:?}");
        }
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 100, "100 queries in flight, 100 ports");
        drop(sent);
        assert_eq!(sockets_in_use(), 0, "every query given up is over");
    }

    /// A socket the kernel bound gives its port back after its query and is reused with a
    /// new one; what was still queued for the old port never reaches the next query.
    #[tokio::test]
    async fn a_reused_socket_gets_a_new_port_and_nothing_left_from_the_old() {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let (first, e1) = upstream("first.example", 1);
        let (second, e2) = upstream("second.example", 2);
        let sent = send_from(addr, &e1, &first, None).unwrap();
        let (query, from) = recv(&server).await;
        let (key, old_port) = (sent.key, sent.port());
        assert_eq!(from.port(), old_port);
        // The reply, then a forgery that would answer the next query, both queued at once.
        server.send_to(&reply_to(&query), from).await.unwrap();
        server.send_to(&reply_to(&second), from).await.unwrap();
        assert_eq!(reply_of(sent).await.unwrap().reply, reply_to(&first));

        let mut sent = send_from(addr, &e2, &second, None).unwrap();
        assert_eq!(sent.key, key, "the same socket, reused");
        let (_, from) = recv(&server).await;
        assert_eq!(from.port(), sent.port());
        assert_ne!(
            sent.port(),
            old_port,
            "a new port (same one by chance: 1 in 28 232)"
        );
        let waited = tokio::time::timeout(Duration::from_millis(200), sent.reply()).await;
        assert!(
            waited.is_err(),
            "the forgery queued for the old port was dropped"
        );
    }

    /// Queries left while a task runs go out together when the reader's task runs after it,
    /// in the order they were left; one whose wait ended before then is not sent at all, not
    /// even on its socket's next query (the abandoned one's kernel-bound socket is reused at
    /// once, so only the query's token tells the two apart).
    #[tokio::test]
    async fn queries_left_together_go_out_together_less_any_abandoned() {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let (first, e1) = upstream("first.example", 1);
        let (second, e2) = upstream("second.example", 2);
        let (third, e3) = upstream("third.example", 3);
        let (later, e4) = upstream("later.example", 4);
        let kept = send(addr, &e1, first.clone()).unwrap();
        let abandoned = send_from(addr, &e2, &second, None).unwrap();
        let key = abandoned.key;
        drop(abandoned);
        let also_kept = send_from(addr, &e3, &third, None).unwrap();
        assert_eq!(also_kept.key, key, "the same socket, reused");
        {
            let reader = reader().unwrap();
            assert_eq!(reader.unsent.len(), 3, "none sent yet");
        }
        assert_eq!(recv(&server).await.0, first);
        assert_eq!(recv(&server).await.0, third);
        let after = send(addr, &e4, later.clone()).unwrap();
        assert_eq!(
            recv(&server).await.0,
            later,
            "the abandoned query never went out"
        );
        drop((kept, also_kept, after));
    }

    /// When the reader's task ends (here, with its runtime), the queries waiting on it fail at
    /// once instead of waiting out their timeout.
    #[test]
    fn queries_waiting_on_a_stopped_reader_fail_at_once() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let first = runtime();
        let mut sent = first.block_on(async { ask(addr, "a.example") });
        drop(first);
        let got = runtime()
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), sent.reply()).await });
        let error = got.expect("failed at once, not timed out").unwrap_err();
        assert_eq!(error.to_string(), "upstream reader stopped");
        // So does one that no task awaits: its completion is told.
        let (tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
        let first = runtime();
        first.block_on(async {
            let (query, expect) = upstream("b.example", 2);
            let told = Box::new(Told(tx, "b", expect));
            start(addr, query, Instant::now() + Duration::from_secs(30), told);
        });
        drop(first);
        match ended.try_recv() {
            Ok(("b", Ended::Replied(Err(e)))) => {
                assert_eq!(e.to_string(), "upstream reader stopped")
            }
            other => panic!("told at once that the reader stopped: {other:?}"),
        }
    }

    /// A query whose send fails (too big for a datagram) gets that error and loses its socket;
    /// the query left after it in the same batch still goes out.
    #[tokio::test]
    async fn a_query_that_cannot_be_sent_fails_alone() {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let (_, e1) = upstream("big.example", 1);
        let failed = send(addr, &e1, vec![0u8; 70_000]).unwrap();
        let (fine, e2) = upstream("fine.example", 2);
        let ok = send(addr, &e2, fine.clone()).unwrap();
        let error = reply_of(failed).await.unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EMSGSIZE), "{error}");
        assert_eq!(recv(&server).await.0, fine);
        assert_eq!(sockets_in_use(), 1, "only the query that went out waits");
        drop(ok);
    }

    /// Tells a channel how its query ended.
    struct Told(
        tokio::sync::mpsc::UnboundedSender<(&'static str, Ended)>,
        &'static str,
        Expect,
    );

    impl Completion for Told {
        fn expect(&self) -> &Expect {
            &self.2
        }

        fn complete(self: Box<Self>, ended: Ended) {
            let _ = self.0.send((self.1, ended));
        }
    }

    /// Queries started with a completion (no task awaits them) end with their reply, as
    /// the reader reads it, or at their deadline with what was dropped meanwhile; a deadline
    /// earlier than every one the reader keeps is kept too. Their sockets are then free.
    #[tokio::test]
    async fn a_started_query_ends_with_its_reply_or_at_its_deadline() {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let (tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
        let told = |what, expect| Box::new(Told(tx.clone(), what, expect));
        let (late, e1) = upstream("late.example", 1);
        start(
            addr,
            late,
            Instant::now() + Duration::from_secs(30),
            told("late", e1),
        );
        // Sent: the reader keeps its 30 s deadline before the next two are started.
        recv(&server).await;
        let (slow, e2) = upstream("slow.example", 2);
        let slow_started = Instant::now();
        start(
            addr,
            slow,
            Instant::now() + Duration::from_secs(2),
            told("slow", e2),
        );
        let (soon, e3) = upstream("soon.example", 3);
        start(
            addr,
            soon,
            Instant::now() + Duration::from_secs(1),
            told("soon", e3),
        );
        // The server answers the third, after a forgery with the wrong ID, and never the
        // others.
        let mut third = None;
        for _ in 0..2 {
            let (query, from) = recv(&server).await;
            if query[..2] == [0, 3] {
                third = Some((query, from));
            }
        }
        let (query, from) = third.expect("the third query arrives");
        let mut forged = reply_to(&query);
        forged[1] = 9;
        server.send_to(&forged, from).await.unwrap();
        server.send_to(&reply_to(&query), from).await.unwrap();
        let mut next = async || {
            let soon = tokio::time::timeout(Duration::from_secs(10), ended.recv());
            soon.await
                .expect("within 10 s")
                .expect("a completion is called")
        };
        match next().await {
            ("soon", Ended::Replied(Ok(received))) => {
                assert_eq!(received.reply, reply_to(&query));
                assert_eq!(received.dropped.other, 1, "the forgery was dropped");
            }
            other => panic!("the answered query ends first, with its reply: {other:?}"),
        }
        // The 30 s deadline was kept first, yet the 2 s one ends the silent query.
        assert!(matches!(next().await, ("slow", Ended::TimedOut(d)) if d.total() == 0));
        assert!(
            slow_started.elapsed() >= Duration::from_secs(2),
            "not before"
        );
        assert_eq!(sockets_in_use(), 1, "only the 30 s query still waits");
        let reader = reader().unwrap();
        assert_eq!(
            reader.slots.lock().unwrap().deadlines.len(),
            1,
            "and its deadline"
        );
        assert!(ended.try_recv().is_err());
    }

    /// A completion that says it was called, then panics.
    struct Panics(Told);

    impl Completion for Panics {
        fn expect(&self) -> &Expect {
            self.0.expect()
        }

        fn complete(self: Box<Self>, ended: Ended) {
            Box::new(self.0).complete(ended);
            panic!("a completion's bug");
        }
    }

    /// A completion that panics loses its own query only: the reader goes on, and the
    /// queries waiting on it are answered.
    #[tokio::test]
    async fn a_completion_that_panics_loses_only_its_own_query() {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let (tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
        let deadline = || Instant::now() + Duration::from_secs(10);
        let (bad, e1) = upstream("bad.example", 1);
        let panics = Box::new(Panics(Told(tx.clone(), "bad", e1)));
        start(addr, bad, deadline(), panics);
        let (good, e2) = upstream("good.example", 2);
        start(addr, good, deadline(), Box::new(Told(tx, "good", e2)));
        let mut queries = [recv(&server).await, recv(&server).await];
        queries.sort_by_key(|(query, _)| query[1]);
        let mut next = async || {
            let soon = tokio::time::timeout(Duration::from_secs(5), ended.recv());
            soon.await
                .expect("within 5 s")
                .expect("a completion is called")
        };
        // The first is answered, and its completion panics; then the second is answered.
        for (query, from) in &queries {
            server.send_to(&reply_to(query), from).await.unwrap();
            let (what, told) = next().await;
            assert!(matches!(told, Ended::Replied(Ok(_))), "{what}: {told:?}");
        }
    }

    /// A port unreachable (what a forged ICMP error does too) fails the query whose port it
    /// names and no other: not the queries waiting on the same server, not one waiting on
    /// another server, whichever way the refused query's port was chosen. Over IPv4, over
    /// IPv6, and to an IPv4 server by its mapped IPv6 address (an IPv6 socket told of an
    /// ICMPv4 error), where the host has IPv6.
    #[tokio::test]
    async fn an_icmp_error_fails_only_the_query_that_used_the_port() {
        let v4: IpAddr = Ipv4Addr::LOCALHOST.into();
        let mapped = |a: SocketAddr| match a {
            SocketAddr::V4(a) => SocketAddr::new(a.ip().to_ipv6_mapped().into(), a.port()),
            v6 => v6,
        };
        icmp_error_fails_only_its_query(v4, |a| a).await;
        if std::net::UdpSocket::bind("[::1]:0").is_ok() {
            icmp_error_fails_only_its_query(Ipv6Addr::LOCALHOST.into(), |a| a).await;
            icmp_error_fails_only_its_query(v4, mapped).await;
        }
    }

    /// The servers listen on `ip`; virtdns asks them at `seen_as` their address.
    async fn icmp_error_fails_only_its_query(ip: IpAddr, seen_as: fn(SocketAddr) -> SocketAddr) {
        let mut live = tokio::net::UdpSocket::bind((ip, 0)).await.unwrap();
        let other = tokio::net::UdpSocket::bind((ip, 0)).await.unwrap();
        let bound = live.local_addr().unwrap();
        let addr = seen_as(bound);
        for own_port in [false, true] {
            // Two queries wait on the server and one on another server.
            let (first, second, elsewhere) = (
                ask(addr, "first.example"),
                ask(addr, "second.example"),
                ask(seen_as(other.local_addr().unwrap()), "elsewhere.example"),
            );
            let (q1, from1) = recv(&live).await;
            let (q2, from2) = recv(&live).await;
            let (q3, from3) = recv(&other).await;
            // The server's port closes: a query to it now is refused (ICMP port unreachable).
            drop(live);
            let (query, expect) = upstream("refused.example", 7);
            let refused = loop {
                let port = match ports().draw() {
                    Source::Own(port) if own_port => Some(port),
                    Source::Kernel if !own_port => None,
                    _ => continue,
                };
                match send_from(addr, &expect, &query, port) {
                    Err(e) if port_taken(&e) => continue,
                    sent => break sent.unwrap(),
                }
            };
            let error = reply_of(refused).await.unwrap_err();
            assert_eq!(
                error.kind(),
                io::ErrorKind::ConnectionRefused,
                "{addr}: {error}"
            );
            // The server comes back on its port and answers the queries it had taken.
            live = tokio::net::UdpSocket::bind(bound).await.unwrap();
            live.send_to(&reply_to(&q1), from1).await.unwrap();
            live.send_to(&reply_to(&q2), from2).await.unwrap();
            other.send_to(&reply_to(&q3), from3).await.unwrap();
            assert_eq!(reply_of(first).await.unwrap().reply, reply_to(&q1));
            assert_eq!(reply_of(second).await.unwrap().reply, reply_to(&q2));
            assert_eq!(reply_of(elsewhere).await.unwrap().reply, reply_to(&q3));
        }
        assert_eq!(sockets_in_use(), 0);
    }

    /// A socket whose query is over is emptied; it is kept only if no error was among what
    /// it held, and what was queued behind an error is read too.
    #[tokio::test]
    async fn a_socket_left_with_an_error_is_not_kept() {
        let ours = UdpSocket::bind("127.0.0.1:0").unwrap();
        ours.set_nonblocking(true).unwrap();
        sys::set_recv_errors(ours.as_fd(), false).unwrap();
        let addr = ours.local_addr().unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let closed = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(drained(&ours), "nothing queued");
        peer.send_to(b"late", addr).unwrap();
        assert!(drained(&ours), "a datagram alone is read and dropped");
        // A datagram to a closed port draws a port unreachable; waited for without reading it
        // (the kernel may finish the delivery later, in a thread of its own).
        ours.send_to(b"query", closed).unwrap();
        let ours = tokio::net::UdpSocket::from_std(ours).unwrap();
        let error = ours.ready(tokio::io::Interest::ERROR);
        let arrived = tokio::time::timeout(Duration::from_secs(5), error).await;
        arrived.expect("the ICMP error arrives").unwrap();
        let ours = ours.into_std().unwrap();
        peer.send_to(b"behind", addr).unwrap();
        assert!(!drained(&ours), "an error was queued");
        let mut buf = [0u8; 16];
        let left = ours.recv(&mut buf).unwrap_err();
        assert_eq!(left.kind(), io::ErrorKind::WouldBlock, "all of it read");
    }

    #[test]
    fn ports_are_drawn_uniformly_from_the_kernels_range_and_the_rest() {
        let services = "domain 53/udp\nopenvpn 1194/tcp\nopenvpn 1194/udp # VPN\n# x 9/udp\nbad\n";
        assert_eq!(services_udp_ports(services).collect::<Vec<_>>(), [53, 1194]);
        let ranges: Vec<_> = port_ranges("8080,40000-40009\n").collect();
        assert_eq!(ranges, [(8080, 8080), (40000, 40009)]);
        assert_eq!(port_ranges("\n").count(), 0);

        let ports = Ports::new((32768, 60999), "8080,40000-40009", services);
        assert_eq!(ports.kernel, 28232 - 10);
        // 1024..=32767 and 61000..=65535, less 1194, 8080 and AVOID (51820 is in the range).
        assert_eq!(ports.outside.len(), 31744 + 4536 - 2 - (AVOID.len() - 1));
        assert!(!ports.outside.contains(&1194) && !ports.outside.contains(&4789));
        let draws = 100_000;
        let kernel = (0..draws)
            .filter(|_| ports.draw() == Source::Kernel)
            .count();
        let expected = draws as f64 * 28222.0 / (28222.0 + ports.outside.len() as f64);
        assert!(
            (kernel as f64 - expected).abs() < 1000.0,
            "{kernel} vs {expected}"
        );

        let wide = Ports::new((1024, 65535), "", services);
        assert!(
            wide.outside.is_empty(),
            "a widened range leaves it all to the kernel"
        );
    }
}
