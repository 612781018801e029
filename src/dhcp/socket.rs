//! DHCP sockets and reply delivery (RFC 2131 4.1): to the relay when giaddr is set, to ciaddr
//! when the client has an address, broadcast when it asks (and for NAKs), otherwise unicast to
//! the offered address at the client's MAC — for which the kernel's ARP table is primed with
//! SIOCSARP, since the client cannot answer ARP for an address it does not have yet. The ioctl
//! is made through libc by hand (in `sys`): no crate we use offers it.

use crate::types::Mac;
use dhcproto::v4::{Message, MessageType};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsFd;
use tokio::net::UdpSocket;

/// Receive buffer asked for on the DHCP socket.
const RECV_BUFFER: usize = 4 << 20;

/// Longest wait for room in a full send buffer before a reply is given up.
const SEND_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// Where a reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// A relay agent (or perfdhcp): its address and port.
    Relay(SocketAddr),
    /// A client that has an address.
    Unicast(SocketAddr),
    /// 255.255.255.255 on the interface.
    Broadcast(u16),
    /// A client without an address: unicast to `addr` at `mac`.
    Hardware {
        /// The address offered.
        addr: Ipv4Addr,
        /// The client's MAC, which the kernel's ARP table is given for `addr`.
        mac: Mac,
        /// The client's port.
        port: u16,
    },
}

/// RFC 2131 4.1's choice of destination for `reply` to `request`, received from `source`.
pub fn destination(
    request: &Message,
    reply: &Message,
    source: SocketAddr,
    client_port: u16,
    mac: Mac,
) -> Destination {
    let giaddr = request.giaddr();
    if !giaddr.is_unspecified() {
        return Destination::Relay(SocketAddr::V4(SocketAddrV4::new(giaddr, source.port())));
    }
    let is_nak = reply.opts().msg_type() == Some(MessageType::Nak);
    if is_nak {
        return Destination::Broadcast(client_port);
    }
    let ciaddr = request.ciaddr();
    if !ciaddr.is_unspecified() {
        return Destination::Unicast(SocketAddr::V4(SocketAddrV4::new(ciaddr, client_port)));
    }
    if request.flags().broadcast() || reply.yiaddr().is_unspecified() {
        return Destination::Broadcast(client_port);
    }
    Destination::Hardware {
        addr: reply.yiaddr(),
        mac,
        port: client_port,
    }
}

/// A UDP socket on `port` that sees only packets arriving on `interface`. Bound without
/// SO_REUSEADDR, so it fails with `AddrInUse` when another DHCP server would see the same
/// packets (a socket on the port bound to this interface, or to none): two servers answering
/// one network must never happen silently. `holder` says who that is.
pub(crate) fn bind(interface: &str, port: u16) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_broadcast(true)?;
    // Room for bursts (a relay's retries, or many guests booting at once) while a batch of
    // leases is being committed; the kernel caps it at net.core.rmem_max.
    crate::ports::set_receive_buffer(&socket, RECV_BUFFER)?;
    socket.bind_device(Some(interface.as_bytes()))?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// The address to send a reply for `dest` to, through `socket`, bound to `interface`.
pub(crate) fn target(socket: &UdpSocket, interface: &str, dest: Destination) -> SocketAddr {
    match dest {
        Destination::Relay(a) | Destination::Unicast(a) => a,
        Destination::Broadcast(port) => SocketAddr::from((Ipv4Addr::BROADCAST, port)),
        Destination::Hardware { addr, mac, port } => {
            match prime_arp(socket, interface, addr, mac) {
                Ok(()) => SocketAddr::from((addr, port)),
                Err(e) => {
                    tracing::debug!(error = %e, %addr, "cannot set ARP entry; broadcasting instead");
                    SocketAddr::from((Ipv4Addr::BROADCAST, port))
                }
            }
        }
    }
}

/// Sends `bytes` to `target` through `socket` at once, from whichever thread holds the reply
/// (the runtime's, or the lease writer's right after a commit). The system call is made
/// directly: tokio's idea of the socket's readiness belongs to the runtime thread. When the
/// send buffer is full, waits up to `SEND_WAIT` for room; past that the reply is given up
/// (the error says so), and the client retransmits as DHCP clients do.
pub(crate) fn send_now(socket: &UdpSocket, bytes: &[u8], target: SocketAddr) -> io::Result<()> {
    let sock = socket2::SockRef::from(socket);
    let to = socket2::SockAddr::from(target);
    match sock.send_to(bytes, &to) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            if crate::sys::wait_writable(socket.as_fd(), SEND_WAIT)? {
                sock.send_to(bytes, &to).map(|_| ())
            } else {
                Err(e)
            }
        }
        sent => sent.map(|_| ()),
    }
}

/// Adds `addr` → `mac` to the kernel's ARP table for `interface` (SIOCSARP).
fn prime_arp(socket: &UdpSocket, interface: &str, addr: Ipv4Addr, mac: Mac) -> io::Result<()> {
    crate::sys::set_arp_entry(socket.as_fd(), interface, addr, mac.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::{DhcpOption, Flags};

    fn request(giaddr: [u8; 4], ciaddr: [u8; 4], broadcast: bool) -> Message {
        let mut m = Message::new(
            ciaddr.into(),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            giaddr.into(),
            &[1, 2, 3, 4, 5, 6],
        );
        if broadcast {
            m.set_flags(Flags::default().set_broadcast());
        }
        m
    }

    fn reply(kind: MessageType) -> Message {
        let mut m = Message::new(
            [0; 4].into(),
            [198, 18, 0, 9].into(),
            [0; 4].into(),
            [0; 4].into(),
            &[1, 2, 3, 4, 5, 6],
        );
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        m
    }

    #[test]
    fn follows_rfc2131_section_4_1() {
        let mac = Mac([1, 2, 3, 4, 5, 6]);
        let src: SocketAddr = "198.18.0.50:67".parse().unwrap();
        let ack = reply(MessageType::Ack);
        let cases = [
            (
                request([10, 0, 0, 1], [0; 4], false),
                Destination::Relay("10.0.0.1:67".parse().unwrap()),
            ),
            (
                request([0; 4], [198, 18, 0, 7], false),
                Destination::Unicast("198.18.0.7:68".parse().unwrap()),
            ),
            (request([0; 4], [0; 4], true), Destination::Broadcast(68)),
            (
                request([0; 4], [0; 4], false),
                Destination::Hardware {
                    addr: Ipv4Addr::new(198, 18, 0, 9),
                    mac,
                    port: 68,
                },
            ),
        ];
        for (req, want) in cases {
            assert_eq!(destination(&req, &ack, src, 68, mac), want);
        }
        let nak = reply(MessageType::Nak);
        assert_eq!(
            destination(&request([0; 4], [198, 18, 0, 7], false), &nak, src, 68, mac),
            Destination::Broadcast(68)
        );
    }
}
