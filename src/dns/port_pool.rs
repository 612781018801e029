//! Upstream UDP sockets, kept open and shared between queries (RFC 5452 9.2: a changing pool
//! of random ports rather than one socket per query).
//!
//! Per server and per thread, up to `POOL_SIZE` sockets are connected to the server, each on
//! a port the kernel picked at random. A query goes out on a randomly chosen one with a random
//! ID not in flight on it, so a forger must guess port and ID together; every socket is retired
//! after `MAX_USES` queries and replaced on a fresh random port, so the set keeps changing.
//! A reader task per socket hands each datagram to the query whose ID *and* question it
//! matches; anything else is dropped. Compared with a socket per query this saves six system
//! calls per forwarded query (socket, bind, connect, close and two epoll updates), which was a
//! third of the forwarding cost. Written by hand: no crate we use multiplexes DNS over UDP.

use crate::dns::wire::{self, Query, ReplyInfo};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

/// Sockets per server and thread.
const POOL_SIZE: usize = 16;
/// Queries a socket carries before it is replaced by one on a new random port. At 40 000
/// queries/s the 16 ports of a pool all change within half a second; replacing them faster
/// (64 uses) churned so many short-lived sockets and tasks among the cached answers that
/// glibc's heap fragmented: 124 MB RSS with 100 000 answers cached, against 40 MB now.
const MAX_USES: u32 = 1024;
/// Largest UDP reply read from an upstream (we advertise `wire::EDNS_PAYLOAD`).
const UDP_REPLY_MAX: usize = 4096;
/// How often an idle reader checks whether its retired socket can close.
const IDLE_CHECK: Duration = Duration::from_secs(2);

type Reply = Result<(Vec<u8>, ReplyInfo), io::ErrorKind>;

struct Waiter {
    question: Query,
    /// Which registration this is: a later query may reuse the ID once this one is answered.
    token: u64,
    done: oneshot::Sender<Reply>,
}

static TOKENS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct PooledSocket {
    socket: UdpSocket,
    pending: Mutex<HashMap<u16, Waiter>>,
    uses: AtomicU32,
    retired: AtomicBool,
}

thread_local! {
    static POOLS: RefCell<HashMap<SocketAddr, Vec<Arc<PooledSocket>>>> = RefCell::new(HashMap::new());
}

/// A query registered on a pooled socket: send `query` bytes built with `id`, then `wait`.
pub struct Registration {
    socket: Arc<PooledSocket>,
    pub id: u16,
    token: u64,
    reply: oneshot::Receiver<Reply>,
}

/// Picks a socket for `server` and reserves a random ID on it for `q`.
pub fn register(server: SocketAddr, q: &Query) -> io::Result<Registration> {
    let socket = pick(server)?;
    let (done, reply) = oneshot::channel();
    let mut pending = socket.pending.lock().unwrap();
    let id = loop {
        let id: u16 = rand::random();
        if !pending.contains_key(&id) {
            break id;
        }
    };
    let token = TOKENS.fetch_add(1, Ordering::Relaxed);
    pending.insert(
        id,
        Waiter {
            question: *q,
            token,
            done,
        },
    );
    drop(pending);
    Ok(Registration {
        socket,
        id,
        token,
        reply,
    })
}

impl Registration {
    pub async fn send(&self, query: &[u8]) -> io::Result<()> {
        self.socket.socket.send(query).await.map(|_| ())
    }

    /// The matching reply; dropping the registration (e.g. on timeout) frees the ID.
    pub async fn wait(mut self) -> Result<(Vec<u8>, ReplyInfo), io::Error> {
        match (&mut self.reply).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(kind)) => Err(io::Error::from(kind)),
            Err(_) => Err(io::Error::other("reader stopped")),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut pending = self.socket.pending.lock().unwrap();
        if pending.get(&self.id).is_some_and(|w| w.token == self.token) {
            pending.remove(&self.id);
        }
    }
}

fn pick(server: SocketAddr) -> io::Result<Arc<PooledSocket>> {
    POOLS.with(|pools| {
        let mut pools = pools.borrow_mut();
        let sockets = pools.entry(server).or_default();
        sockets.retain(|s| !s.retired.load(Ordering::Relaxed));
        let chosen = if sockets.len() < POOL_SIZE {
            let s = open(server)?;
            sockets.push(s.clone());
            s
        } else {
            sockets[rand::random_range(0..sockets.len())].clone()
        };
        if chosen.uses.fetch_add(1, Ordering::Relaxed) + 1 >= MAX_USES {
            chosen.retired.store(true, Ordering::Relaxed);
        }
        Ok(chosen)
    })
}

/// A socket on a random port, connected to `server` (the kernel drops datagrams from any
/// other source), with its reader task.
fn open(server: SocketAddr) -> io::Result<Arc<PooledSocket>> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let std_socket = std::net::UdpSocket::bind(local)?;
    std_socket.connect(server)?;
    std_socket.set_nonblocking(true)?;
    let pooled = Arc::new(PooledSocket {
        socket: UdpSocket::from_std(std_socket)?,
        pending: Mutex::new(HashMap::new()),
        uses: AtomicU32::new(0),
        retired: AtomicBool::new(false),
    });
    tokio::spawn(read_replies(pooled.clone()));
    Ok(pooled)
}

/// Hands each datagram to the query it answers; stops once the socket is retired and idle.
async fn read_replies(pooled: Arc<PooledSocket>) {
    let mut buf = [0u8; UDP_REPLY_MAX];
    loop {
        {
            // Under the lock registrations take: none can slip in after this check.
            let pending = pooled.pending.lock().unwrap();
            if pending.is_empty() && pooled.retired.load(Ordering::Relaxed) {
                return;
            }
        }
        let n = match tokio::time::timeout(IDLE_CHECK, pooled.socket.recv(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                // ICMP "port unreachable" and the like: everyone waiting learns it at once.
                for (_, w) in pooled.pending.lock().unwrap().drain() {
                    let _ = w.done.send(Err(e.kind()));
                }
                continue;
            }
        };
        let packet = &buf[..n];
        if n < wire::HEADER_LEN {
            continue;
        }
        let mut pending = pooled.pending.lock().unwrap();
        let id = wire::id(packet);
        let Some(w) = pending.get(&id) else {
            tracing::debug!(id, "datagram for no query in flight; ignored");
            continue;
        };
        match wire::read_reply(packet, &w.question, id) {
            Ok(info) => {
                let w = pending.remove(&id).expect("present");
                let _ = w.done.send(Ok((packet.to_vec(), info)));
            }
            Err(mismatch) => {
                tracing::debug!(%mismatch, "ignoring datagram that does not answer our query");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query() -> (Vec<u8>, Query) {
        let bytes = wire::build_query(&wire::name_from_dotted("a.example").unwrap(), 1, 0);
        let q = wire::parse_query(&bytes).unwrap();
        (bytes, q)
    }

    #[tokio::test]
    async fn a_finished_query_does_not_free_a_later_one_with_the_same_id() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (_, q) = query();
        let first = register(server.local_addr().unwrap(), &q).unwrap();
        // A later query that drew the same ID on the same socket after the first was answered.
        let (done, mut later) = oneshot::channel();
        first.socket.pending.lock().unwrap().insert(
            first.id,
            Waiter {
                question: q,
                token: u64::MAX,
                done,
            },
        );
        let (socket, id) = (first.socket.clone(), first.id);
        drop(first);
        assert!(
            socket.pending.lock().unwrap().contains_key(&id),
            "the later query still waits"
        );
        assert!(later.try_recv().is_err(), "and has not been told anything");
    }

    #[tokio::test]
    async fn replies_reach_the_query_whose_id_and_question_match() {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (client, q) = query();
        let registration = register(server.local_addr().unwrap(), &q).unwrap();
        let sent = wire::upstream_query(&client, &q, registration.id, false);
        registration.send(&sent).await.unwrap();
        let mut buf = [0u8; 512];
        let (n, from) = server.recv_from(&mut buf).await.unwrap();
        // A forged reply with another ID first, then the real one.
        let mut reply = buf[..n].to_vec();
        reply[2] |= 0x80;
        let mut forged = reply.clone();
        forged[0] ^= 0xff;
        server.send_to(&forged, from).await.unwrap();
        server.send_to(&reply, from).await.unwrap();
        let (got, _) = registration.wait().await.unwrap();
        assert_eq!(got, reply);
    }
}
