//! Sockets facing clients: the UDP receive loop and the TCP acceptor (RFC 7766: pipelined
//! queries answered as they complete, an idle timeout, a bound on connections). Listeners know
//! nothing about how queries are answered; they hand bytes to the `Resolver`.

use crate::dns::resolver::{self, Immediate, Resolver, Transport};
use crate::dns::udp_batch;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::Interest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, mpsc};

/// UDP sockets served thread-per-core: each socket (one per core, SO_REUSEPORT) gets a thread
/// with a single-threaded runtime, so a query, its forwarding and its reply never cross
/// threads. Shared state (cache, in-flight table) sits behind short mutexes.
pub struct UdpWorkers {
    stop: tokio::sync::watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl UdpWorkers {
    /// Starts a worker per socket. The receiver hears why, if a worker stops on its own.
    pub fn start(
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

    pub fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Serves queries arriving on `socket` until the task is dropped, or returns why the socket
/// failed. Queries are taken a batch at a time (`udp_batch`); those answered at once (cache,
/// local data, errors) go back in one batched send, the rest are forwarded in tasks of their
/// own.
pub async fn serve_udp(socket: Arc<UdpSocket>, resolver: Arc<Resolver>) -> String {
    let fd = socket.as_raw_fd();
    let mut batch = udp_batch::RecvBatch::default();
    // Reply buffers, reused from batch to batch.
    let mut replies: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(udp_batch::BATCH);
    let mut spare: Vec<Vec<u8>> = Vec::new();
    loop {
        if let Err(e) = socket.readable().await {
            return format!("UDP socket failed: {e}");
        }
        let n = match socket.try_io(Interest::READABLE, || batch.recv(fd)) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                // ICMP errors from earlier replies surface here; they concern one client only.
                tracing::debug!(error = %e, "udp receive error");
                continue;
            }
        };
        for i in 0..n {
            let (packet, peer) = batch.get(i);
            let Some(peer) = peer else { continue };
            let immediate = if resolver.admits(peer.ip()) {
                resolver.answer_now(packet, Transport::Udp)
            } else {
                tracing::debug!(%peer, "client not in the allowed networks: REFUSED");
                resolver.refuse(packet)
            };
            match immediate {
                Immediate::Reply(reply) => replies.push((reply, peer)),
                Immediate::Cached(answer, q) => {
                    let mut out = spare.pop().unwrap_or_default();
                    answer.render_into(&mut out, packet, &q, resolver::limit(&q, Transport::Udp));
                    replies.push((out, peer));
                }
                Immediate::Drop => {}
                Immediate::Forward(q, route) => {
                    let packet = packet.to_vec();
                    let socket = socket.clone();
                    let resolver = resolver.clone();
                    tokio::spawn(async move {
                        let reply = resolver.forward(&packet, q, route, Transport::Udp).await;
                        let _ = socket.send_to(&reply, peer).await;
                    });
                }
            }
        }
        send_all(&socket, &replies).await;
        spare.extend(replies.drain(..).map(|(r, _)| r));
        // Replies of every kind come back here, but only cache hits reuse them: keep a batch.
        spare.truncate(udp_batch::BATCH);
    }
}

/// Sends a batch of replies; whatever the socket cannot take at once is sent as it drains.
async fn send_all(socket: &UdpSocket, replies: &[(Vec<u8>, SocketAddr)]) {
    let fd = socket.as_raw_fd();
    let sent = socket
        .try_io(Interest::WRITABLE, || udp_batch::send(fd, replies))
        .unwrap_or(0);
    for (reply, peer) in &replies[sent..] {
        let _ = socket.send_to(reply, *peer).await;
    }
}

/// Queries of one TCP connection answered concurrently.
const PIPELINE_DEPTH: usize = 64;

/// Limits for TCP clients.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
}

/// Accepts TCP clients on `listener` until the task is dropped.
pub async fn serve_tcp(listener: TcpListener, resolver: Arc<Resolver>, limits: TcpLimits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = match listener.accept().await {
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "tcp connection limit reached; closing new connection");
            continue;
        };
        let resolver = resolver.clone();
        tokio::spawn(async move {
            serve_connection(stream, resolver, limits.idle_timeout).await;
            drop(slot);
        });
    }
}

/// One TCP client: queries are read in a loop and each answered in its own task; a writer
/// sends replies in completion order, each with its length prefix in a single write.
async fn serve_connection(stream: TcpStream, resolver: Arc<Resolver>, idle: Duration) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(PIPELINE_DEPTH);
    let write_loop = tokio::spawn(async move {
        while let Some(reply) = rx.recv().await {
            let mut framed = Vec::with_capacity(reply.len() + 2);
            framed.extend_from_slice(&(reply.len() as u16).to_be_bytes());
            framed.extend_from_slice(&reply);
            // A client that stops reading loses the connection, not a slot forever.
            match tokio::time::timeout(idle, writer.write_all(&framed)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    });
    // At most PIPELINE_DEPTH queries of one connection are worked on at once; beyond that the
    // connection is not read until one is answered.
    let in_flight = Arc::new(Semaphore::new(PIPELINE_DEPTH));
    loop {
        // A whole message must arrive within the idle timeout: slow clients lose their slot.
        let read = async {
            let len = reader.read_u16().await? as usize;
            let mut packet = vec![0u8; len];
            reader.read_exact(&mut packet).await?;
            Ok::<_, std::io::Error>(packet)
        };
        let packet = match tokio::time::timeout(idle, read).await {
            Ok(Ok(p)) => p,
            _ => break,
        };
        let Ok(Ok(permit)) = tokio::time::timeout(idle, in_flight.clone().acquire_owned()).await
        else {
            break;
        };
        let resolver = resolver.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Some(reply) = resolver.answer(&packet, Transport::Tcp).await {
                let _ = tx.send(reply).await;
            }
            drop(permit);
        });
    }
    drop(tx);
    let _ = write_loop.await;
}
