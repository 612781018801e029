//! The system calls virtdns makes through libc by hand, each behind a small safe function:
//! the only module allowed `unsafe` (the crate root denies `unsafe_code` everywhere else).
//!
//! Each wrapper is a thin shim: it takes descriptors as `BorrowedFd` (so the descriptor is
//! open for the call) and memory as Rust slices or arrays (so the kernel writes only where
//! it may), turns `-1`/`errno` into `io::Result`, and does no work the caller did not ask
//! for: no allocation, no extra system call. What each one guarantees is in its doc comment;
//! why each `unsafe` block is sound is in its `// SAFETY:` comment.
//!
//! They exist because none of our dependencies offers these calls: batched UDP
//! (recvmmsg/sendmmsg, `dns::udp_batch`), an epoll set of our own watched by tokio
//! (`dns::port_pool`), giving a kernel-chosen port back (`connect(AF_UNSPEC)`), the limit on
//! open files, SO_RCVBUFFORCE (`ports`), SIOCSARP and a bounded wait for room to send
//! (poll(2), `dhcp::socket`), getifaddrs and
//! if_nametoindex (`iface`, `resolv_conf`) and the clock tick (`metrics::record`).
#![allow(unsafe_code)]

use socket2::SockAddr;
use std::ffi::CStr;
use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// `Ok(rc)` for a non-negative return, else the thread's `errno` as an error.
#[inline]
fn check<T: Default + PartialOrd>(rc: T) -> io::Result<T> {
    if rc < T::default() {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

// ---------------------------------------------------------------------------------------
// Batched UDP: recvmmsg(2) and sendmmsg(2).

/// Room for the address of a datagram's sender, as recvmmsg writes it, and its length.
#[derive(Clone, Copy)]
pub(crate) struct SockAddrBuf {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl Default for SockAddrBuf {
    /// An empty address (length 0: `get` gives `None`).
    fn default() -> Self {
        SockAddrBuf {
            // SAFETY: sockaddr_storage is plain old data (integers and byte arrays); all
            // zeroes is a valid value of it.
            storage: unsafe { std::mem::zeroed() },
            len: 0,
        }
    }
}

impl SockAddrBuf {
    /// The address held, if it is a whole IPv4 or IPv6 socket address.
    #[inline]
    pub(crate) fn get(&self) -> Option<SocketAddr> {
        let len = self.len as usize;
        let storage: *const libc::sockaddr_storage = &self.storage;
        match self.storage.ss_family as libc::c_int {
            libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
                // SAFETY: the family and length the kernel wrote say the storage holds a
                // sockaddr_in; sockaddr_storage is large and aligned enough for any sockaddr.
                let a = unsafe { &*storage.cast::<libc::sockaddr_in>() };
                let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
            }
            libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for sockaddr_in6.
                let a = unsafe { &*storage.cast::<libc::sockaddr_in6>() };
                let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

/// recvmmsg(2) with `MSG_DONTWAIT`: reads up to `N` datagrams from `socket`, datagram `i`
/// into `bufs[i]` (cut to `L` bytes), its length into `lens[i]` and its sender into
/// `addrs[i]`. Returns how many arrived (entries past that are left as they were), or the
/// error (`WouldBlock` when none was waiting). One system call, no allocation.
#[inline]
pub(crate) fn recvmmsg<const N: usize, const L: usize>(
    socket: BorrowedFd<'_>,
    bufs: &mut [[u8; L]; N],
    addrs: &mut [SockAddrBuf; N],
    lens: &mut [usize; N],
) -> io::Result<usize> {
    let mut iovecs: [libc::iovec; N] = bufs.each_mut().map(|buf| libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: L,
    });
    // SAFETY: mmsghdr is plain old data (integers and pointers); all zeroes is a valid value
    // (null pointers, zero lengths).
    let mut msgs: [libc::mmsghdr; N] = unsafe { std::mem::zeroed() };
    for ((m, iov), addr) in msgs.iter_mut().zip(&mut iovecs).zip(addrs.iter_mut()) {
        m.msg_hdr.msg_name = (&mut addr.storage as *mut libc::sockaddr_storage).cast();
        m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: `msgs` holds N headers, each pointing at one iovec (of `bufs[i]`, L bytes) and
    // at one sockaddr_storage of `addrs[i]` with its true size; all of them are exclusively
    // borrowed and outlive the call. The descriptor is open (borrowed).
    let n = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            msgs.as_mut_ptr(),
            N as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    let n = check(n)? as usize;
    for (i, m) in msgs.iter().take(n).enumerate() {
        lens[i] = (m.msg_len as usize).min(L);
        addrs[i].len = m.msg_hdr.msg_namelen;
    }
    Ok(n)
}

/// sendmmsg(2) with `MSG_DONTWAIT`: sends each `(datagram, peer)` of `datagrams` (at most `N`
/// of them; any beyond are not sent) in one system call. Returns how many the kernel took
/// (it stops at the first that fails, and fails only if that is the first), or the error.
/// No allocation: the headers and addresses are on the stack.
#[inline]
pub(crate) fn sendmmsg<const N: usize, B: AsRef<[u8]>>(
    socket: BorrowedFd<'_>,
    datagrams: &[(B, SocketAddr)],
) -> io::Result<usize> {
    let datagrams = &datagrams[..datagrams.len().min(N)];
    let addrs: [Option<SockAddr>; N] =
        std::array::from_fn(|i| datagrams.get(i).map(|(_, a)| SockAddr::from(*a)));
    let mut iovecs: [libc::iovec; N] = std::array::from_fn(|i| {
        let bytes = datagrams.get(i).map_or(&[][..], |(b, _)| b.as_ref());
        libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        }
    });
    // SAFETY: as in `recvmmsg`, all zeroes is a valid mmsghdr.
    let mut msgs: [libc::mmsghdr; N] = unsafe { std::mem::zeroed() };
    for ((m, iov), addr) in msgs.iter_mut().zip(&mut iovecs).zip(&addrs) {
        let Some(addr) = addr else { break };
        m.msg_hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
        m.msg_hdr.msg_namelen = addr.len();
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the first `datagrams.len()` headers each point at one iovec over a datagram
    // and at its peer's address with its true length; sendmmsg only reads through them
    // (the `*mut` casts are what the C types ask for), and all of it outlives the call.
    // The descriptor is open (borrowed).
    let n = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            msgs.as_mut_ptr(),
            datagrams.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    Ok(check(n)? as usize)
}

// ---------------------------------------------------------------------------------------
// epoll(7), and tokio watching an epoll set.

/// An epoll set (epoll_create1 with `EPOLL_CLOEXEC`), closed when dropped.
#[derive(Debug)]
pub(crate) struct Epoll(OwnedFd);

/// One readiness event: `events` (EPOLLIN, …) and the `u64` given to `Epoll::add`.
pub(crate) type EpollEvent = libc::epoll_event;

impl Epoll {
    /// A new, empty epoll set.
    pub(crate) fn new() -> io::Result<Epoll> {
        // SAFETY: a plain system call with no pointers.
        let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` was just created, is open and is owned by nothing else.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Adds `fd` to the set (EPOLL_CTL_ADD) for `events`, reported with `data`. The kernel
    /// takes it out of the set when it is closed. Anything already ready is reported at once.
    #[inline]
    pub(crate) fn add(&self, fd: BorrowedFd<'_>, events: u32, data: u64) -> io::Result<()> {
        let mut event = libc::epoll_event { events, u64: data };
        // SAFETY: both descriptors are open (owned and borrowed); `event` is a valid
        // epoll_event that outlives the call (the kernel copies it).
        check(unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut event,
            )
        })?;
        Ok(())
    }

    /// epoll_wait without waiting (timeout 0): fills the front of `events` with what is
    /// ready and returns how many.
    #[inline]
    pub(crate) fn ready(&self, events: &mut [EpollEvent]) -> io::Result<usize> {
        let max = events.len().min(libc::c_int::MAX as usize) as libc::c_int;
        // SAFETY: `events` has room for `max` entries and is exclusively borrowed; the
        // descriptor is owned, so open.
        let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), events.as_mut_ptr(), max, 0) };
        Ok(check(n)? as usize)
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Registers the epoll set with the current tokio runtime's reactor, readable interest, so
/// that a task can wait for it to have ready descriptors. The set stays open as long as the
/// returned `AsyncFd` holds it. Panics outside a tokio runtime (as tokio does).
pub(crate) fn watch(epoll: Arc<Epoll>) -> io::Result<AsyncFd<Arc<Epoll>>> {
    // SAFETY: tokio needs the descriptor open and the same for the life of the `AsyncFd`.
    // The `AsyncFd` owns an `Arc` of the `Epoll`, which owns the descriptor (its field is
    // private to this module and never replaced), and `as_raw_fd` always returns it.
    unsafe { AsyncFd::register_with_interest(epoll, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

// ---------------------------------------------------------------------------------------
// Sockets.

/// `connect(AF_UNSPEC)`: dissolves the socket's association; a UDP socket whose port the
/// kernel chose (at connect or at its first send) gives that port back.
pub(crate) fn disconnect(socket: BorrowedFd<'_>) -> io::Result<()> {
    let unspec = libc::sockaddr {
        sa_family: libc::AF_UNSPEC as libc::sa_family_t,
        sa_data: [0; 14],
    };
    let len = size_of::<libc::sockaddr>() as libc::socklen_t;
    // SAFETY: `unspec` is a valid sockaddr of `len` bytes that outlives the call; the
    // descriptor is open (borrowed).
    check(unsafe { libc::connect(socket.as_raw_fd(), &unspec, len) })?;
    Ok(())
}

/// setsockopt(SOL_SOCKET, SO_RCVBUFFORCE): a receive buffer of `bytes` (the kernel doubles
/// it) past net.core.rmem_max. Fails with `PermissionDenied` without CAP_NET_ADMIN.
pub(crate) fn set_recv_buffer_force(socket: BorrowedFd<'_>, bytes: libc::c_int) -> io::Result<()> {
    set_int_option(socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, bytes)
}

/// IP_RECVERR (and IPV6_RECVERR with `v6`, for a socket that also reaches IPv4 servers by
/// mapped addresses): an unconnected UDP socket is told of the ICMP errors its datagrams draw,
/// as an error from its next read and in its error queue with the destination of the
/// datagram that drew each. Without it only a connected socket is told, and only of the
/// errors the kernel deems hard (port unreachable, not host unreachable).
pub(crate) fn set_recv_errors(socket: BorrowedFd<'_>, v6: bool) -> io::Result<()> {
    if v6 {
        set_int_option(socket, libc::SOL_IPV6, libc::IPV6_RECVERR, 1)?;
    }
    set_int_option(socket, libc::SOL_IP, libc::IP_RECVERR, 1)
}

fn set_int_option(
    socket: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a valid c_int that outlives
    // the call; the descriptor is open (borrowed).
    check(unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// poll(2) for room to send on `fd`, at most `timeout`: whether there is room.
pub(crate) fn wait_writable(fd: BorrowedFd<'_>, timeout: std::time::Duration) -> io::Result<bool> {
    let mut want = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one pollfd, owned by this frame for the whole call, and nfds = 1; `fd` is open
    // for the call (borrowed).
    let ready = check(unsafe { libc::poll(&mut want, 1, millis) })?;
    Ok(ready > 0)
}

/// ioctl(SIOCSARP): adds `addr` at `mac` to the kernel's ARP table for `interface` (its
/// first 15 bytes, the most an interface name has), as a complete entry (ATF_COM). Needs
/// CAP_NET_ADMIN; `socket` may be any IPv4 socket.
pub(crate) fn set_arp_entry(
    socket: BorrowedFd<'_>,
    interface: &str,
    addr: Ipv4Addr,
    mac: [u8; 6],
) -> io::Result<()> {
    // SAFETY: arpreq is plain old data; all zeroes is a valid starting value.
    let mut req: libc::arpreq = unsafe { std::mem::zeroed() };
    let pa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: arp_pa is a sockaddr, as large as a sockaddr_in (both 16 bytes), exclusively
    // borrowed; the write makes no assumption about its alignment.
    unsafe {
        std::ptr::write_unaligned(
            (&mut req.arp_pa as *mut libc::sockaddr).cast::<libc::sockaddr_in>(),
            pa,
        );
    }
    req.arp_ha.sa_family = libc::ARPHRD_ETHER;
    for (dst, src) in req.arp_ha.sa_data.iter_mut().zip(mac) {
        *dst = src as libc::c_char;
    }
    req.arp_flags = libc::ATF_COM;
    for (dst, src) in req.arp_dev.iter_mut().zip(interface.bytes().take(15)) {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCSARP reads one arpreq through the pointer, which is valid for the call;
    // arp_dev stays NUL-terminated (at most 15 of its 16 bytes written). The descriptor is
    // open (borrowed).
    check(unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSARP, &req) })?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Interfaces.

/// if_nametoindex(3): the index of the interface called `name`, 0 if there is none.
pub(crate) fn if_nametoindex(name: &CStr) -> u32 {
    // SAFETY: `name` is a NUL-terminated string that lives across the call.
    unsafe { libc::if_nametoindex(name.as_ptr()) }
}

/// The machine's interface addresses as getifaddrs(3) lists them, freed when dropped.
pub(crate) struct InterfaceAddresses {
    list: *mut libc::ifaddrs,
}

impl InterfaceAddresses {
    /// Reads the list (one getifaddrs call).
    pub(crate) fn read() -> io::Result<InterfaceAddresses> {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        // SAFETY: getifaddrs writes the head of a list it allocates into `list`; the list is
        // owned by the value returned and freed once, in its `Drop`.
        check(unsafe { libc::getifaddrs(&mut list) })?;
        Ok(InterfaceAddresses { list })
    }

    /// Every entry with a name, an IPv4 or IPv6 address and a netmask: the interface's name,
    /// the address and the netmask's prefix length (its count of one bits). Entries of other
    /// families (AF_PACKET) and incomplete ones are skipped.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&CStr, IpAddr, u8)> + '_ {
        let mut cursor = self.list;
        std::iter::from_fn(move || {
            while !cursor.is_null() {
                // SAFETY: `cursor` is a non-null node of the list getifaddrs returned, which
                // lives (unfreed, unchanged) as long as `self` is borrowed.
                let ifa = unsafe { &*cursor };
                cursor = ifa.ifa_next;
                if let Some(entry) = entry(ifa) {
                    return Some(entry);
                }
            }
            None
        })
    }
}

/// The name, address and prefix length of one getifaddrs node, if it has all three.
fn entry(ifa: &libc::ifaddrs) -> Option<(&CStr, IpAddr, u8)> {
    if ifa.ifa_addr.is_null() || ifa.ifa_netmask.is_null() || ifa.ifa_name.is_null() {
        return None;
    }
    // SAFETY: ifa_name is a non-null, NUL-terminated string owned by the list, which
    // outlives the borrow of `ifa`.
    let name = unsafe { CStr::from_ptr(ifa.ifa_name) };
    // SAFETY: ifa_addr is non-null and points at a sockaddr, whose family field every
    // sockaddr type starts with.
    let family = libc::c_int::from(unsafe { (*ifa.ifa_addr).sa_family });
    let (addr, prefix) = match family {
        libc::AF_INET => {
            // SAFETY: the family says both ifa_addr and ifa_netmask (non-null) point at a
            // sockaddr_in, which the list holds for as long as `ifa` is borrowed.
            let (a, m) = unsafe {
                (
                    &*ifa.ifa_addr.cast::<libc::sockaddr_in>(),
                    &*ifa.ifa_netmask.cast::<libc::sockaddr_in>(),
                )
            };
            let addr = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            (IpAddr::V4(addr), m.sin_addr.s_addr.count_ones())
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let (a, m) = unsafe {
                (
                    &*ifa.ifa_addr.cast::<libc::sockaddr_in6>(),
                    &*ifa.ifa_netmask.cast::<libc::sockaddr_in6>(),
                )
            };
            let prefix = m.sin6_addr.s6_addr.iter().map(|b| b.count_ones()).sum();
            (IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)), prefix)
        }
        _ => return None,
    };
    Some((name, addr, prefix as u8))
}

impl Drop for InterfaceAddresses {
    fn drop(&mut self) {
        // SAFETY: `list` came from getifaddrs, no borrow of it outlives `self`, and it is
        // freed only here, once.
        unsafe { libc::freeifaddrs(self.list) };
    }
}

// ---------------------------------------------------------------------------------------
// Process.

/// The soft and hard limits on open files (getrlimit RLIMIT_NOFILE).
pub(crate) fn open_files_limit() -> io::Result<(libc::rlim_t, libc::rlim_t)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into a valid, exclusively borrowed local.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) })?;
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Sets the soft and hard limits on open files (setrlimit RLIMIT_NOFILE).
pub(crate) fn set_open_files_limit(soft: libc::rlim_t, hard: libc::rlim_t) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads one rlimit from a valid local that outlives the call.
    check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) })?;
    Ok(())
}

/// Clock ticks per second (sysconf `_SC_CLK_TCK`), the unit of /proc's process times;
/// -1 if unknown.
pub(crate) fn clock_ticks_per_second() -> libc::c_long {
    // SAFETY: sysconf only reads a configuration value.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }
}

// ---------------------------------------------------------------------------------------
// The C library as a test oracle.

/// The C library's own readers, for differential tests of ours (`resolv_conf`).
#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
pub(crate) mod libc_oracle {
    use std::ffi::CStr;
    use std::net::{Ipv4Addr, Ipv6Addr};

    // SAFETY: glibc's declarations (arpa/inet.h) of the two functions.
    unsafe extern "C" {
        fn inet_aton(cp: *const libc::c_char, inp: *mut libc::in_addr) -> libc::c_int;
        fn inet_pton(
            af: libc::c_int,
            src: *const libc::c_char,
            dst: *mut libc::c_void,
        ) -> libc::c_int;
    }

    /// inet_aton(3): the address `s` reads as, or None if it reads as none.
    pub(crate) fn aton(s: &CStr) -> Option<Ipv4Addr> {
        let mut out = libc::in_addr { s_addr: 0 };
        // SAFETY: a valid C string and a valid out pointer, both alive for the call.
        let ok = unsafe { inet_aton(s.as_ptr(), &mut out) };
        (ok == 1).then(|| Ipv4Addr::from(u32::from_be(out.s_addr)))
    }

    /// inet_pton(3) for AF_INET6.
    pub(crate) fn pton6(s: &CStr) -> Option<Ipv6Addr> {
        let mut out = [0u8; 16];
        // SAFETY: a valid C string and a 16-byte out buffer (an in6_addr), both alive for
        // the call.
        let ok = unsafe { inet_pton(libc::AF_INET6, s.as_ptr(), out.as_mut_ptr().cast()) };
        (ok == 1).then(|| Ipv6Addr::from(out))
    }

    /// atoi(3).
    pub(crate) fn atoi(s: &CStr) -> libc::c_int {
        // SAFETY: a valid C string, alive for the call.
        unsafe { libc::atoi(s.as_ptr()) }
    }
}
