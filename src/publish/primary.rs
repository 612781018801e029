//! The zone's primary servers as an `Updater`: each update is signed with the TSIG key, sent
//! over UDP from a fresh random port (as Kea's D2 does: a primary answers UDP updates faster
//! than it accepts a TCP connection per update), again over TCP when UDP brings no reply
//! within a second or a truncated one, and the reply's signature is checked before its
//! RCODE is believed. Every update of ours may be sent twice: its prerequisites make a
//! repeat harmless. Servers are
//! tried in the configured order; the first that answers decides.

use super::key::Key;
use super::update::{UpdateError, Updater};
use hickory_proto::op::{Message, ResponseCode};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;

/// How long one server gets to answer over UDP before the update goes again over TCP.
const UDP_WAIT: Duration = Duration::from_secs(1);
/// How long one server gets to connect and answer over TCP.
const TIMEOUT: Duration = Duration::from_secs(5);

pub struct Primaries {
    servers: Vec<SocketAddr>,
    key: Key,
    /// The last error of each server, for `leases` and the log; None once it answers.
    last_error: Mutex<Vec<Option<String>>>,
}

impl Primaries {
    pub(crate) fn new(servers: Vec<SocketAddr>, key: Key) -> Primaries {
        let last_error = Mutex::new(vec![None; servers.len()]);
        Primaries {
            servers,
            key,
            last_error,
        }
    }

    pub fn servers(&self) -> Vec<SocketAddr> {
        self.servers.clone()
    }

    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Each server with its last error.
    pub(crate) fn health(&self) -> Vec<(SocketAddr, Option<String>)> {
        let errors = self.last_error.lock().unwrap().clone();
        self.servers.iter().copied().zip(errors).collect()
    }

    async fn exchange(
        &self,
        server: SocketAddr,
        update: &Message,
    ) -> Result<ResponseCode, UpdateError> {
        let mut update = update.clone();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let unreachable = |e: String| UpdateError::Unreachable(format!("{server}: {e}"));
        let mut verifier = update
            .finalize(&self.key.signer, now)
            .map_err(|e| UpdateError::Rejected(format!("cannot sign the update: {e}")))?
            .ok_or_else(|| UpdateError::Rejected("the update was not signed".into()))?;
        let bytes = update
            .to_vec()
            .map_err(|e| UpdateError::Rejected(format!("cannot encode the update: {e}")))?;
        let reply = match tokio::time::timeout(UDP_WAIT, over_udp(server, &bytes)).await {
            Ok(Ok(reply)) if !truncated(&reply) => reply,
            // Lost, refused or too long for UDP: TCP, which needs no retransmission.
            _ => tokio::time::timeout(TIMEOUT, crate::dns::transport::tcp_message(server, &bytes))
                .await
                .map_err(|_| unreachable(format!("no answer within {TIMEOUT:?}")))?
                .map_err(|e| unreachable(e.to_string()))?,
        };
        match verifier.verify(&reply) {
            Ok(answer) if answer.id == update.id => Ok(answer.response_code),
            Ok(_) => Err(UpdateError::Rejected(format!(
                "{server}: reply to another message"
            ))),
            Err(e) => Err(UpdateError::Rejected(format!(
                "{server}: {}",
                unsigned_reply(&reply, &self.key, &e.to_string())
            ))),
        }
    }
}

/// One exchange over UDP, from a fresh port of the kernel's choosing; the first datagram with
/// the update's ID is the reply. Not `dns::port_pool`: its reply check (`guard::Expect`) is
/// for queries, and here the TSIG signature, checked by the caller, authenticates the reply.
async fn over_udp(server: SocketAddr, update: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(update).await?;
    let mut buf = vec![0; 4096];
    loop {
        let n = socket.recv(&mut buf).await?;
        if n >= 12 && buf[..2] == update[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

/// Whether a reply has TC set (it did not fit UDP).
fn truncated(reply: &[u8]) -> bool {
    reply.get(2).is_some_and(|flags| flags & 0x02 != 0)
}

/// What an unverifiable reply says: usually the server rejecting our key (RFC 8945 5.2).
fn unsigned_reply(reply: &[u8], key: &Key, error: &str) -> String {
    let Ok(message) = Message::from_vec(reply) else {
        return format!("unreadable reply ({error})");
    };
    let tsig_error = message
        .signature()
        .and_then(|s| s.data.error)
        .map(|e| format!(" {e:?}"))
        .unwrap_or_default();
    format!(
        "answered {}{tsig_error} without a valid signature: the server does not accept key '{}' ({}) as configured (wrong name, algorithm or secret, or a clock off by more than 5 minutes)",
        message.response_code, key.name, key.algorithm
    )
}

impl Updater for Primaries {
    #[allow(clippy::manual_async_fn)] // the trait asks for a Send future
    fn send(
        &self,
        update: Message,
    ) -> impl Future<Output = Result<ResponseCode, UpdateError>> + Send {
        async move {
            let mut last = UpdateError::Unreachable("no server configured".into());
            for (i, &server) in self.servers.iter().enumerate() {
                let outcome = self.exchange(server, &update).await;
                let error = outcome.as_ref().err().map(ToString::to_string);
                self.last_error.lock().unwrap()[i] = error;
                match outcome {
                    Ok(rcode) => return Ok(rcode),
                    Err(e @ UpdateError::Rejected(_)) => return Err(e),
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
    }
}
