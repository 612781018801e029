//! Batched UDP I/O for the client-facing sockets: recvmmsg(2) takes up to `BATCH` queries in
//! one system call and sendmmsg(2) sends their replies in one more. Under load this halves the
//! system calls of the cache-hit path. Neither tokio nor socket2 exposes these calls: they are
//! made through libc in `sys`, and tokio's `try_io` keeps them within its readiness model.

use crate::sys::{self, SockAddrBuf};
use std::io;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;

/// Datagrams per system call.
pub(crate) const BATCH: usize = 32;
/// Largest query read (bigger ones arrive cut and are answered FORMERR or dropped).
const QUERY_MAX: usize = 4096;

/// Receive buffers for one batch.
pub(crate) struct RecvBatch {
    bufs: Box<[[u8; QUERY_MAX]; BATCH]>,
    addrs: Box<[SockAddrBuf; BATCH]>,
    lens: [usize; BATCH],
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: vec![[0u8; QUERY_MAX]; BATCH]
                .into_boxed_slice()
                .try_into()
                .expect("BATCH buffers"),
            addrs: Box::new([SockAddrBuf::default(); BATCH]),
            lens: [0; BATCH],
        }
    }
}

impl RecvBatch {
    /// Reads up to `BATCH` datagrams without blocking; returns how many arrived.
    pub(crate) fn recv(&mut self, socket: BorrowedFd<'_>) -> io::Result<usize> {
        sys::recvmmsg(socket, &mut self.bufs, &mut self.addrs, &mut self.lens)
    }

    /// Datagram `i` of the last `recv` and its sender.
    pub(crate) fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        (&self.bufs[i][..self.lens[i]], self.addrs[i].get())
    }
}

/// Sends each `(reply, peer)` with as few sendmmsg calls as the socket allows; returns how
/// many went out (the rest would have blocked).
pub(crate) fn send(socket: BorrowedFd<'_>, replies: &[(Vec<u8>, SocketAddr)]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < replies.len() {
        let chunk = &replies[sent..replies.len().min(sent + BATCH)];
        let n = match sys::sendmmsg::<BATCH, _>(socket, chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(sent),
            Err(e) => {
                // One bad destination must not stall the rest: skip it.
                tracing::debug!(error = %e, "udp send failed");
                sent += 1;
                continue;
            }
        };
        sent += n;
        if n < chunk.len() {
            return Ok(sent);
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    /// More than a batch goes out in as few calls as it takes and comes back a batch at a
    /// time, each datagram whole and with its sender, over IPv4 and IPv6.
    #[test]
    fn batches_go_out_and_come_back_with_their_senders() {
        for local in ["127.0.0.1:0", "[::1]:0"] {
            let (Ok(from), Ok(to)) = (UdpSocket::bind(local), UdpSocket::bind(local)) else {
                continue; // no IPv6 loopback here
            };
            let peer = to.local_addr().unwrap();
            let count = BATCH + 8;
            let replies: Vec<(Vec<u8>, SocketAddr)> =
                (0..count).map(|i| (vec![i as u8; i + 1], peer)).collect();
            assert_eq!(send(from.as_fd(), &replies).unwrap(), count);

            let mut batch = RecvBatch::default();
            let mut got = Vec::new();
            for expect in [BATCH, count - BATCH] {
                let n = batch.recv(to.as_fd()).unwrap();
                assert_eq!(n, expect, "{local}");
                got.extend((0..n).map(|i| {
                    let (bytes, sender) = batch.get(i);
                    (bytes.to_vec(), sender)
                }));
            }
            let e = batch.recv(to.as_fd()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
            for (i, (bytes, sender)) in got.into_iter().enumerate() {
                assert_eq!(bytes, vec![i as u8; i + 1]);
                assert_eq!(sender, Some(from.local_addr().unwrap()));
            }
        }
    }
}
