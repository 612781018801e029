//! The flow of a query through the resolver, built from pure parts (local names, a routing
//! table, a forwarder over scripted servers): local data before routes, local-only domains
//! and plain names never forwarded, the cache before the walk, truncation, BADVERS, the ACL.

use super::*;
use crate::dns::router::{DefaultSource, DomainRoute, RouteSource, WalkOptions};
use crate::dns::transport::script::{FULL, Script, answer};
use crate::dns::upstream::UpstreamPool;
use crate::hosts::HostsEntry;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const GENERAL: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)),
    53,
);
const CORP: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)),
    53,
);

fn hosts(name: &str, addrs: impl IntoIterator<Item = [u8; 4]>) -> Vec<HostsEntry> {
    addrs
        .into_iter()
        .map(|a| HostsEntry {
            addr: std::net::Ipv4Addr::from(a).into(),
            names: vec![name.to_string()],
        })
        .collect()
}

async fn resolver() -> Resolver<Script> {
    let mut entries = hosts("guest1.vm.test", [[192, 168, 122, 10]]);
    entries.extend(hosts("printer", [[192, 168, 1, 9]]));
    entries.extend(hosts("big.vm.test", (1..=40).map(|i| [198, 51, 100, i])));
    let local = LocalNames::build(Some("vm.test"), &["lab.test".into()], &[], &entries, 0);
    let pool = UpstreamPool::new((Duration::from_millis(200), Duration::from_secs(2)));
    let script = Script::default();
    for (server, n) in [(GENERAL, 80), (CORP, 10)] {
        script.set(server, "", FULL);
        script.set(server, "*", answer(n));
    }
    let forwarder = Forwarder::with_exchanger(script, pool.clone(), 100, 100);
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
    forwarder
        .learn_now(&[pool.get(GENERAL), pool.get(CORP)])
        .await;
    let acl = Acl::new(&["192.168.122.0/24".parse().unwrap()], &[], &[]);
    Resolver::new(acl, local, routes, forwarder)
}

/// A query for `name`/`qtype`, with an OPT of `edns_version` if given.
fn query(name: &str, qtype: u16, edns_version: Option<u8>) -> Vec<u8> {
    let mut q = wire::build_query(&wire::name_from_dotted(name).unwrap(), qtype, 0x4242);
    if let Some(version) = edns_version {
        wire::push_opt(&mut q, false, 0);
        let len = q.len();
        q[len - 5] = version;
    }
    q
}

struct Case {
    what: &'static str,
    name: &'static str,
    qtype: u16,
    transport: Transport,
    edns_version: Option<u8>,
    rcode: Rcode,
    answers: u16,
    truncated: bool,
    /// Exchanges with the general server so far, after this case.
    general_asked: usize,
}

const fn case(what: &'static str, name: &'static str, rcode: Rcode, answers: u16) -> Case {
    Case {
        what,
        name,
        qtype: wire::TYPE_A,
        transport: Transport::Udp,
        edns_version: None,
        rcode,
        answers,
        truncated: false,
        general_asked: 0,
    }
}

#[tokio::test(start_paused = true)]
async fn a_query_meets_local_data_then_the_cache_then_its_route() {
    let r = resolver().await;
    let cases = [
        case(
            "a guest's name, from local data",
            "guest1.vm.test",
            Rcode::NOERROR,
            1,
        ),
        case(
            "unknown in the network's domain: never forwarded",
            "nope.vm.test",
            Rcode::NXDOMAIN,
            0,
        ),
        case("a local-only domain", "x.lab.test", Rcode::NXDOMAIN, 0),
        case("a hosts-file plain name", "printer", Rcode::NOERROR, 1),
        case(
            "an unknown plain name stays local",
            "plainname",
            Rcode::NXDOMAIN,
            0,
        ),
        Case {
            general_asked: 1,
            ..case(
                "an outside name goes to the default servers",
                "www.example.com",
                Rcode::NOERROR,
                1,
            )
        },
        Case {
            general_asked: 1,
            ..case(
                "asked again: from the cache",
                "www.example.com",
                Rcode::NOERROR,
                1,
            )
        },
        Case {
            general_asked: 1,
            ..case(
                "a forwarder's domain goes to its server",
                "intranet.corp.example",
                Rcode::NOERROR,
                1,
            )
        },
        Case {
            truncated: true,
            general_asked: 1,
            ..case(
                "too large for 512 bytes over UDP: TC",
                "big.vm.test",
                Rcode::NOERROR,
                0,
            )
        },
        Case {
            transport: Transport::Tcp,
            general_asked: 1,
            ..case(
                "the same over TCP: whole",
                "big.vm.test",
                Rcode::NOERROR,
                40,
            )
        },
        Case {
            edns_version: Some(1),
            general_asked: 1,
            ..case(
                "EDNS version 1: BADVERS (header NOERROR)",
                "www.example.com",
                Rcode::NOERROR,
                0,
            )
        },
    ];
    for c in cases {
        let packet = query(c.name, c.qtype, c.edns_version);
        let reply = r.answer(&packet, c.transport).await.expect("a reply");
        assert_eq!(
            (wire::rcode(&reply), wire::ancount(&reply), wire::tc(&reply)),
            (c.rcode, c.answers, c.truncated),
            "{}",
            c.what
        );
        assert_eq!(wire::id(&reply), 0x4242, "{}", c.what);
        let asked = r.forwarder().exchanger().asked(GENERAL, "www.example.com");
        assert_eq!(asked, c.general_asked, "{}", c.what);
    }
    assert_eq!(
        r.forwarder()
            .exchanger()
            .asked(CORP, "intranet.corp.example"),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn clients_outside_the_allowed_networks_are_refused() {
    let r = resolver().await;
    assert!(r.admits("192.168.122.77".parse().unwrap()));
    assert!(r.admits("127.0.0.1".parse().unwrap()));
    assert!(!r.admits("203.0.113.9".parse().unwrap()));
    let packet = query("www.example.com", wire::TYPE_A, None);
    let Immediate::Reply(reply, Source::Refused) = r.refuse(&packet) else {
        panic!("a readable query is answered REFUSED");
    };
    assert_eq!(wire::rcode(&reply), Rcode::REFUSED);
    assert!(matches!(r.refuse(&packet[..5]), Immediate::Drop));
}

#[tokio::test(start_paused = true)]
async fn malformed_queries_are_dropped_or_answered_formerr() {
    let r = resolver().await;
    assert!(
        r.answer(&[0u8; 5], Transport::Udp).await.is_none(),
        "too short: dropped"
    );
    let mut two_questions = query("a.example", wire::TYPE_A, None);
    two_questions[5] = 2;
    let reply = r.answer(&two_questions, Transport::Udp).await.unwrap();
    assert_eq!(wire::rcode(&reply), Rcode::FORMERR);
}

#[tokio::test(start_paused = true)]
async fn a_local_answer_keeps_every_byte_of_an_unusual_question() {
    // `\248.lab.test` A: a label byte that hickory's text form reads as octal (fuzzing).
    let hex = "42420100000100000000000001f8036c616204746573740000010001";
    let q: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let r = resolver().await;
    let reply = r.answer(&q, Transport::Udp).await.expect("a reply");
    assert_eq!(wire::rcode(&reply), Rcode::NXDOMAIN, "a local-only domain");
    assert_eq!(&reply[12..q.len()], &q[12..], "the question as asked");
    hickory_proto::op::Message::from_vec(&reply).expect("a well-formed reply");
}
