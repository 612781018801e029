//! DHCP traffic no real client sends on demand, sent from inside a guest namespace by this
//! same test binary (`e2e --guest-helper MODE SERVER [COUNT] [RELAY]`): malformed packets of
//! every kind, a flood of DISCOVERs from random MACs, back-to-back renew/release pairs
//! as a relay, and named leases taken and released as a relay (for publishing). Bounded in count; it only sends to the given lab address.

use crate::noise::Noise;
use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

/// Runs the helper if the arguments ask for it; returns false otherwise.
pub fn run_if_asked() -> bool {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some("--guest-helper") {
        return false;
    }
    let server: SocketAddr = args[3].parse().expect("server address");
    let socket = UdpSocket::bind("0.0.0.0:0").expect("socket");
    socket.set_broadcast(true).unwrap();
    match args[2].as_str() {
        "garbage" => garbage(&socket, server),
        "flood" => flood(&socket, server, args[4].parse().expect("count")),
        "expect-silence" => expect_silence(&socket, server),
        "renew-release" => renew_release(
            &socket,
            server,
            args[4].parse().expect("count"),
            args[5].parse().expect("relay address"),
        ),
        "lease-named" => lease_named(&socket, server, &args[4], &args[5]),
        "release" => release(&socket, server, &args[4], &args[5]),
        other => panic!("unknown helper mode {other}"),
    }
    true
}

fn discover(mac: [u8; 6]) -> Vec<u8> {
    encode(&message(MessageType::Discover, mac, None, None))
}

fn message(
    kind: MessageType,
    mac: [u8; 6],
    ciaddr: Option<Ipv4Addr>,
    giaddr: Option<Ipv4Addr>,
) -> Message {
    let unspecified = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new(
        ciaddr.unwrap_or(unspecified),
        unspecified,
        unspecified,
        giaddr.unwrap_or(unspecified),
        &mac,
    );
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m
}

fn encode(m: &Message) -> Vec<u8> {
    let mut buf = Vec::new();
    m.encode(&mut Encoder::new(&mut buf)).unwrap();
    buf
}

/// The reply to `xid` (the relay's socket gets the server's replies), within a second.
fn reply_to(socket: &UdpSocket, xid: u32) -> Message {
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut buf = [0u8; 1500];
    loop {
        let (n, _) = socket.recv_from(&mut buf).expect("a DHCP reply within 1 s");
        if let Ok(m) = Message::decode(&mut Decoder::new(&buf[..n]))
            && m.xid() == xid
        {
            return m;
        }
    }
}

/// For each of `count` clients, as a relay at `relay`: a lease (DISCOVER, REQUEST, ACK),
/// then a renewal and a RELEASE sent back to back, without waiting for the renewal's ACK.
/// Afterwards none of these leases may be stored.
fn renew_release(socket: &UdpSocket, server: SocketAddr, count: u16, relay: Ipv4Addr) {
    for i in 0..count {
        let mac = [0x02, 0xee, 0, 0, (i >> 8) as u8, i as u8];
        let mut d = message(MessageType::Discover, mac, None, Some(relay));
        d.set_xid(u32::from(i) << 8);
        socket.send_to(&encode(&d), server).unwrap();
        let addr = reply_to(socket, d.xid()).yiaddr();
        let mut r = message(MessageType::Request, mac, None, Some(relay));
        r.set_xid(d.xid() + 1);
        r.opts_mut().insert(DhcpOption::RequestedIpAddress(addr));
        let server_id = server_v4(server);
        r.opts_mut().insert(DhcpOption::ServerIdentifier(server_id));
        socket.send_to(&encode(&r), server).unwrap();
        reply_to(socket, r.xid());
        let mut renew = message(MessageType::Request, mac, Some(addr), Some(relay));
        renew.set_xid(d.xid() + 2);
        let mut release = message(MessageType::Release, mac, Some(addr), Some(relay));
        release.set_xid(d.xid() + 3);
        release
            .opts_mut()
            .insert(DhcpOption::ServerIdentifier(server_id));
        socket.send_to(&encode(&renew), server).unwrap();
        socket.send_to(&encode(&release), server).unwrap();
    }
    println!("{count} leases renewed and released back to back");
}

fn garbage(socket: &UdpSocket, server: SocketAddr) {
    let valid = discover([2, 0, 0, 0, 0, 1]);
    let mut sent = 0;
    let mut send = |p: &[u8]| {
        let _ = socket.send_to(p, server);
        sent += 1;
    };
    for cut in 0..valid.len() {
        send(&valid[..cut]);
    }
    let mut reply_op = valid.clone();
    reply_op[0] = Opcode::BootReply.into();
    send(&reply_op);
    let mut long_hlen = valid.clone();
    long_hlen[2] = 200;
    send(&long_hlen);
    let mut token_ring = valid.clone();
    token_ring[1] = 6;
    send(&token_ring);
    let mut bad_magic = valid.clone();
    bad_magic[236] = 0;
    send(&bad_magic);
    // An option whose length runs past the end of the packet.
    let mut overrun = valid[..valid.len() - 1].to_vec();
    overrun.extend_from_slice(&[12, 200, b'x']);
    send(&overrun);
    let mut noise = Noise(0x0dd_ba11);
    for _ in 0..500 {
        let len = (noise.next() % 600) as usize;
        send(&noise.bytes(len));
    }
    println!("sent {sent} malformed packets");
}

fn flood(socket: &UdpSocket, server: SocketAddr, count: usize) {
    let mut noise = Noise(0xf100d);
    for _ in 0..count {
        let r = noise.next().to_be_bytes();
        socket
            .send_to(&discover([0x02, r[1], r[2], r[3], r[4], r[5]]), server)
            .unwrap();
    }
    println!("sent {count} DISCOVERs from random MACs");
}

/// Sends a DISCOVER and fails if anything answers within a second.
fn expect_silence(socket: &UdpSocket, server: SocketAddr) {
    socket
        .send_to(&discover([2, 0, 0, 0, 0, 2]), server)
        .unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut buf = [0u8; 1500];
    if let Ok((n, from)) = socket.recv_from(&mut buf) {
        panic!("expected no DHCP answer from {server}, got {n} bytes from {from}");
    }
    println!("no answer, as expected");
}

/// The MAC of guest NAME: 02:<tag>:<4 bytes of the name's hash>, so each (tag, name) is one
/// client and the same name under another tag is another client.
fn named_mac(tag: u8, name: &str) -> [u8; 6] {
    let h = name.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let b = h.to_be_bytes();
    [0x02, tag, b[0], b[1], b[2], b[3]]
}

fn server_v4(server: SocketAddr) -> Ipv4Addr {
    match server.ip() {
        std::net::IpAddr::V4(v4) => v4,
        _ => unreachable!("DHCPv4"),
    }
}

/// As a relay at RELAY, leases an address for each name of `names` ("tag:name,name,..."),
/// sending the name as option 12; prints "name address" per lease.
fn lease_named(socket: &UdpSocket, server: SocketAddr, relay: &str, names: &str) {
    let relay: Ipv4Addr = relay.parse().expect("relay address");
    let (tag, names) = names.split_once(':').expect("tag:names");
    let tag: u8 = tag.parse().expect("tag");
    for (i, name) in names.split(',').enumerate() {
        let mac = named_mac(tag, name);
        let xid = (u32::from(tag) << 24) | ((i as u32) << 8) | 1;
        let mut d = message(MessageType::Discover, mac, None, Some(relay));
        d.set_xid(xid);
        d.opts_mut().insert(DhcpOption::Hostname(name.into()));
        socket.send_to(&encode(&d), server).unwrap();
        let addr = reply_to(socket, xid).yiaddr();
        let mut r = message(MessageType::Request, mac, None, Some(relay));
        r.set_xid(xid + 1);
        r.opts_mut().insert(DhcpOption::RequestedIpAddress(addr));
        r.opts_mut()
            .insert(DhcpOption::ServerIdentifier(server_v4(server)));
        r.opts_mut().insert(DhcpOption::Hostname(name.into()));
        socket.send_to(&encode(&r), server).unwrap();
        let ack = reply_to(socket, xid + 1);
        assert_eq!(
            ack.opts().msg_type(),
            Some(MessageType::Ack),
            "{name}: ACK expected"
        );
        println!("{name} {addr}");
    }
}

/// As a relay at RELAY, releases each lease of `leases` ("tag:name=addr,...").
fn release(socket: &UdpSocket, server: SocketAddr, relay: &str, leases: &str) {
    let relay: Ipv4Addr = relay.parse().expect("relay address");
    let (tag, leases) = leases.split_once(':').expect("tag:leases");
    let tag: u8 = tag.parse().expect("tag");
    for lease in leases.split(',') {
        let (name, addr) = lease.split_once('=').expect("name=addr");
        let addr: Ipv4Addr = addr.parse().expect("address");
        let mut m = message(
            MessageType::Release,
            named_mac(tag, name),
            Some(addr),
            Some(relay),
        );
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier(server_v4(server)));
        socket.send_to(&encode(&m), server).unwrap();
    }
}
