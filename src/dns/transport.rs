//! One question to one upstream server over UDP or TCP, with RFC 5452's defences: a random ID
//! on a randomly chosen socket of a changing pool of random ports (`port_pool`), connected so
//! the kernel drops datagrams from any other address or port, and a reply accepted only if its
//! ID and question match. Anything else is ignored while the wait continues.
//!
//! `Exchanger` is the seam between the walk over servers (`dns::forward`, `dns::probe`) and
//! the network: production uses `Network`; unit tests script replies, timeouts and errors as
//! data, with no sockets and no sleeps.

use crate::dns::port_pool;
use crate::dns::wire::{self, Query, ReplyInfo, ReplyMismatch};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
    Malformed(#[from] ReplyMismatch),
    #[error("TCP retry of a truncated reply failed: {0}")]
    Tcp(Box<ExchangeError>),
}

/// One question to one server: the upstream exchange the walk is written against.
pub trait Exchanger: Send + Sync + 'static {
    /// Sends `q` (as the client wrote it, in `client`) to `server` and waits up to `timeout`
    /// for the matching reply.
    fn exchange(
        &self,
        server: SocketAddr,
        client: &[u8],
        q: &Query,
        protocol: Protocol,
        with_edns: bool,
        timeout: Duration,
    ) -> impl Future<Output = Result<Exchange, ExchangeError>> + Send;
}

/// The real network: UDP through `port_pool`, TCP on a fresh connection.
#[derive(Debug, Default, Clone, Copy)]
pub struct Network;

impl Exchanger for Network {
    fn exchange(
        &self,
        server: SocketAddr,
        client: &[u8],
        q: &Query,
        protocol: Protocol,
        with_edns: bool,
        timeout: Duration,
    ) -> impl Future<Output = Result<Exchange, ExchangeError>> + Send {
        exchange(server, client, q, protocol, with_edns, timeout)
    }
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
    let started = Instant::now();
    let attempt = async {
        match protocol {
            Protocol::Udp => {
                let registration = port_pool::register(server, q)?;
                let query = wire::upstream_query(client, q, registration.id, with_edns);
                registration.send(&query).await?;
                Ok(registration.wait().await?)
            }
            Protocol::Tcp => {
                let id: u16 = rand::random();
                let query = wire::upstream_query(client, q, id, with_edns);
                tcp(server, &query, q, id).await
            }
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
    let info = wire::read_reply(&buf, q, id)?;
    Ok((buf, info))
}

#[cfg(test)]
pub mod script;
