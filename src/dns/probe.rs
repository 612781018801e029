//! Probes that teach the upstream pool what it knows (`dns::upstream`): whether a down server
//! answers again, and what kind of server each one is.
//!
//! Both ask the same question, the root's NS set (`. NS`): every full resolver answers it,
//! with recursion available; a server that does not recurse refuses it or refers; a server
//! with a fake root of its own (some VPN and captive setups) answers it from that root, or
//! with NXDOMAIN/NODATA. The reply is the evidence `explain` and `check` show.

use crate::dns::forward::{Verdict, verdict};
use crate::dns::guard;
use crate::dns::transport::{Exchange, Exchanger, Protocol};
use crate::dns::upstream::{Capability, Evidence, PROBE_INTERVAL, Upstream, UpstreamPool};
use crate::dns::wire::{self, Query, Rcode};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// A query for `name` (dotted) and `qtype`, as a client would send it, with RD set.
pub(crate) fn probe_query(name: &str, qtype: u16) -> Option<(Vec<u8>, Query)> {
    let bytes = wire::build_query(&wire::name_from_dotted(name)?, qtype, rand::random());
    let q = wire::parse_query(&bytes).ok()?;
    Some((bytes, q))
}

/// What a server's reply to `. NS` says about it.
pub(crate) fn classify_root_reply(reply: &[u8], info: &wire::ReplyInfo) -> Capability {
    let code = wire::rcode(reply);
    if code == Rcode::REFUSED || (code == Rcode::NOERROR && verdict(reply, info) != Verdict::Final)
    {
        return Capability::RefusesOutside;
    }
    match code {
        Rcode::NXDOMAIN => Capability::NotFullResolver,
        Rcode::NOERROR if info.answers == 0 => Capability::NotFullResolver,
        Rcode::NOERROR if wire::ra(reply) => Capability::FullResolver,
        // Its own root, served without recursion.
        Rcode::NOERROR if wire::aa(reply) => Capability::NotFullResolver,
        // SERVFAIL, NOTIMP, or answers without RA or AA: nothing certain; glibc's rules alone.
        _ => Capability::Unknown,
    }
}

/// The evidence line for a probe reply.
pub(crate) fn describe_reply(ex: &Exchange) -> String {
    format!(
        ". NS -> {} {}, {} answer(s), {:.1} ms",
        wire::rcode(&ex.reply),
        wire::Flags(&ex.reply),
        ex.info.answers,
        ex.rtt.as_secs_f64() * 1e3
    )
}

/// Asks `server` for the root's NS set once and records what the reply shows. A server that
/// does not answer keeps what was known before.
pub(crate) async fn learn<X: Exchanger>(
    exchanger: &X,
    pool: &UpstreamPool,
    server: &Upstream,
    timeout: Duration,
) {
    let result = ask_root(exchanger, server, Protocol::Udp, timeout).await;
    if let Some(ex) = &result {
        pool.record_reply(server, ex.rtt);
        record(pool, server, ex);
    }
    server.learning_done();
}

fn record(pool: &UpstreamPool, server: &Upstream, ex: &Exchange) {
    let evidence = Evidence {
        reply: describe_reply(ex),
        at: Instant::now(),
    };
    pool.learn(server, classify_root_reply(&ex.reply, &ex.info), evidence);
}

async fn ask_root<X: Exchanger>(
    exchanger: &X,
    server: &Upstream,
    protocol: Protocol,
    timeout: Duration,
) -> Option<Exchange> {
    let (bytes, q) = probe_query("", wire::TYPE_NS)?;
    guard::ask(exchanger, server, &bytes, &q, protocol, true, timeout)
        .await
        .ok()
}

/// Asks `server` `. NS` over `protocol` every `PROBE_INTERVAL` until `done` says the probe
/// is no longer needed or a reply comes back, which `answered` records. Ends as well when the
/// server is no longer referenced.
async fn probe_until<X: Exchanger>(
    exchanger: &X,
    server: &Weak<Upstream>,
    protocol: Protocol,
    max_wait: Duration,
    done: impl Fn(&Upstream) -> bool,
    answered: impl Fn(&Upstream, &Exchange),
) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    loop {
        tick.tick().await;
        let Some(up) = server.upgrade() else { return };
        if done(&up) {
            return;
        }
        if let Some(ex) = ask_root(exchanger, &up, protocol, max_wait).await {
            answered(&up, &ex);
            return;
        }
    }
}

/// Probes a down server over UDP until any reply comes back (even REFUSED proves it is
/// alive); the reply also refreshes what is known about it.
pub(crate) async fn probe_until_up<X: Exchanger>(
    exchanger: Arc<X>,
    pool: UpstreamPool,
    server: Weak<Upstream>,
    max_wait: Duration,
) {
    let answered = |up: &Upstream, ex: &Exchange| {
        pool.record_reply(up, ex.rtt);
        record(&pool, up, ex);
    };
    let done = |up: &Upstream| !up.is_down();
    probe_until(
        &*exchanger,
        &server,
        Protocol::Udp,
        max_wait,
        done,
        answered,
    )
    .await;
    if let Some(up) = server.upgrade() {
        up.stop_probing();
    }
}

/// Probes a server whose TCP failed over TCP until it answers; until then truncated answers
/// from it are not retried over TCP with it.
pub(crate) async fn probe_tcp_until_up<X: Exchanger>(
    exchanger: Arc<X>,
    server: Weak<Upstream>,
    max_wait: Duration,
) {
    let answered = |up: &Upstream, _: &Exchange| {
        up.set_tcp_up();
        tracing::info!(server = %up.addr, "upstream answers over TCP again");
    };
    let done = |up: &Upstream| !up.is_tcp_down();
    probe_until(
        &*exchanger,
        &server,
        Protocol::Tcp,
        max_wait,
        done,
        answered,
    )
    .await;
    if let Some(up) = server.upgrade() {
        up.stop_tcp_probing();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_reply(code: Rcode, answers: u16, aa: bool, ra: bool, additional: u16) -> Capability {
        let (bytes, q) = probe_query("", wire::TYPE_NS).unwrap();
        let mut r = bytes[..q.question_end].to_vec();
        r[2] = 0x81 | if aa { 0x04 } else { 0 };
        r[3] = code.bits() | if ra { 0x80 } else { 0 };
        r[6..8].copy_from_slice(&answers.to_be_bytes());
        r[10..12].copy_from_slice(&additional.to_be_bytes());
        let info = wire::ReplyInfo {
            rcode: code,
            answers,
            ttl_offsets: wire::TtlOffsets::new(),
            cache_ttl: None,
            soa_labels: None,
            opt: None,
            signature: None,
        };
        classify_root_reply(&r, &info)
    }

    #[test]
    fn the_root_probe_tells_what_a_server_is() {
        use Capability::*;
        struct Case {
            what: &'static str,
            reply: (Rcode, u16, bool, bool, u16),
            expect: Capability,
        }
        let cases = [
            Case {
                what: "recursive resolver",
                reply: (Rcode::NOERROR, 13, false, true, 0),
                expect: FullResolver,
            },
            Case {
                what: "BIND with recursion no",
                reply: (Rcode::REFUSED, 0, false, false, 0),
                expect: RefusesOutside,
            },
            Case {
                what: "referral without glue",
                reply: (Rcode::NOERROR, 0, false, false, 0),
                expect: RefusesOutside,
            },
            Case {
                what: "its own empty root, authoritative, no recursion",
                reply: (Rcode::NOERROR, 1, true, false, 0),
                expect: NotFullResolver,
            },
            Case {
                what: "NXDOMAIN for the root",
                reply: (Rcode::NXDOMAIN, 0, false, true, 0),
                expect: NotFullResolver,
            },
            Case {
                what: "NODATA for the root",
                reply: (Rcode::NOERROR, 0, true, true, 0),
                expect: NotFullResolver,
            },
            Case {
                what: "resolver whose own upstreams fail",
                reply: (Rcode::SERVFAIL, 0, false, true, 0),
                expect: Unknown,
            },
            Case {
                what: "answers without RA or AA (a forwarder that hides RA)",
                reply: (Rcode::NOERROR, 13, false, false, 0),
                expect: Unknown,
            },
        ];
        for c in cases {
            let (code, an, aa, ra, ar) = c.reply;
            assert_eq!(root_reply(code, an, aa, ra, ar), c.expect, "{}", c.what);
        }
    }
}
