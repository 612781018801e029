//! A scripted `Exchanger` for unit tests: each server's reply to each name is data (a reply
//! with chosen flags and records, a timeout, an I/O error), every exchange is logged, and
//! nothing touches a socket. Time passes only through tokio's clock (paused in tests).

use crate::dns::transport::{Exchange, ExchangeError, Exchanger, Protocol};
use crate::dns::wire::{self, Query, Rcode};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

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
    pub(crate) delay: Duration,
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
        delay: Duration::ZERO,
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
        delay: Duration::ZERO,
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
        delay: Duration::ZERO,
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
    delay: Duration::ZERO,
});
pub(crate) const REFUSES: Step = Step::Reply(Reply {
    code: Rcode::REFUSED,
    answer: 0,
    aa: false,
    ra: false,
    soa_at_root: None,
    truncated_udp: false,
    tcp_silent: false,
    delay: Duration::ZERO,
});
pub(crate) const OWN_ROOT: Step = Step::Reply(Reply {
    code: Rcode::NOERROR,
    answer: 1,
    aa: true,
    ra: false,
    soa_at_root: None,
    truncated_udp: false,
    tcp_silent: false,
    delay: Duration::ZERO,
});

#[derive(Default)]
pub(crate) struct Script {
    /// (server, name) -> step; name "" is the root probe, "*" any other name.
    pub(crate) steps: Mutex<HashMap<(SocketAddr, String), Step>>,
    /// Every exchange: (server, name, protocol).
    pub(crate) log: Mutex<Vec<(SocketAddr, String, Protocol)>>,
}

impl Script {
    pub(crate) fn set(&self, server: SocketAddr, name: &str, step: Step) {
        self.steps
            .lock()
            .unwrap()
            .insert((server, name.to_string()), step);
    }

    /// How often `server` was asked about `name`.
    pub(crate) fn asked(&self, server: SocketAddr, name: &str) -> usize {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|(s, n, _)| *s == server && n == name)
            .count()
    }
}

impl Exchanger for Script {
    async fn exchange(
        &self,
        server: SocketAddr,
        client: &[u8],
        q: &Query,
        protocol: Protocol,
        _with_edns: bool,
        timeout: Duration,
    ) -> Result<Exchange, ExchangeError> {
        let name = q.name.to_dotted();
        self.log
            .lock()
            .unwrap()
            .push((server, name.clone(), protocol));
        let step = {
            let steps = self.steps.lock().unwrap();
            steps
                .get(&(server, name.clone()))
                .or_else(|| steps.get(&(server, "*".to_string())))
                .copied()
                .unwrap_or(Step::Timeout)
        };
        match step {
            Step::Timeout => Err(ExchangeError::Timeout(timeout)),
            Step::Io => Err(ExchangeError::Io(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            ))),
            Step::Reply(r) if r.tcp_silent && protocol == Protocol::Tcp => {
                Err(ExchangeError::Timeout(timeout))
            }
            Step::Reply(r) => {
                tokio::time::sleep(r.delay).await;
                let reply = build_reply(client, q, &r, protocol);
                let info = wire::read_reply(&reply, q, wire::id(client))?;
                Ok(Exchange {
                    server,
                    reply,
                    info,
                    rtt: Duration::from_millis(1),
                })
            }
        }
    }
}

pub(crate) fn build_reply(client: &[u8], q: &Query, r: &Reply, protocol: Protocol) -> Vec<u8> {
    let mut p = client[..q.question_end].to_vec();
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
