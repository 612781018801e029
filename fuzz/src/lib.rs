//! What the fuzz targets share: the client queries they ask, a resolver and a forwarder built
//! from pure parts (no sockets), a scripted upstream, and the checks every reply virtdns sends
//! must pass, with hickory-proto as the second reader.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query as HQuery, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, MX, NS, SOA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use virtdns::dns::guard::{Dropped, Expect};
use virtdns::dns::transport::{Exchange, ExchangeError, Exchanger, Protocol};
use virtdns::dns::wire::{self, Query};

/// One client query: its bytes and how virtdns reads them.
pub struct Client {
    pub bytes: Vec<u8>,
    pub q: Query,
}

/// A client query for `name`/`rtype` as a stub resolver writes it: RD, CD if asked, an OPT
/// (payload 1232, DO) if `edns` is given.
pub fn client(name: &str, rtype: RecordType, cd: bool, edns: Option<bool>) -> Client {
    let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.metadata.checking_disabled = cd;
    m.add_query(HQuery::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some(dnssec_ok) = edns {
        let mut e = Edns::new();
        e.set_max_payload(1232).set_dnssec_ok(dnssec_ok);
        m.set_edns(e);
    }
    let bytes = m.to_vec().unwrap();
    let q = wire::parse_query(&bytes).unwrap();
    Client { bytes, q }
}

/// The same query without its OPT (or with one, DO clear, if it had none): a client that
/// shares the cache entry (same name, type, flags) but not the reply's OPT.
pub fn other_edns(c: &Client) -> Client {
    let mut bytes = c.bytes[..c.q.question_end].to_vec();
    bytes[10..12].fill(0);
    if c.q.edns.is_none() {
        wire::push_opt(&mut bytes, false, 0);
    }
    let q = wire::parse_query(&bytes).unwrap();
    Client { bytes, q }
}

/// The upstream questions the reply targets read replies for (the fuzzed byte picks one).
pub fn upstream_clients() -> Vec<Client> {
    vec![
        client("www.example.com.", RecordType::A, false, Some(false)),
        client("WWW.Example.COM.", RecordType::AAAA, false, None),
        client("example.com.", RecordType::MX, true, Some(true)),
        client("nx.corp.example.", RecordType::A, false, Some(false)),
        client("example.com.", RecordType::TXT, false, None),
    ]
}

/// A reply to `c` as a server writes it: `answers` records for the question, an SOA in the
/// authority section if `soa`, and an OPT.
pub fn server_reply(c: &Client, code: ResponseCode, answers: usize, soa: bool) -> Vec<u8> {
    let qm = Message::from_vec(&c.bytes).unwrap();
    let mut m = Message::response(qm.metadata.id, OpCode::Query);
    m.metadata.response_code = code;
    m.metadata.recursion_desired = true;
    m.metadata.recursion_available = true;
    m.add_queries(qm.queries.clone());
    let name = qm.queries[0].name().clone();
    for i in 0..answers {
        let rdata = match qm.queries[0].query_type() {
            RecordType::AAAA => RData::AAAA(AAAA::from(Ipv6Addr::new(
                0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16,
            ))),
            RecordType::MX => {
                RData::MX(MX::new(10, Name::from_ascii("mail.example.com.").unwrap()))
            }
            RecordType::TXT => RData::TXT(TXT::new(vec![format!("record {i}")])),
            RecordType::NS => RData::NS(NS(Name::from_ascii("a.root-servers.net.").unwrap())),
            _ => RData::A(A::from(Ipv4Addr::new(192, 0, 2, i as u8))),
        };
        m.add_answer(Record::from_rdata(name.clone(), 300, rdata));
    }
    if soa {
        let zone = Name::root();
        let rdata = SOA::new(zone.clone(), zone.clone(), 1, 1800, 900, 604800, 86400);
        m.add_authority(Record::from_rdata(zone, 900, RData::SOA(rdata)));
    }
    let mut e = Edns::new();
    e.set_max_payload(1232);
    m.set_edns(e);
    m.to_vec().unwrap()
}

/// Runs a future that never waits (exchanges that are ready at once) to completion, without a
/// runtime: nothing is spawned in the background, so a run depends on its input alone.
pub fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1000 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("a future over ready exchanges did not finish");
}

/// What a scripted server is, as its answer to the root probe (`. NS`) tells.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    FullResolver,
    Refuses,
    NotAFullResolver,
    Silent,
}

impl Kind {
    pub fn from_bits(b: u8) -> Kind {
        [
            Kind::FullResolver,
            Kind::Refuses,
            Kind::NotAFullResolver,
            Kind::Silent,
        ][b as usize & 3]
    }
}

/// Upstream servers for the forwarder: each answers the root probe as its `Kind` says; the
/// first answers every other question with the fuzzed bytes (its ID set to the query's, its
/// question spelled as the query's when it is the same name, TC cleared over TCP), the second
/// with a well-formed answer of its own. Replies pass the query's `Expect` as on the network.
pub struct Scripted {
    pub fuzzed: Vec<u8>,
    pub kinds: [Kind; 2],
}

pub const FIRST: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 53);
pub const SECOND: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 53);

impl Scripted {
    /// The reply to `query`, the upstream query as sent, for the client's question `q`.
    fn reply(
        &self,
        server: SocketAddr,
        query: &[u8],
        q: &Query,
        protocol: Protocol,
    ) -> Option<Vec<u8>> {
        let c = Client {
            bytes: query.to_vec(),
            q: *q,
        };
        let kind = self.kinds[usize::from(server == SECOND)];
        if q.name.label_count() == 0 && q.qtype == wire::TYPE_NS {
            return match kind {
                Kind::FullResolver => Some(server_reply(&c, ResponseCode::NoError, 1, false)),
                Kind::Refuses => Some(server_reply(&c, ResponseCode::Refused, 0, false)),
                Kind::NotAFullResolver => Some(server_reply(&c, ResponseCode::NXDomain, 0, true)),
                Kind::Silent => None,
            };
        }
        if let Kind::Silent = kind {
            return None;
        }
        if server == SECOND {
            return Some(server_reply(&c, ResponseCode::NoError, 1, false));
        }
        let mut r = self.fuzzed.clone();
        if r.len() >= 4 {
            wire::set_id(&mut r, wire::id(query));
            if protocol == Protocol::Tcp {
                r[2] &= !0x02;
            }
        }
        // The name went out in random case (0x20): a reply for the same name spells it so.
        let question = wire::HEADER_LEN..q.question_end;
        if r.get(question.clone())
            .is_some_and(|theirs| theirs.eq_ignore_ascii_case(&query[question.clone()]))
        {
            r[question.clone()].copy_from_slice(&query[question]);
        }
        Some(r)
    }
}

impl Exchanger for Scripted {
    fn exchange(
        &self,
        server: SocketAddr,
        query: Vec<u8>,
        expect: &Expect,
        protocol: Protocol,
        timeout: Duration,
    ) -> impl Future<Output = Result<Exchange, ExchangeError>> + Send {
        let result = match self.reply(server, &query, &expect.q, protocol) {
            None => Err(ExchangeError::Timeout(timeout, Dropped::default())),
            Some(reply) => match expect.check(&reply) {
                Ok(info) => Ok(Exchange {
                    server,
                    reply,
                    info,
                    rtt: Duration::from_millis(1),
                    received: std::time::Instant::now(),
                    dropped: Dropped::default(),
                }),
                // Dropped on the network, and the wait runs out.
                Err(why) if protocol == Protocol::Udp => {
                    let mut dropped = Dropped::default();
                    dropped.note(&why);
                    Err(ExchangeError::Timeout(timeout, dropped))
                }
                Err(why) => Err(ExchangeError::from(why)),
            },
        };
        std::future::ready(result)
    }
}

/// hickory-proto's reading of a message, if it reads one.
pub fn hickory(bytes: &[u8]) -> Option<Message> {
    Message::from_vec(bytes).ok()
}

/// Records hickory-proto counts in a message, OPT and TSIG left out.
pub fn hickory_records(m: &Message) -> usize {
    // A TSIG in the additional section is hop-by-hop, like the OPT (`wire::strip_hop_by_hop`):
    // not counted, wherever hickory put it (its signature, or an additional record).
    let additionals = m
        .additionals
        .iter()
        .filter(|r| r.record_type() != hickory_proto::rr::RecordType::TSIG)
        .count();
    m.answers.len() + m.authorities.len() + additionals
}

/// What every reply virtdns sends to a client whose query it read must be: a response with
/// the client's ID and question as the client spelled it, within `limit`, readable by
/// virtdns's own reader with nothing after its last record, and with our OPT last exactly
/// when the client sent one.
pub fn check_reply(client: &[u8], q: &Query, out: &[u8], limit: usize) {
    // The bytes, for a reproducer (a panic aborts the fuzzer at once: no unwinding to catch).
    let ctx = || {
        format!(
            "\nclient query: {}\nour reply:    {}",
            hex(client),
            hex(out)
        )
    };
    assert!(
        out.len() >= wire::HEADER_LEN,
        "reply shorter than a header{}",
        ctx()
    );
    assert!(wire::is_response(out), "QR clear{}", ctx());
    assert_eq!(wire::id(out), q.id, "ID{}", ctx());
    assert_eq!(wire::qdcount(out), 1, "QDCOUNT{}", ctx());
    assert_eq!(
        out.get(wire::HEADER_LEN..q.question_end),
        Some(&client[wire::HEADER_LEN..q.question_end]),
        "question as the client wrote it{}",
        ctx()
    );
    assert!(out.len() <= limit, "over the limit of {limit}{}", ctx());
    let info = wire::read_reply(out, q, q.id)
        .unwrap_or_else(|e| panic!("our reader cannot read our reply: {e}{}", ctx()));
    assert_eq!(
        wire::records_end(out, q.question_end),
        Ok(out.len()),
        "bytes after the last record{}",
        ctx()
    );
    match (q.edns, info.opt) {
        (Some(_), Some(opt)) => {
            assert_eq!(opt.end, out.len(), "OPT last{}", ctx());
            assert_eq!(opt.edns.payload, wire::EDNS_PAYLOAD, "{}", ctx());
        }
        (None, None) => {}
        (asked, sent) => panic!("client OPT {asked:?}, reply OPT {sent:?}{}", ctx()),
    }
}

/// Bytes as hex, for reproducers.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `check_reply`, and, if `must_read`, hickory-proto reads the reply, with the records
/// `counts` says (answers, and all records but OPT) when given.
pub fn check_reply_hickory(
    client: &[u8],
    q: &Query,
    out: &[u8],
    limit: usize,
    must_read: bool,
    counts: Option<(usize, usize)>,
) {
    check_reply(client, q, out, limit);
    if !must_read {
        return;
    }
    let m = Message::from_vec(out).unwrap_or_else(|e| {
        panic!(
            "hickory cannot read our reply: {e}\nclient query: {}\nour reply:    {}",
            hex(client),
            hex(out)
        )
    });
    assert_eq!(m.edns.is_some(), q.edns.is_some(), "hickory: EDNS");
    let Some((answers, records)) = counts else {
        return;
    };
    if m.metadata.truncation && wire::ancount(out) == 0 {
        return;
    }
    assert_eq!(m.answers.len(), answers, "hickory: answers");
    assert_eq!(hickory_records(&m), records, "hickory: records");
}

/// The low four bits of hickory's response code (the header's RCODE).
pub fn low_rcode(code: ResponseCode) -> u8 {
    code.low()
}

/// Class as a number.
pub fn class_number(c: DNSClass) -> u16 {
    c.into()
}

/// Whether a compression pointer in `reply` may lead a name through bytes virtdns rewrites
/// in place when it reissues a reply: the header (ID, flags, ARCOUNT) or a TTL. Any byte pair
/// that looks like a pointer counts (an over-approximation). Seen from fuzzing: such a name
/// changes when the bytes do, so hickory-proto may read the upstream reply and not ours. It
/// is the upstream's own doing (RFC 1035 4.1.4: a pointer is to a prior occurrence of a
/// name), and such replies are left out of the hickory-proto comparison.
pub fn pointer_into_rewritten(reply: &[u8], ttl_offsets: &[u16]) -> bool {
    let rewritten = |i: usize| {
        i < wire::HEADER_LEN
            || ttl_offsets
                .iter()
                .any(|&o| (o as usize..o as usize + 4).contains(&i))
    };
    (0..reply.len().saturating_sub(1)).any(|i| {
        if reply[i] & 0xc0 != 0xc0 {
            return false;
        }
        let mut at = (usize::from(reply[i] & 0x3f) << 8) | usize::from(reply[i + 1]);
        for _ in 0..128 {
            let Some(&len) = reply.get(at) else {
                return false;
            };
            if rewritten(at) {
                return true;
            }
            match len {
                0 => return false,
                1..=63 => {
                    let label = at + 1..=at + usize::from(len);
                    if label.clone().any(rewritten) {
                        return true;
                    }
                    at = *label.end() + 1;
                }
                0xc0..=0xff => {
                    let Some(&low) = reply.get(at + 1) else {
                        return false;
                    };
                    if rewritten(at + 1) {
                        return true;
                    }
                    at = (usize::from(len & 0x3f) << 8) | usize::from(low);
                }
                _ => return false,
            }
        }
        false
    })
}
