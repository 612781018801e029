//! One query to one upstream server over UDP or TCP, with RFC 5452's defences: over UDP from
//! a source port of its own drawn at random (`port_pool`), dropping datagrams from any other
//! address or port than the server's, and a reply accepted only if it passes the query's
//! `Expect` (ID and question, and the cookie and case `dns::guard` asks for); anything
//! else is dropped, and counted, while the wait continues. An ICMP error on that port about a
//! datagram to that server (a port unreachable, real or forged) is this exchange's error and
//! no other query's. TCP goes over a
//! fresh connection, and its reply is read into a buffer that grows with the bytes received,
//! not with the length the server announces.
//!
//! `Exchanger` is the seam between what is sent (`dns::guard` builds the query; the walk, the
//! probes and discovery ask through `guard::ask`) and the network: production uses `Network`;
//! unit tests script servers, forgers, timeouts and errors as data (`script`), with no sockets
//! and no sleeps.

use crate::dns::guard::{Dropped, Expect, Rejection};
use crate::dns::port_pool;
pub use crate::dns::port_pool::{Completion, Ended, Received};
use crate::dns::wire::ReplyInfo;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How one upstream exchange travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// One datagram each way, from a port drawn for the query (`port_pool`).
    Udp,
    /// A fresh TCP connection, the messages length-prefixed (RFC 1035 4.2.2).
    Tcp,
}

/// Why an exchange gave no usable reply.
#[derive(Debug, Error)]
pub enum ExchangeError {
    /// No acceptable reply in time; what was dropped meanwhile.
    #[error("no reply within {0:?}{1}")]
    Timeout(Duration, Dropped),
    /// The socket failed: an ICMP error over UDP, a connection error over TCP.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The reply over TCP (where the first is the only one) cannot be taken.
    #[error("reply unusable: {0}")]
    Malformed(#[from] Rejection),
    /// The TCP retry of a truncated reply failed.
    #[error("TCP retry of a truncated reply failed: {0}")]
    Tcp(Box<ExchangeError>),
}

/// One query to one server: the upstream exchange everything above is written against.
pub trait Exchanger: Send + Sync + 'static {
    /// Sends `query` (complete: ID, question as spelled, OPT) to `server` over `protocol` and
    /// waits up to `timeout` for the first reply `expect` accepts; over UDP, every other
    /// datagram is dropped (and counted) while the wait goes on.
    fn exchange(
        &self,
        server: SocketAddr,
        query: Vec<u8>,
        expect: &Expect,
        protocol: Protocol,
        timeout: Duration,
    ) -> impl Future<Output = Result<Exchange, ExchangeError>> + Send;

    /// Starts a UDP `exchange` that no task awaits (what its reply must match is
    /// `done.expect()`): `done` is told how it ended, by whatever
    /// reads the reply (the upstream reader), at the latest at `deadline`; `exchanged`
    /// makes that an exchange's result. Where it cannot be started (no socket, or an
    /// exchanger without the means), `done` is told so at once (`Ended::NotStarted`), and the
    /// caller awaits `exchange` instead.
    fn start(
        self: &std::sync::Arc<Self>,
        server: SocketAddr,
        query: Vec<u8>,
        deadline: Instant,
        done: Box<dyn Completion>,
    ) {
        let _ = (server, query, deadline);
        done.complete(Ended::NotStarted);
    }
}

/// The real network: UDP through `port_pool` (a fresh random port per query), TCP on a fresh
/// connection.
#[derive(Debug, Default, Clone, Copy)]
pub struct Network;

impl Exchanger for Network {
    fn exchange(
        &self,
        server: SocketAddr,
        query: Vec<u8>,
        expect: &Expect,
        protocol: Protocol,
        timeout: Duration,
    ) -> impl Future<Output = Result<Exchange, ExchangeError>> + Send {
        exchange(server, query, expect, protocol, timeout)
    }

    fn start(
        self: &std::sync::Arc<Self>,
        server: SocketAddr,
        query: Vec<u8>,
        deadline: Instant,
        done: Box<dyn Completion>,
    ) {
        port_pool::start(server, query, deadline, done);
    }
}

/// An accepted reply: the bytes, what they say, how long the server took, and what was
/// dropped while waiting for it.
#[derive(Debug)]
pub struct Exchange {
    /// The server that replied.
    pub server: SocketAddr,
    /// The reply's bytes.
    pub reply: Vec<u8>,
    /// What the reply says.
    pub info: ReplyInfo,
    /// How long the server took to answer.
    pub rtt: Duration,
    /// When the reply was read.
    pub received: Instant,
    /// What was dropped while waiting for it.
    pub dropped: Dropped,
}

impl Exchange {
    /// The exchange a reply from `server` ends.
    fn of(server: SocketAddr, received: Received) -> Exchange {
        let Received {
            reply,
            info,
            dropped,
            sent,
            at,
        } = received;
        Exchange {
            server,
            reply,
            info,
            rtt: at.saturating_duration_since(sent),
            received: at,
            dropped,
        }
    }
}

/// The result of a UDP exchange with `server` started with `Exchanger::start` (`timeout`
/// before its deadline), from how it ended.
pub(crate) fn exchanged(
    server: SocketAddr,
    ended: Ended,
    timeout: Duration,
) -> Result<Exchange, ExchangeError> {
    match ended {
        Ended::Replied(Ok(received)) => Ok(Exchange::of(server, received)),
        Ended::Replied(Err(e)) => Err(ExchangeError::Io(e)),
        Ended::TimedOut(dropped) => Err(ExchangeError::Timeout(timeout, dropped)),
        Ended::NotStarted => Err(ExchangeError::Io(io::Error::other("never sent"))),
    }
}

/// Sends `query` to `server` and waits up to `timeout` for the reply `expect` accepts.
pub(crate) async fn exchange(
    server: SocketAddr,
    query: Vec<u8>,
    expect: &Expect,
    protocol: Protocol,
    timeout: Duration,
) -> Result<Exchange, ExchangeError> {
    let received = match protocol {
        Protocol::Udp => {
            let mut sent = port_pool::send(server, expect, query)?;
            match tokio::time::timeout(timeout, sent.reply()).await {
                Ok(reply) => reply?,
                Err(_) => return Err(ExchangeError::Timeout(timeout, sent.dropped())),
            }
        }
        Protocol::Tcp => tokio::time::timeout(timeout, tcp(server, &query, expect))
            .await
            .map_err(|_| ExchangeError::Timeout(timeout, Dropped::default()))??,
    };
    Ok(Exchange::of(server, received))
}

async fn tcp(
    server: SocketAddr,
    query: &[u8],
    expect: &Expect,
) -> Result<port_pool::Received, ExchangeError> {
    let sent = Instant::now();
    let reply = tcp_message(server, query).await?;
    let at = Instant::now();
    let info = expect.check(&reply)?;
    Ok(port_pool::Received {
        reply,
        info,
        dropped: Dropped::default(),
        sent,
        at,
    })
}

/// Sends one DNS message to `server` over a fresh TCP connection (RFC 1035 4.2.2 framing) and
/// reads the one message that comes back (`read_message`). Also the transport of dynamic
/// updates (`publish::primary`).
pub(crate) async fn tcp_message(server: SocketAddr, message: &[u8]) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server).await?;
    stream.set_nodelay(true)?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&(message.len() as u16).to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed).await?;
    let mut buf = Vec::new();
    read_message(&mut stream, &mut buf).await?;
    Ok(buf)
}

/// Reads one length-prefixed DNS message into `buf`, which grows only as bytes arrive: a
/// server that announces 64 KiB and then stalls holds a few bytes of ours, not 64 KiB.
async fn read_message(stream: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> io::Result<()> {
    let len = stream.read_u16().await?;
    stream.take(u64::from(len)).read_to_end(buf).await?;
    if buf.len() < usize::from(len) {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod script;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_tcp_reply_is_read_into_a_buffer_as_large_as_what_arrived() {
        let (mut ours, mut server) = tokio::io::duplex(1 << 17);
        // The server announces the largest message, sends 100 bytes and stalls.
        server.write_all(&u16::MAX.to_be_bytes()).await.unwrap();
        server.write_all(&[7; 100]).await.unwrap();
        let mut buf = Vec::new();
        let stalled =
            tokio::time::timeout(Duration::from_millis(50), read_message(&mut ours, &mut buf))
                .await;
        assert!(stalled.is_err(), "still waiting for the rest");
        assert_eq!(buf.len(), 100);
        assert!(buf.capacity() < 4096, "{} bytes reserved", buf.capacity());

        // A whole message is read whole; a connection closed early is an error.
        let (mut ours, mut server) = tokio::io::duplex(1 << 17);
        server.write_all(&[0, 3, 1, 2, 3, 0, 9]).await.unwrap();
        drop(server);
        let mut buf = Vec::new();
        read_message(&mut ours, &mut buf).await.unwrap();
        assert_eq!(buf, [1, 2, 3]);
        let mut buf = Vec::new();
        let cut = read_message(&mut ours, &mut buf).await.unwrap_err();
        assert_eq!(cut.kind(), io::ErrorKind::UnexpectedEof);
    }
}
