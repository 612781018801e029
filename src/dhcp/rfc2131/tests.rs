//! Decisions for client messages built with dhcproto.

use super::*;
use crate::config::Range;
use dhcproto::v4::Flags;

const NOW: u64 = 1_000_000;
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

fn setup() -> (Pool, Offerings) {
    let range = Range {
        start: "198.18.0.10".parse().unwrap(),
        end: "198.18.0.20".parse().unwrap(),
        subnet: None,
    };
    let pool = Pool::new(
        vec![(range, "198.18.0.0/24".parse().unwrap())],
        &[],
        SERVER,
        100,
    );
    let offerings = Offerings {
        server: SERVER,
        lease_time: 600,
        router: Some(SERVER),
        dns_servers: vec![SERVER],
        domain: Some("vm.test".into()),
        search: vec!["vm.test".into()],
    };
    (pool, offerings)
}

fn message(kind: MessageType, mac_last: u8, opts: Vec<DhcpOption>) -> (Message, Vec<u8>) {
    let mut m = Message::new(
        [0; 4].into(),
        [0; 4].into(),
        [0; 4].into(),
        [0; 4].into(),
        &[2, 0, 0, 0, 0, mac_last],
    );
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    for o in opts {
        m.opts_mut().insert(o);
    }
    let raw = dhcproto::Encodable::to_vec(&m).unwrap();
    (m, raw)
}

fn decide_on(pool: &mut Pool, o: &Offerings, m: &(Message, Vec<u8>)) -> Decision {
    let cm = validate(&m.0, &m.1).unwrap();
    decide(pool, o, &cm, NOW)
}

fn opt(m: &Message, code: OptionCode) -> Option<&DhcpOption> {
    m.opts().get(code)
}

#[test]
fn discover_then_request_gives_a_durable_ack_with_options() {
    let (mut pool, o) = setup();
    let offer = decide_on(&mut pool, &o, &message(MessageType::Discover, 1, vec![]))
        .reply
        .unwrap();
    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
    let addr = offer.yiaddr();
    assert!(matches!(
        opt(&offer, OptionCode::AddressLeaseTime),
        Some(DhcpOption::AddressLeaseTime(600))
    ));
    assert!(
        matches!(opt(&offer, OptionCode::DomainNameServer), Some(DhcpOption::DomainNameServer(d)) if d == &vec![SERVER])
    );
    assert!(
        matches!(opt(&offer, OptionCode::DomainName), Some(DhcpOption::DomainName(d)) if d == "vm.test")
    );
    assert!(opt(&offer, OptionCode::DomainSearch).is_some());
    assert!(
        matches!(opt(&offer, OptionCode::SubnetMask), Some(DhcpOption::SubnetMask(m)) if *m == Ipv4Addr::new(255, 255, 255, 0))
    );

    let req = message(
        MessageType::Request,
        1,
        vec![
            DhcpOption::ServerIdentifier(SERVER),
            DhcpOption::RequestedIpAddress(addr),
            DhcpOption::Hostname("Web-01".into()),
        ],
    );
    let d = decide_on(&mut pool, &o, &req);
    let ack = d.reply.unwrap();
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), addr);
    assert!(
        matches!(&d.changes[..], [Change::Put(l)] if l.addr == addr && l.name.as_deref() == Some("web-01"))
    );
    assert!(d.names_changed);
}

#[test]
fn request_for_another_server_is_ignored_and_taken_address_is_naked() {
    let (mut pool, o) = setup();
    let other = message(
        MessageType::Request,
        1,
        vec![
            DhcpOption::ServerIdentifier(Ipv4Addr::new(198, 18, 0, 2)),
            DhcpOption::RequestedIpAddress(Ipv4Addr::new(198, 18, 0, 10)),
        ],
    );
    assert!(decide_on(&mut pool, &o, &other).reply.is_none());

    let take = message(
        MessageType::Request,
        1,
        vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(
            198, 18, 0, 10,
        ))],
    );
    assert_eq!(
        decide_on(&mut pool, &o, &take)
            .reply
            .unwrap()
            .opts()
            .msg_type(),
        Some(MessageType::Ack)
    );
    let steal = message(
        MessageType::Request,
        2,
        vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(
            198, 18, 0, 10,
        ))],
    );
    let nak = decide_on(&mut pool, &o, &steal).reply.unwrap();
    assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));
    assert!(nak.flags().broadcast());
    let elsewhere = message(
        MessageType::Request,
        3,
        vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 9, 9, 9))],
    );
    assert_eq!(
        decide_on(&mut pool, &o, &elsewhere)
            .reply
            .unwrap()
            .opts()
            .msg_type(),
        Some(MessageType::Nak)
    );
}

#[test]
fn a_name_held_by_a_live_lease_is_not_taken_over() {
    let (mut pool, o) = setup();
    for (mac, ip) in [(1, 10), (2, 11)] {
        let req = message(
            MessageType::Request,
            mac,
            vec![
                DhcpOption::RequestedIpAddress(Ipv4Addr::new(198, 18, 0, ip)),
                DhcpOption::Hostname("same".into()),
            ],
        );
        decide_on(&mut pool, &o, &req);
    }
    assert_eq!(
        pool.names(NOW),
        vec![("same".to_string(), Ipv4Addr::new(198, 18, 0, 10))]
    );
}

#[test]
fn release_and_inform() {
    let (mut pool, o) = setup();
    let addr = Ipv4Addr::new(198, 18, 0, 12);
    decide_on(
        &mut pool,
        &o,
        &message(
            MessageType::Request,
            1,
            vec![
                DhcpOption::RequestedIpAddress(addr),
                DhcpOption::Hostname("h".into()),
            ],
        ),
    );
    let (mut rel, _) = message(MessageType::Release, 1, vec![]);
    rel.set_ciaddr(addr);
    let raw = dhcproto::Encodable::to_vec(&rel).unwrap();
    let d = decide_on(&mut pool, &o, &(rel, raw));
    assert!(matches!(&d.changes[..], [Change::Remove(a)] if *a == addr));
    assert!(d.names_changed && d.reply.is_none());

    let (mut inf, _) = message(MessageType::Inform, 5, vec![]);
    inf.set_ciaddr(Ipv4Addr::new(198, 18, 0, 77))
        .set_flags(Flags::default());
    let raw = dhcproto::Encodable::to_vec(&inf).unwrap();
    let ack = decide_on(&mut pool, &o, &(inf, raw)).reply.unwrap();
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert!(opt(&ack, OptionCode::AddressLeaseTime).is_none() && ack.yiaddr().is_unspecified());
    assert!(opt(&ack, OptionCode::DomainNameServer).is_some());
}

#[test]
fn malformed_messages_are_rejected_before_use() {
    let (_, raw) = message(MessageType::Discover, 1, vec![]);
    let mut bad = raw.clone();
    bad[2] = 200; // hlen beyond chaddr: dhcproto's chaddr() would panic
    let decoded =
        <Message as dhcproto::Decodable>::decode(&mut dhcproto::Decoder::new(&bad)).unwrap();
    assert_eq!(validate(&decoded, &bad).err(), Some(Rejected::NotEthernet));
    let mut magic = raw.clone();
    magic[236] = 0;
    let decoded =
        <Message as dhcproto::Decodable>::decode(&mut dhcproto::Decoder::new(&magic)).unwrap();
    assert_eq!(validate(&decoded, &magic).err(), Some(Rejected::BadMagic));
}

#[test]
fn host_names_become_one_label() {
    assert_eq!(host_label("My_Host!"), Some("myhost".into()));
    assert_eq!(host_label("-x-"), Some("x".into()));
    assert_eq!(host_label("___"), None);
}

#[test]
fn a_decline_for_someone_elses_address_changes_nothing() {
    let (mut pool, o) = setup();
    let addr = Ipv4Addr::new(198, 18, 0, 10);
    decide_on(
        &mut pool,
        &o,
        &message(
            MessageType::Request,
            1,
            vec![DhcpOption::RequestedIpAddress(addr)],
        ),
    );
    let d = decide_on(
        &mut pool,
        &o,
        &message(
            MessageType::Decline,
            2,
            vec![DhcpOption::RequestedIpAddress(addr)],
        ),
    );
    assert!(d.changes.is_empty(), "{:?}", d.changes);
    assert_eq!(
        pool.lease_of(
            &crate::dhcp::pool::client_id_from_mac(Mac([2, 0, 0, 0, 0, 1])),
            NOW
        )
        .map(|l| l.addr),
        Some(addr)
    );
}

#[test]
fn lease_events_read_like_dnsmasq_lines() {
    let mac = Mac([0x52, 0x54, 0, 0x11, 0x22, 0x33]);
    let addr = Ipv4Addr::new(192, 168, 122, 45);
    let ack = LeaseEvent::Ack {
        addr,
        mac,
        name: Some("guest1".into()),
    };
    assert_eq!(
        ack.line("virbr0"),
        "DHCPACK(virbr0) 192.168.122.45 52:54:00:11:22:33 guest1"
    );
    let release = LeaseEvent::Release { addr, mac };
    assert_eq!(
        release.line("virbr0"),
        "DHCPRELEASE(virbr0) 192.168.122.45 52:54:00:11:22:33"
    );
}

/// A lease log that applies changes in the order it receives them, as the writer thread
/// does, to a map standing for the database.
#[derive(Default)]
struct ScriptedLog {
    order: std::cell::RefCell<Vec<Change>>,
}

impl ScriptedLog {
    /// What the database holds after applying every queued change in order.
    fn stored(&self) -> std::collections::BTreeMap<Ipv4Addr, Lease> {
        let mut db = std::collections::BTreeMap::new();
        for c in self.order.borrow().iter() {
            match c {
                Change::Put(l) => {
                    db.insert(l.addr, l.clone());
                }
                Change::Remove(a) => {
                    db.remove(a);
                }
            }
        }
        db
    }
}

impl LeaseLog for ScriptedLog {
    type Pending = usize;
    fn enqueue(&self, changes: Vec<Change>) -> usize {
        let mut order = self.order.borrow_mut();
        order.extend(changes);
        order.len()
    }
}

fn logged(
    pool: &mut Pool,
    o: &Offerings,
    m: &(Message, Vec<u8>),
    now: u64,
    log: &ScriptedLog,
) -> Logged<usize> {
    let cm = validate(&m.0, &m.1).unwrap();
    decide_logged(pool, o, &cm, now, log)
}

#[test]
fn back_to_back_renew_and_release_leave_nothing_stored() {
    let (mut pool, o) = setup();
    let log = ScriptedLog::default();
    let mut renewals = Vec::new();
    for client in 1..=200u8 {
        let offer = logged(
            &mut pool,
            &o,
            &message(MessageType::Discover, client, vec![]),
            NOW,
            &log,
        );
        let addr = offer.decision.reply.unwrap().yiaddr();
        if addr.is_unspecified() {
            break; // the range is full: enough clients
        }
        let request = message(
            MessageType::Request,
            client,
            vec![DhcpOption::RequestedIpAddress(addr)],
        );
        assert!(logged(&mut pool, &o, &request, NOW, &log).pending.is_some());
        // Renew (ciaddr set) and release back to back: both decided before either is durable.
        let mut renew = message(MessageType::Request, client, vec![]);
        renew.0.set_ciaddr(addr);
        renew.1 = dhcproto::Encodable::to_vec(&renew.0).unwrap();
        let renewed = logged(&mut pool, &o, &renew, NOW + 10, &log);
        let mut release = message(MessageType::Release, client, vec![]);
        release.0.set_ciaddr(addr);
        release.1 = dhcproto::Encodable::to_vec(&release.0).unwrap();
        let released = logged(&mut pool, &o, &release, NOW + 10, &log);
        assert!(
            released.pending.is_some(),
            "client {client}: release is a change"
        );
        // The renewal's ACK is overtaken by the release: it must not be sent.
        let id = crate::dhcp::pool::client_id_from_mac(Mac([2, 0, 0, 0, 0, client]));
        assert!(!pool.is_latest(&id, renewed.seq), "client {client}");
        assert!(pool.is_latest(&id, released.seq));
        renewals.push(addr);
    }
    assert!(renewals.len() >= 10, "{} clients", renewals.len());
    // Applied in queue order, as the writer applies them: nothing released is stored.
    assert_eq!(log.stored().len(), 0, "{:?}", log.stored());
}

#[test]
fn a_returning_client_gets_its_previous_address_when_it_is_free() {
    let (mut pool, o) = setup();
    let log = ScriptedLog::default();
    // Another client first, so a fresh allocation would not land on the same address.
    let first = logged(
        &mut pool,
        &o,
        &message(MessageType::Discover, 1, vec![]),
        NOW,
        &log,
    );
    let addr = first.decision.reply.unwrap().yiaddr();
    let request = message(
        MessageType::Request,
        1,
        vec![DhcpOption::RequestedIpAddress(addr)],
    );
    logged(&mut pool, &o, &request, NOW, &log);
    let later = NOW + 601;
    let expired = pool.expire(later);
    assert_eq!(expired.len(), 1);
    let other = logged(
        &mut pool,
        &o,
        &message(MessageType::Discover, 2, vec![]),
        later,
        &log,
    );
    assert_ne!(
        other.decision.reply.unwrap().yiaddr(),
        addr,
        "the next free address"
    );
    let back = logged(
        &mut pool,
        &o,
        &message(MessageType::Discover, 1, vec![]),
        later,
        &log,
    );
    assert_eq!(back.decision.reply.unwrap().yiaddr(), addr);
}
