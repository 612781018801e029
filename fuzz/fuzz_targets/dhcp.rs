//! DHCP: `server::decode` (the service's decode step: dhcproto behind a length check of the
//! options it asserts on, and `catch_unwind`), `rfc2131::validate`, then `decide` on a pool
//! with leases in it (a full small range, a relayed subnet, a static host). The message is
//! decided twice (a retransmission gets the same address); an OFFER is followed by the
//! REQUEST for it, which must be ACKed. Every reply must encode, decode again, and carry an
//! address the pool hands out; a published name is one DNS label.
#![no_main]

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};
use libfuzzer_sys::fuzz_target;
use std::net::{Ipv4Addr, SocketAddr};
use virtdns::config::{Range, StaticHost};
use virtdns::dhcp::pool::{Lease, Pool, client_id_from_mac};
use virtdns::dhcp::rfc2131::{self, Decision, Offerings};
use virtdns::dhcp::{server, socket};
use virtdns::types::{DomainName, Mac};

const NOW: u64 = 1_000_000;
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 122, 1);

fn offerings() -> Offerings {
    Offerings {
        server: SERVER,
        lease_time: 3600,
        router: Some(SERVER),
        dns_servers: vec![SERVER],
        domain: Some("vm.test".into()),
        search: vec!["vm.test".into()],
    }
}

/// A range of four addresses with three leased (the first to 52:54:00:00:00:01), a relayed
/// subnet's range, and a static host (52:54:00:00:00:02 at .50, named "fixed").
fn pool() -> Pool {
    let local = Range {
        start: Ipv4Addr::new(192, 168, 122, 10),
        end: Ipv4Addr::new(192, 168, 122, 13),
        subnet: None,
    };
    let relayed = Range {
        start: Ipv4Addr::new(10, 1, 0, 100),
        end: Ipv4Addr::new(10, 1, 0, 200),
        subnet: Some("10.1.0.0/24".parse().unwrap()),
    };
    let statics = [StaticHost {
        mac: Mac([0x52, 0x54, 0, 0, 0, 2]),
        address: Some(Ipv4Addr::new(192, 168, 122, 50)),
        name: Some(DomainName("fixed".into())),
    }];
    let mut pool = Pool::new(
        vec![
            (local, "192.168.122.0/24".parse().unwrap()),
            (relayed, "10.1.0.0/24".parse().unwrap()),
        ],
        &statics,
        SERVER,
        64,
    );
    let leases = (0..3u8)
        .map(|i| {
            let mac = Mac([0x52, 0x54, 0, 0, 0, if i == 0 { 1 } else { 0x10 + i }]);
            Lease {
                addr: Ipv4Addr::new(192, 168, 122, 10 + i),
                client: client_id_from_mac(mac),
                mac,
                name: Some(format!("guest{i}")),
                expires: NOW + 600,
            }
        })
        .collect();
    pool.restore(leases);
    pool
}

fn handed_out(a: Ipv4Addr) -> bool {
    let a = u32::from(a);
    (u32::from(Ipv4Addr::new(192, 168, 122, 10))..=u32::from(Ipv4Addr::new(192, 168, 122, 13)))
        .contains(&a)
        || (u32::from(Ipv4Addr::new(10, 1, 0, 100))..=u32::from(Ipv4Addr::new(10, 1, 0, 200)))
            .contains(&a)
        || a == u32::from(Ipv4Addr::new(192, 168, 122, 50))
}

/// What every decision's reply must be: a BOOTREPLY for this transaction that encodes and
/// decodes again, of a kind that answers the message, with an address the pool hands out.
fn check(msg: &Message, d: &Decision, mac: Mac) -> Option<(MessageType, Ipv4Addr)> {
    let reply = d.reply.as_ref()?;
    assert_eq!(reply.opcode(), Opcode::BootReply);
    assert_eq!(reply.xid(), msg.xid());
    let bytes = reply.to_vec().expect("the reply encodes");
    let again = Message::decode(&mut Decoder::new(&bytes)).expect("the reply decodes");
    let kind = again
        .opts()
        .msg_type()
        .expect("the reply has a message type");
    let yiaddr = reply.yiaddr();
    match kind {
        MessageType::Offer | MessageType::Ack if !yiaddr.is_unspecified() => {
            assert!(handed_out(yiaddr), "{kind:?} of {yiaddr}");
            assert!(
                matches!(
                    again.opts().get(OptionCode::ServerIdentifier),
                    Some(DhcpOption::ServerIdentifier(s)) if *s == SERVER
                ),
                "server identifier"
            );
        }
        MessageType::Ack => {} // INFORM: no address of ours
        MessageType::Nak => assert!(yiaddr.is_unspecified()),
        other => panic!("replied {other:?}"),
    }
    let source = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 68);
    let _ = socket::destination(msg, reply, source, 68, mac);
    Some((kind, yiaddr))
}

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = server::decode(data) else {
        return;
    };
    let Ok(client) = rfc2131::validate(&msg, data) else {
        return;
    };
    if let Some(name) = rfc2131::requested_name(&msg, Some("vm.test")) {
        assert!(!name.is_empty() && name.len() <= 63, "{name:?}");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{name:?}"
        );
        assert!(!name.starts_with('-') && !name.ends_with('-'), "{name:?}");
    }
    let offer = offerings();
    let mut pool = pool();
    let first = rfc2131::decide(&mut pool, &offer, &client, NOW);
    let first_reply = check(&msg, &first, client.mac);
    let second = rfc2131::decide(&mut pool, &offer, &client, NOW + 1);
    let second_reply = check(&msg, &second, client.mac);
    if let (Some((MessageType::Offer, a)), Some((MessageType::Offer, b))) =
        (first_reply, second_reply)
    {
        assert_eq!(a, b, "a retransmitted DISCOVER is offered the same address");
    }
    if let (Some((MessageType::Ack, a)), Some((kind, b))) = (first_reply, second_reply)
        && client.kind == MessageType::Request
    {
        assert_eq!(
            (kind, b),
            (MessageType::Ack, a),
            "a retransmitted REQUEST is ACKed again"
        );
    }

    // The REQUEST that takes an OFFER (SELECTING: options 50 and 54), written as the client
    // wrote its DISCOVER (dhcproto does not write every option it reads back the same way:
    // option 81 without its E flag goes out in ASCII and comes back unreadable).
    if let Some((MessageType::Offer, addr)) = first_reply {
        let raw = request_for(data, addr);
        let Ok(decoded) = server::decode(&raw) else {
            return;
        };
        let rc = rfc2131::validate(&decoded, &raw).expect("the REQUEST is valid");
        let selects = |m: &Message| {
            (
                m.opts().get(OptionCode::SubnetSelection).cloned(),
                m.giaddr(),
            )
        };
        if selects(&decoded) != selects(&msg) || rc.client != client.client {
            return; // an option left out joined two others (RFC 3396) into something else
        }
        let d = rfc2131::decide(&mut pool, &offer, &rc, NOW + 2);
        assert_eq!(
            check(&decoded, &d, rc.mac),
            Some((MessageType::Ack, addr)),
            "the offered address is ACKed: {}",
            d.note
        );
        assert!(!d.changes.is_empty(), "an ACK is made durable");
    }
});

/// The DISCOVER `raw` turned into the REQUEST for `addr` from this server: ciaddr zero, options
/// 53 (REQUEST), 50 and 54 first, then the DISCOVER's other options as they were.
fn request_for(raw: &[u8], addr: Ipv4Addr) -> Vec<u8> {
    let mut out = raw[..240].to_vec();
    out[12..16].fill(0);
    out.extend_from_slice(&[53, 1, 3, 50, 4]);
    out.extend_from_slice(&addr.octets());
    out.extend_from_slice(&[54, 4]);
    out.extend_from_slice(&SERVER.octets());
    let mut off = 240;
    while let Some(&code) = raw.get(off) {
        match code {
            0 => {
                out.push(0);
                off += 1;
            }
            255 => break,
            _ => {
                let Some(&len) = raw.get(off + 1) else {
                    break;
                };
                let end = (off + 2 + usize::from(len)).min(raw.len());
                if ![50, 53, 54].contains(&code) {
                    out.extend_from_slice(&raw[off..end]);
                }
                off = end;
            }
        }
    }
    out.push(255);
    out
}
