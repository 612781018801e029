//! A scripted `Exchanger` for unit tests: each server's reply to each name is data (a reply
//! with chosen flags and records, a timeout, an I/O error), and so is how it speaks (cookies,
//! case) and what a forger who knows the port and ID sends ahead of it. Every datagram goes
//! through the query's `Expect`, as `port_pool` puts it: the first it accepts is the reply,
//! the others are dropped and counted. Every exchange is logged, and nothing touches a socket.
//! Time passes only through tokio's clock (paused in tests).

use crate::dns::guard::{Dropped, Expect};
use crate::dns::transport::{
    Completion, Ended, Exchange, ExchangeError, Exchanger, Protocol, Received,
};
use crate::dns::wire::{self, HEADER_LEN, Query, Rcode};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a scripted server does with one question.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step {
    Reply(Reply),
    Timeout,
    /// An ICMP error or a refused connection.
    Io,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Reply {
    pub(crate) code: Rcode,
    /// One A record 192.0.2.`answer`, or none when 0.
    pub(crate) answer: u8,
    pub(crate) aa: bool,
    pub(crate) ra: bool,
    /// An authority SOA: `Some(true)` owned by the root, `Some(false)` by the question name.
    pub(crate) soa_at_root: Option<bool>,
    /// Truncated over UDP; the whole answer over TCP.
    pub(crate) truncated_udp: bool,
    /// Silent over TCP.
    pub(crate) tcp_silent: bool,
    /// Silent over UDP (what a forger sends still arrives).
    pub(crate) udp_silent: bool,
    pub(crate) delay: Duration,
    /// How long before the walk takes the reply it was read (a reply the walk held while it
    /// waited for later servers).
    pub(crate) read_ago: Duration,
}

/// A recursive resolver's answer 192.0.2.`n`.
pub(crate) fn answer(n: u8) -> Step {
    Step::Reply(Reply {
        code: Rcode::NOERROR,
        answer: n,
        aa: false,
        ra: true,
        soa_at_root: None,
        truncated_udp: false,
        tcp_silent: false,
        udp_silent: false,
        delay: Duration::ZERO,
        read_ago: Duration::ZERO,
    })
}

/// A bare reply with this code, the given AA/RA and no records.
pub(crate) fn bare(code: Rcode, aa: bool, ra: bool) -> Step {
    Step::Reply(Reply {
        code,
        answer: 0,
        aa,
        ra,
        soa_at_root: None,
        truncated_udp: false,
        tcp_silent: false,
        udp_silent: false,
        delay: Duration::ZERO,
        read_ago: Duration::ZERO,
    })
}

/// NXDOMAIN with an SOA: at the root (a fake root of its own) or at the name's zone.
pub(crate) fn nxdomain(soa_at_root: bool) -> Step {
    Step::Reply(Reply {
        code: Rcode::NXDOMAIN,
        answer: 0,
        aa: true,
        ra: false,
        soa_at_root: Some(soa_at_root),
        truncated_udp: false,
        tcp_silent: false,
        udp_silent: false,
        delay: Duration::ZERO,
        read_ago: Duration::ZERO,
    })
}

pub(crate) fn with(step: Step, f: impl FnOnce(&mut Reply)) -> Step {
    let Step::Reply(mut r) = step else {
        return step;
    };
    f(&mut r);
    Step::Reply(r)
}

/// Probe replies for the root's NS set that make a server each kind.
pub(crate) const FULL: Step = Step::Reply(Reply {
    code: Rcode::NOERROR,
    answer: 1,
    aa: false,
    ra: true,
    soa_at_root: None,
    truncated_udp: false,
    tcp_silent: false,
    udp_silent: false,
    delay: Duration::ZERO,
    read_ago: Duration::ZERO,
});
pub(crate) const REFUSES: Step = Step::Reply(Reply {
    code: Rcode::REFUSED,
    answer: 0,
    aa: false,
    ra: false,
    soa_at_root: None,
    truncated_udp: false,
    tcp_silent: false,
    udp_silent: false,
    delay: Duration::ZERO,
    read_ago: Duration::ZERO,
});
pub(crate) const OWN_ROOT: Step = Step::Reply(Reply {
    code: Rcode::NOERROR,
    answer: 1,
    aa: true,
    ra: false,
    soa_at_root: None,
    truncated_udp: false,
    tcp_silent: false,
    udp_silent: false,
    delay: Duration::ZERO,
    read_ago: Duration::ZERO,
});

/// How a scripted server speaks beyond its replies. The default: no cookies, case kept.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Manner {
    /// Returns cookies (RFC 7873): ours echoed, with this server cookie.
    pub(crate) cookie: Option<[u8; 16]>,
    /// Answers BADCOOKIE to a UDP query without its current server cookie (BIND's
    /// `require-server-cookie`).
    pub(crate) badcookie: bool,
    /// Spells the question name in small letters, whatever was asked.
    pub(crate) lowercases: bool,
}

/// A forged reply sent ahead of the server's over UDP, by a forger who knows the port and the
/// ID: the answer 192.0.2.66.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forgery {
    /// The name in small letters (the forger cannot know the random case), no cookie.
    Lowercase,
    /// The name exactly as sent (as if the forger guessed the case), no cookie.
    RightCase,
    /// The name exactly as sent, with a COOKIE whose client cookie is a guess.
    GuessedCookie,
}

/// The last octet of a forged answer.
pub(crate) const FORGED: u8 = 66;

#[derive(Default)]
pub(crate) struct Script {
    /// (server, name) -> step; name "" is the root probe, "*" any other name.
    pub(crate) steps: Mutex<HashMap<(SocketAddr, String), Step>>,
    /// Every exchange: (server, name, protocol).
    pub(crate) log: Mutex<Vec<(SocketAddr, String, Protocol)>>,
    /// Every query as sent: (server, protocol, bytes).
    pub(crate) sent: Mutex<Vec<(SocketAddr, Protocol, Vec<u8>)>>,
    pub(crate) manners: Mutex<HashMap<SocketAddr, Manner>>,
    /// What a forger sends ahead of every UDP reply of a server.
    pub(crate) forgeries: Mutex<HashMap<SocketAddr, Vec<Forgery>>>,
    /// Exchanges begun with `start` (no task awaiting them).
    pub(crate) started: std::sync::atomic::AtomicUsize,
}

impl Script {
    pub(crate) fn set(&self, server: SocketAddr, name: &str, step: Step) {
        self.steps
            .lock()
            .unwrap()
            .insert((server, name.to_string()), step);
    }

    pub(crate) fn set_manner(&self, server: SocketAddr, manner: Manner) {
        self.manners.lock().unwrap().insert(server, manner);
    }

    pub(crate) fn forge(&self, server: SocketAddr, forgeries: &[Forgery]) {
        self.forgeries
            .lock()
            .unwrap()
            .insert(server, forgeries.to_vec());
    }

    /// How often `server` was asked about `name`.
    pub(crate) fn asked(&self, server: SocketAddr, name: &str) -> usize {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|(s, n, _)| *s == server && n == name)
            .count()
    }

    /// The queries sent to `server`, in order.
    pub(crate) fn sent_to(&self, server: SocketAddr) -> Vec<(Protocol, Vec<u8>)> {
        let sent = self.sent.lock().unwrap();
        sent.iter()
            .filter(|(s, _, _)| *s == server)
            .map(|(_, p, bytes)| (*p, bytes.clone()))
            .collect()
    }
}

impl Exchanger for Script {
    /// Runs the scripted exchange in a task of its own, and tells `done` how it ended.
    fn start(
        self: &std::sync::Arc<Self>,
        server: SocketAddr,
        query: Vec<u8>,
        deadline: Instant,
        done: Box<dyn Completion>,
    ) {
        let timeout = deadline.saturating_duration_since(Instant::now());
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (script, expect) = (self.clone(), *done.expect());
        tokio::spawn(async move {
            let result = script
                .exchange(server, query, &expect, Protocol::Udp, timeout)
                .await;
            done.complete(match result {
                Ok(ex) => Ended::Replied(Ok(Received {
                    sent: ex.received - ex.rtt,
                    at: ex.received,
                    reply: ex.reply,
                    info: ex.info,
                    dropped: ex.dropped,
                })),
                Err(ExchangeError::Timeout(_, dropped)) => Ended::TimedOut(dropped),
                Err(ExchangeError::Io(e)) => Ended::Replied(Err(e)),
                Err(e) => Ended::Replied(Err(std::io::Error::other(e.to_string()))),
            });
        });
    }

    async fn exchange(
        &self,
        server: SocketAddr,
        query: Vec<u8>,
        expect: &Expect,
        protocol: Protocol,
        timeout: Duration,
    ) -> Result<Exchange, ExchangeError> {
        let query = &query[..];
        let q = &expect.q;
        let name = q.name.to_dotted();
        self.log
            .lock()
            .unwrap()
            .push((server, name.clone(), protocol));
        self.sent
            .lock()
            .unwrap()
            .push((server, protocol, query.to_vec()));
        let step = {
            let steps = self.steps.lock().unwrap();
            steps
                .get(&(server, name.clone()))
                .or_else(|| steps.get(&(server, "*".to_string())))
                .copied()
                .unwrap_or(Step::Timeout)
        };
        let manner = self
            .manners
            .lock()
            .unwrap()
            .get(&server)
            .copied()
            .unwrap_or_default();
        let forgeries = match protocol {
            Protocol::Udp => self.forgeries.lock().unwrap().get(&server).cloned(),
            Protocol::Tcp => None,
        };
        // What reaches the query's port, in order: the forgeries, then the server's reply.
        let mut datagrams: Vec<Vec<u8>> = forgeries
            .unwrap_or_default()
            .into_iter()
            .map(|f| forge(query, q, f))
            .collect();
        match step {
            Step::Timeout => {}
            Step::Io => {
                return Err(ExchangeError::Io(std::io::Error::from(
                    std::io::ErrorKind::ConnectionRefused,
                )));
            }
            Step::Reply(r) if r.tcp_silent && protocol == Protocol::Tcp => {}
            Step::Reply(r) if r.udp_silent && protocol == Protocol::Udp => {}
            Step::Reply(r) => {
                tokio::time::sleep(r.delay).await;
                datagrams.push(serve(query, q, &r, protocol, &manner));
            }
        }
        let read_ago = match &step {
            Step::Reply(r) => r.read_ago,
            _ => Duration::ZERO,
        };
        let mut dropped = Dropped::default();
        for datagram in datagrams {
            match expect.check(&datagram) {
                Ok(info) => {
                    return Ok(Exchange {
                        server,
                        reply: datagram,
                        info,
                        rtt: Duration::from_millis(1),
                        received: Instant::now()
                            .checked_sub(read_ago)
                            .expect("not before boot"),
                        dropped,
                    });
                }
                Err(why) if protocol == Protocol::Tcp => return Err(why.into()),
                Err(why) => dropped.note(&why),
            }
        }
        Err(ExchangeError::Timeout(timeout, dropped))
    }
}

/// The server's reply to `query` as `manner` says it speaks: BADCOOKIE if it wants its
/// current cookie and did not get it, else the scripted reply, with our cookie echoed and its
/// own if it returns cookies, and the name lower-cased if it does that.
fn serve(query: &[u8], q: &Query, r: &Reply, protocol: Protocol, manner: &Manner) -> Vec<u8> {
    let cookie = query_cookie(query);
    let mut p = match (manner.cookie, cookie) {
        (Some(own), Some(sent))
            if manner.badcookie && protocol == Protocol::Udp && sent.get(8..) != Some(&own[..]) =>
        {
            let mut p = build_reply(query, q, &bare_reply(Rcode::from_header(7)), protocol);
            push_cookie(&mut p, &sent[..8], &own, 1);
            p
        }
        (Some(own), Some(sent)) => {
            let mut p = build_reply(query, q, r, protocol);
            push_cookie(&mut p, &sent[..8], &own, 0);
            p
        }
        _ => build_reply(query, q, r, protocol),
    };
    if manner.lowercases {
        p[HEADER_LEN..q.question_end].make_ascii_lowercase();
    }
    p
}

fn bare_reply(code: Rcode) -> Reply {
    match bare(code, false, true) {
        Step::Reply(r) => r,
        _ => unreachable!("bare is a reply"),
    }
}

/// The COOKIE option data of an upstream query as we build it (our OPT is its only additional
/// record).
fn query_cookie(query: &[u8]) -> Option<&[u8]> {
    let q = wire::parse_query(query).ok()?;
    let opt = wire::OptSpan {
        start: q.question_end,
        end: query.len(),
        edns: q.edns?,
    };
    wire::opt_option(query, &opt, wire::OPTION_COOKIE)
}

/// Appends an OPT with a COOKIE (client, server) and the given upper RCODE bits.
fn push_cookie(p: &mut Vec<u8>, client: &[u8], server: &[u8], rcode_high: u8) {
    let mut data = client.to_vec();
    data.extend_from_slice(server);
    wire::push_opt_with(p, false, rcode_high, Some((wire::OPTION_COOKIE, &data)));
}

/// A forged answer 192.0.2.`FORGED` to `query`, with its ID.
fn forge(query: &[u8], q: &Query, how: Forgery) -> Vec<u8> {
    let mut p = build_reply(query, q, &answer_reply(FORGED), Protocol::Udp);
    match how {
        Forgery::Lowercase => p[HEADER_LEN..q.question_end].make_ascii_lowercase(),
        Forgery::RightCase => {}
        Forgery::GuessedCookie => push_cookie(&mut p, &[0x5a; 8], &[0xa5; 16], 0),
    }
    p
}

fn answer_reply(n: u8) -> Reply {
    match answer(n) {
        Step::Reply(r) => r,
        _ => unreachable!("answer is a reply"),
    }
}

/// The scripted reply to `query` (as sent: its ID and spelling), without an OPT.
pub(crate) fn build_reply(query: &[u8], q: &Query, r: &Reply, protocol: Protocol) -> Vec<u8> {
    let mut p = query[..q.question_end].to_vec();
    let truncated = r.truncated_udp && protocol == Protocol::Udp;
    p[2] = 0x80 | (p[2] & 0x01) | if r.aa { 0x04 } else { 0 } | if truncated { 0x02 } else { 0 };
    p[3] = r.code.bits() | if r.ra { 0x80 } else { 0 };
    p[6..12].fill(0);
    if r.answer > 0 && !truncated {
        p[7] = 1;
        p.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, r.answer]);
    }
    if let Some(root) = r.soa_at_root {
        p[9] = 1;
        if root {
            p.push(0);
        } else {
            p.extend_from_slice(&[0xc0, 12]);
        }
        p.extend_from_slice(&[0, 6, 0, 1, 0, 0, 0, 60, 0, 22, 0, 0]);
        for v in [1u32, 3600, 600, 86400, 60] {
            p.extend_from_slice(&v.to_be_bytes());
        }
    }
    p
}
