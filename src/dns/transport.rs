//! One question to one upstream server over UDP or TCP, with RFC 5452's defences: a fresh
//! random ID and a fresh socket (random source port) per query, a connected UDP socket so the
//! kernel drops datagrams from any other address or port, and a reply accepted only if its ID
//! and question match. Anything else is ignored while the wait continues.

use crate::dns::wire::{self, Query, ReplyInfo};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Udp,
    Tcp,
}

#[derive(Debug, Error)]
pub enum ExchangeError {
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("reply unusable: {0}")]
    Malformed(String),
    #[error("TCP retry of a truncated reply failed: {0}")]
    Tcp(String),
}

/// An accepted reply: the bytes, what they say, and how long the server took.
#[derive(Debug)]
pub struct Exchange {
    pub reply: Vec<u8>,
    pub info: ReplyInfo,
    pub rtt: Duration,
}

/// Sends `q` (as the client wrote it, in `client`) to `server` and waits up to `timeout`.
pub async fn exchange(
    server: SocketAddr,
    client: &[u8],
    q: &Query,
    protocol: Protocol,
    with_edns: bool,
    timeout: Duration,
) -> Result<Exchange, ExchangeError> {
    let id: u16 = rand::random();
    let query = wire::upstream_query(client, q, id, with_edns);
    let started = Instant::now();
    let attempt = async {
        match protocol {
            Protocol::Udp => udp(server, &query, q, id).await,
            Protocol::Tcp => tcp(server, &query, q, id).await,
        }
    };
    let (reply, info) = tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| ExchangeError::Timeout(timeout))??;
    Ok(Exchange {
        reply,
        info,
        rtt: started.elapsed(),
    })
}

async fn udp(
    server: SocketAddr,
    query: &[u8],
    q: &Query,
    id: u16,
) -> Result<(Vec<u8>, ReplyInfo), ExchangeError> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        match wire::read_reply(&buf[..n], q, id) {
            Ok(info) => {
                buf.truncate(n);
                return Ok((buf, info));
            }
            Err(mismatch) => {
                tracing::debug!(%server, %mismatch, "ignoring datagram that does not answer our query");
            }
        }
    }
}

async fn tcp(
    server: SocketAddr,
    query: &[u8],
    q: &Query,
    id: u16,
) -> Result<(Vec<u8>, ReplyInfo), ExchangeError> {
    let mut stream = TcpStream::connect(server).await?;
    stream.set_nodelay(true)?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await? as usize;
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    let info =
        wire::read_reply(&buf, q, id).map_err(|e| ExchangeError::Malformed(e.to_string()))?;
    Ok((buf, info))
}
