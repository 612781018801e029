//! Batched UDP I/O for the client-facing sockets: recvmmsg(2) takes up to `BATCH` queries in
//! one system call and sendmmsg(2) sends their replies in one more. Under load this halves the
//! system calls of the cache-hit path. Written by hand through libc because neither tokio nor
//! socket2 exposes these calls; tokio's `try_io` keeps them within its readiness model.

use socket2::SockAddr;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Largest query read (bigger ones arrive cut and are answered FORMERR or dropped).
const QUERY_MAX: usize = 4096;

/// Receive buffers for one batch.
pub struct RecvBatch {
    bufs: Box<[[u8; QUERY_MAX]]>,
    addrs: Box<[libc::sockaddr_storage]>,
    lens: [usize; BATCH],
    addr_lens: [libc::socklen_t; BATCH],
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: vec![[0u8; QUERY_MAX]; BATCH].into_boxed_slice(),
            // SAFETY: sockaddr_storage is plain old data; zero is a valid value.
            addrs: vec![
                unsafe { MaybeUninit::<libc::sockaddr_storage>::zeroed().assume_init() };
                BATCH
            ]
            .into_boxed_slice(),
            lens: [0; BATCH],
            addr_lens: [0; BATCH],
        }
    }
}

impl RecvBatch {
    /// Reads up to `BATCH` datagrams without blocking; returns how many arrived.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let mut iovecs: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
            iov_base: self.bufs[i].as_mut_ptr().cast(),
            iov_len: QUERY_MAX,
        });
        // SAFETY: zeroed mmsghdr is valid; every pointer set below outlives the call.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, m) in msgs.iter_mut().enumerate() {
            m.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            m.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_hdr.msg_iov = &mut iovecs[i];
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: msgs holds BATCH valid headers pointing at our buffers.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, m) in msgs.iter().take(n).enumerate() {
            self.lens[i] = (m.msg_len as usize).min(QUERY_MAX);
            self.addr_lens[i] = m.msg_hdr.msg_namelen;
        }
        Ok(n)
    }

    /// Datagram `i` of the last `recv` and its sender.
    pub fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        (
            &self.bufs[i][..self.lens[i]],
            to_socket_addr(&self.addrs[i], self.addr_lens[i]),
        )
    }
}

/// The sender's address from what recvmmsg wrote.
fn to_socket_addr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match storage.ss_family as libc::c_int {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: family and length say this is a sockaddr_in.
            let a =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: family and length say this is a sockaddr_in6.
            let a = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Sends each `(reply, peer)` with as few sendmmsg calls as the socket allows; returns how
/// many went out (the rest would have blocked).
pub fn send(fd: RawFd, replies: &[(Vec<u8>, SocketAddr)]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < replies.len() {
        let chunk = &replies[sent..replies.len().min(sent + BATCH)];
        let addrs: Vec<SockAddr> = chunk.iter().map(|(_, a)| SockAddr::from(*a)).collect();
        let mut iovecs: Vec<libc::iovec> = chunk
            .iter()
            .map(|(r, _)| libc::iovec {
                iov_base: r.as_ptr() as *mut libc::c_void,
                iov_len: r.len(),
            })
            .collect();
        // SAFETY: zeroed mmsghdr is valid; pointers below stay alive for the call.
        let mut msgs: Vec<libc::mmsghdr> = (0..chunk.len())
            .map(|_| unsafe { std::mem::zeroed() })
            .collect();
        for (i, m) in msgs.iter_mut().enumerate() {
            m.msg_hdr.msg_name = addrs[i].as_ptr() as *mut libc::c_void;
            m.msg_hdr.msg_namelen = addrs[i].len();
            m.msg_hdr.msg_iov = &mut iovecs[i];
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: msgs holds chunk.len() valid headers.
        let n = unsafe {
            libc::sendmmsg(
                fd,
                msgs.as_mut_ptr(),
                msgs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(sent);
            }
            // One bad destination must not stall the rest: skip it.
            tracing::debug!(error = %e, "udp send failed");
            sent += 1;
            continue;
        }
        sent += n as usize;
        if (n as usize) < chunk.len() {
            return Ok(sent);
        }
    }
    Ok(sent)
}
