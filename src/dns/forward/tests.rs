//! The walk, driven through the `Exchanger` seam with scripted servers: replies, timeouts and
//! errors are data, time is tokio's paused clock, and no socket is opened.

use super::*;
use crate::dns::transport::Protocol;
use crate::dns::transport::script::*;
use crate::dns::upstream::Capability;
use crate::dns::wire::{self, ReplyInfo};
use std::net::SocketAddr;
use std::time::Instant;

// ---- helpers ---------------------------------------------------------------------------------

struct Lab {
    fwd: Arc<Forwarder<Script>>,
    servers: Vec<Arc<Upstream>>,
}

impl Lab {
    /// A forwarder over servers 10.0.0.1..=n, each with its root-probe reply, learned.
    async fn new(kinds: &[Step]) -> Lab {
        Lab::with_inflight(kinds, 100).await
    }

    async fn with_inflight(kinds: &[Step], max_inflight: usize) -> Lab {
        let pool = UpstreamPool::new((Duration::from_millis(200), Duration::from_secs(2)));
        let fwd = Arc::new(Forwarder::with_exchanger(
            Script::default(),
            pool.clone(),
            100,
            max_inflight,
        ));
        let servers: Vec<_> = (1..=kinds.len())
            .map(|i| pool.get(SocketAddr::from(([10, 0, 0, i as u8], 53))))
            .collect();
        for (s, kind) in servers.iter().zip(kinds) {
            fwd.exchanger().set(s.addr, "", *kind);
        }
        fwd.learn_now(&servers).await;
        Lab { fwd, servers }
    }

    fn addr(&self, i: usize) -> SocketAddr {
        self.servers[i].addr
    }

    fn script(&self) -> &Script {
        self.fwd.exchanger()
    }

    async fn walk(&self, name: &str) -> (Outcome, String) {
        let (bytes, q) = query(name);
        let mut trace = Trace::on();
        let outcome = self
            .fwd
            .walk(
                &bytes,
                &q,
                &self.servers,
                WalkOptions::default(),
                &mut trace,
            )
            .await;
        (outcome, trace.render())
    }

    async fn resolve(&self, name: &str) -> Outcome {
        let (bytes, q) = query(name);
        self.fwd
            .resolve(
                &bytes,
                &q,
                &self.servers,
                WalkOptions::default(),
                self.fwd.cache().generation(),
            )
            .await
    }

    /// Resolves `name` in a task of its own.
    fn spawn_resolve(&self, name: &'static str) -> tokio::task::JoinHandle<Outcome> {
        let (fwd, servers) = (self.fwd.clone(), self.servers.clone());
        tokio::spawn(async move {
            let (bytes, q) = query(name);
            let sought = fwd.cache().generation();
            fwd.resolve(&bytes, &q, &servers, WalkOptions::default(), sought)
                .await
        })
    }

    /// Starts resolving `name` in a task of its own; returns once the first server is asked.
    async fn resolving(&self, name: &'static str) -> tokio::task::JoinHandle<Outcome> {
        let walk = self.spawn_resolve(name);
        while self.script().asked(self.addr(0), name) == 0 {
            tokio::task::yield_now().await;
        }
        walk
    }

    /// Server `i` answers `name` with 192.0.2.1 after `ms` milliseconds.
    fn answers_after(&self, i: usize, name: &str, ms: u64) {
        let late = with(answer(1), |r| r.delay = Duration::from_millis(ms));
        self.script().set(self.addr(i), name, late);
    }

    fn cached(&self, name: &str) -> bool {
        self.fwd
            .cached(&CacheKey::of(&query(name).1), Instant::now())
            .is_some()
    }
}

fn query(name: &str) -> (Vec<u8>, Query) {
    let bytes = wire::build_query(&wire::name_from_dotted(name).unwrap(), wire::TYPE_A, 7);
    let q = wire::parse_query(&bytes).unwrap();
    (bytes, q)
}

/// The last octet of the answer's A record (0 if it has none), and its RCODE.
fn got(outcome: &Outcome) -> (Rcode, u8) {
    let a = outcome.as_ref().expect("an answer");
    let (bytes, q) = query("x.example");
    let rendered = a.render(&bytes, &q, 65535, std::time::Instant::now());
    let last = if wire::ancount(&rendered) > 0 {
        *rendered.last().unwrap()
    } else {
        0
    };
    (a.rcode(), last)
}

// ---- glibc's verdicts ------------------------------------------------------------------------

fn reply(code: Rcode, answers: u16, aa: bool, ra: bool) -> (Vec<u8>, ReplyInfo) {
    let mut p = vec![0u8; 12];
    p[2] = 0x80 | if aa { 0x04 } else { 0 };
    p[3] = code.bits() | if ra { 0x80 } else { 0 };
    p[6..8].copy_from_slice(&answers.to_be_bytes());
    let info = ReplyInfo {
        rcode: code,
        answers,
        ttl_offsets: wire::TtlOffsets::new(),
        cache_ttl: None,
        soa_labels: None,
        opt: None,
        signature: None,
    };
    (p, info)
}

#[test]
fn verdicts_follow_glibc() {
    use walk::NextReason;
    struct Case {
        reply: (Rcode, u16, bool, bool),
        expect: Verdict,
    }
    let cases = [
        Case {
            reply: (Rcode::REFUSED, 0, false, false),
            expect: Verdict::Next(NextReason::Rcode(Rcode::REFUSED)),
        },
        Case {
            reply: (Rcode::SERVFAIL, 0, false, true),
            expect: Verdict::Next(NextReason::Rcode(Rcode::SERVFAIL)),
        },
        Case {
            reply: (Rcode::NOTIMP, 0, false, true),
            expect: Verdict::Next(NextReason::Rcode(Rcode::NOTIMP)),
        },
        Case {
            reply: (Rcode::NOERROR, 0, false, false),
            expect: Verdict::Next(NextReason::Referral),
        },
        Case {
            reply: (Rcode::NOERROR, 0, true, false),
            expect: Verdict::Final,
        },
        Case {
            reply: (Rcode::NOERROR, 0, false, true),
            expect: Verdict::Final,
        },
        Case {
            reply: (Rcode::NOERROR, 1, false, false),
            expect: Verdict::Final,
        },
        Case {
            reply: (Rcode::NXDOMAIN, 0, false, false),
            expect: Verdict::Final,
        },
    ];
    for c in cases {
        let (code, an, aa, ra) = c.reply;
        let (p, info) = reply(code, an, aa, ra);
        assert_eq!(verdict(&p, &info), c.expect, "{:?}", c.reply);
    }
    // A referral with glue is final for glibc.
    let (mut p, info) = reply(Rcode::NOERROR, 0, false, false);
    p[10..12].copy_from_slice(&1u16.to_be_bytes());
    assert_eq!(verdict(&p, &info), Verdict::Final);
}

// ---- order and skips -------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_full_resolver_first_keeps_its_place_for_every_name() {
    // The VPN's resolver holds the internal view of a public name; the host asks it first.
    let lab = Lab::new(&[FULL, FULL]).await;
    lab.script().set(lab.addr(0), "git.example.com", answer(34));
    lab.script().set(lab.addr(1), "git.example.com", answer(44));
    let (outcome, trace) = lab.walk("git.example.com").await;
    assert_eq!(got(&outcome), (Rcode::NOERROR, 34), "{trace}");
    assert_eq!(lab.script().asked(lab.addr(1), "git.example.com"), 0);
    assert!(trace.contains("not asked: 10.0.0.2:53"), "{trace}");
}

#[tokio::test(start_paused = true)]
async fn a_refusing_server_is_asked_together_with_the_next() {
    let lab = Lab::new(&[REFUSES, FULL]).await;
    assert_eq!(lab.servers[0].capability(), Capability::RefusesOutside);
    lab.script()
        .set(lab.addr(0), "*", bare(Rcode::REFUSED, false, false));
    lab.script().set(lab.addr(1), "*", answer(80));
    let (outcome, trace) = lab.walk("www.example.com").await;
    assert_eq!(got(&outcome), (Rcode::NOERROR, 80), "{trace}");
    assert_eq!(lab.script().asked(lab.addr(0), "www.example.com"), 1);
    assert_eq!(lab.script().asked(lab.addr(1), "www.example.com"), 1);
    assert!(
        trace.contains("refuses names outside its zones (probe . NS -> REFUSED")
            && trace.contains("asking 10.0.0.2:53 at the same time")
            && trace.contains("REFUSED: next server"),
        "{trace}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_refusing_server_that_answers_still_wins() {
    // It refused the root, but holds a zone nobody knew of: its answer is the host's.
    let lab = Lab::new(&[REFUSES, FULL]).await;
    lab.script().set(
        lab.addr(0),
        "git.example.com",
        with(answer(34), |r| {
            r.aa = true;
            r.ra = false
        }),
    );
    lab.script().set(lab.addr(1), "git.example.com", answer(44));
    let (outcome, trace) = lab.walk("git.example.com").await;
    assert_eq!(got(&outcome), (Rcode::NOERROR, 34), "{trace}");
}

#[tokio::test(start_paused = true)]
async fn a_refusing_server_is_asked_alone_inside_its_zones() {
    let lab = Lab::new(&[REFUSES, FULL]).await;
    lab.servers[0].set_zones(vec!["corp.example".into()]);
    lab.script().set(
        lab.addr(0),
        "intranet.corp.example",
        with(answer(10), |r| r.aa = true),
    );
    let (outcome, _) = lab.walk("intranet.corp.example").await;
    assert_eq!(got(&outcome), (Rcode::NOERROR, 10));
    assert_eq!(lab.script().asked(lab.addr(1), "intranet.corp.example"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_fake_root_gives_way_outside_its_zones_only() {
    let lab = Lab::new(&[OWN_ROOT, FULL]).await;
    assert_eq!(lab.servers[0].capability(), Capability::NotFullResolver);
    let (internal, public) = (lab.addr(0), lab.addr(1));
    // Outside: NXDOMAIN from its empty root gives way to the public answer.
    lab.script()
        .set(internal, "www.example.com", nxdomain(true));
    lab.script().set(public, "www.example.com", answer(80));
    let (outcome, trace) = lab.walk("www.example.com").await;
    assert_eq!(got(&outcome), (Rcode::NOERROR, 80), "{trace}");
    assert!(trace.contains("not a full resolver"), "{trace}");
    // Inside a zone it serves (the SOA says so): its NXDOMAIN is final.
    lab.script()
        .set(internal, "nx.corp.example", nxdomain(false));
    lab.script().set(public, "nx.corp.example", answer(99));
    let (outcome, _) = lab.walk("nx.corp.example").await;
    assert_eq!(got(&outcome), (Rcode::NXDOMAIN, 0));
    // NODATA from its root gives way; NODATA without an SOA speaks for no one: final.
    let nodata = |soa| {
        with(nxdomain(true), |r| {
            r.code = Rcode::NOERROR;
            r.soa_at_root = soa
        })
    };
    lab.script()
        .set(internal, "v6.example.com", nodata(Some(true)));
    lab.script().set(public, "v6.example.com", answer(66));
    assert_eq!(
        got(&lab.walk("v6.example.com").await.0),
        (Rcode::NOERROR, 66)
    );
    lab.script().set(internal, "bare.example.com", nodata(None));
    lab.script().set(public, "bare.example.com", answer(67));
    assert_eq!(
        got(&lab.walk("bare.example.com").await.0),
        (Rcode::NOERROR, 0)
    );
    // Nobody else answers: the host's answer (its NXDOMAIN) is passed on.
    lab.script()
        .set(internal, "gone.example.com", nxdomain(true));
    lab.script().set(
        public,
        "gone.example.com",
        bare(Rcode::REFUSED, false, false),
    );
    let (outcome, trace) = lab.walk("gone.example.com").await;
    assert_eq!(got(&outcome), (Rcode::NXDOMAIN, 0), "{trace}");
    assert!(trace.contains("the answer the host gets"), "{trace}");
}

/// SERVFAIL from every server is the host's answer too: passed on, and marked as a failure
/// for the cache's backoff.
#[tokio::test(start_paused = true)]
async fn servfail_from_every_server_is_passed_on_as_a_failure() {
    let lab = Lab::new(&[FULL, FULL]).await;
    lab.script()
        .set(lab.addr(0), "*", bare(Rcode::SERVFAIL, false, true));
    lab.script()
        .set(lab.addr(1), "*", bare(Rcode::SERVFAIL, false, true));
    let a = lab.resolve("a.example").await;
    assert_eq!(got(&a), (Rcode::SERVFAIL, 0));
    assert!(a.as_ref().unwrap().is_failure());
}

/// A failure the walk held while it tried later servers is kept from when the walk gave up
/// and passed it on, not from when it was read: read longer ago than a failure is kept, it
/// would be stored already expired, and its backoff would never start.
#[tokio::test(start_paused = true)]
async fn a_failure_passed_on_is_kept_from_when_the_walk_gave_up() {
    let lab = Lab::new(&[FULL, FULL]).await;
    let read_early = with(bare(Rcode::SERVFAIL, false, true), |r| {
        r.read_ago = std::time::Duration::from_secs(u64::from(crate::dns::cache::FAILURE_TTL) * 2);
    });
    lab.script().set(lab.addr(0), "*", read_early);
    lab.script().set(lab.addr(1), "*", Step::Timeout);
    let a = lab.resolve("a.example").await;
    assert_eq!(got(&a), (Rcode::SERVFAIL, 0));
    assert!(a.as_ref().unwrap().is_failure());
    assert!(lab.cached("a.example"), "held for its backoff");
}

#[tokio::test(start_paused = true)]
async fn servfail_moves_on_for_that_query_only() {
    let lab = Lab::new(&[FULL, FULL]).await;
    lab.script()
        .set(lab.addr(0), "a.example", bare(Rcode::SERVFAIL, false, true));
    lab.script().set(lab.addr(0), "b.example", answer(1));
    lab.script().set(lab.addr(1), "*", answer(2));
    let a = lab.resolve("a.example").await;
    assert_eq!(got(&a), (Rcode::NOERROR, 2));
    assert!(
        a.as_ref().unwrap().ttl() <= crate::dns::cache::FAILURE_TTL,
        "a failover answer after SERVFAIL lives no longer than a failure"
    );
    assert!(
        !a.as_ref().unwrap().is_failure(),
        "an answer, not a failure: held no longer when it repeats"
    );
    assert_eq!(got(&lab.resolve("b.example").await), (Rcode::NOERROR, 1));
    assert_eq!(lab.servers[0].capability(), Capability::FullResolver);
    assert!(!lab.servers[0].is_down());
}

#[tokio::test(start_paused = true)]
async fn notimp_and_referral_move_on() {
    let lab = Lab::new(&[FULL, FULL, FULL]).await;
    lab.script()
        .set(lab.addr(0), "*", bare(Rcode::NOTIMP, false, true));
    lab.script()
        .set(lab.addr(1), "*", bare(Rcode::NOERROR, false, false));
    lab.script().set(lab.addr(2), "*", answer(3));
    let (outcome, trace) = lab.walk("a.example").await;
    assert_eq!(got(&outcome), (Rcode::NOERROR, 3), "{trace}");
    assert!(trace.contains("NOTIMP: next server") && trace.contains("referral"));
}

#[tokio::test(start_paused = true)]
async fn a_silent_server_is_marked_down_skipped_and_its_failover_answers_end_when_it_returns() {
    let lab = Lab::new(&[FULL, FULL]).await;
    let (vpn, router) = (lab.addr(0), lab.addr(1));
    lab.script().set(vpn, "", Step::Timeout);
    lab.script().set(vpn, "*", Step::Timeout);
    lab.script().set(router, "*", answer(44));
    assert_eq!(
        got(&lab.resolve("git.example.com").await),
        (Rcode::NOERROR, 44)
    );
    assert!(lab.servers[0].is_down());
    // The next name does not wait for it.
    let (outcome, trace) = lab.walk("other.example.com").await;
    assert_eq!(got(&outcome), (Rcode::NOERROR, 44));
    assert_eq!(lab.script().asked(vpn, "other.example.com"), 0);
    assert!(trace.contains("skipped 10.0.0.1:53: down for"), "{trace}");
    assert!(lab.cached("git.example.com"));
    // It comes back with the internal view: the probe notices within its interval, and the
    // failover answer is no longer served.
    lab.script().set(vpn, "", FULL);
    lab.script().set(vpn, "*", answer(34));
    tokio::time::sleep(crate::dns::upstream::PROBE_INTERVAL * 2).await;
    assert!(!lab.servers[0].is_down());
    assert!(!lab.cached("git.example.com"));
    assert_eq!(
        got(&lab.resolve("git.example.com").await),
        (Rcode::NOERROR, 34)
    );
}

#[tokio::test(start_paused = true)]
async fn an_io_error_fails_the_attempt_and_the_walk_moves_on() {
    let lab = Lab::new(&[FULL, FULL]).await;
    lab.script().set(lab.addr(0), "*", Step::Io);
    lab.script().set(lab.addr(1), "*", answer(2));
    let (outcome, trace) = lab.walk("a.example").await;
    assert_eq!(got(&outcome), (Rcode::NOERROR, 2), "{trace}");
}

/// A failure passed on because the server that might have answered was down is the host's
/// answer only while it is down: it ends with its return, however long the backoff holds it.
#[tokio::test(start_paused = true)]
async fn a_failure_passed_on_while_a_server_is_down_ends_when_it_returns() {
    let lab = Lab::new(&[FULL, FULL]).await;
    let (vpn, router) = (lab.addr(0), lab.addr(1));
    lab.script().set(vpn, "", Step::Timeout);
    lab.script().set(vpn, "*", Step::Timeout);
    lab.script()
        .set(router, "*", bare(Rcode::SERVFAIL, false, true));
    let failed = lab.resolve("git.example.com").await;
    assert_eq!(got(&failed), (Rcode::SERVFAIL, 0));
    assert!(failed.as_ref().unwrap().is_failure());
    assert!(lab.cached("git.example.com"));
    lab.script().set(vpn, "", FULL);
    lab.script().set(vpn, "*", answer(34));
    tokio::time::sleep(crate::dns::upstream::PROBE_INTERVAL * 2).await;
    assert!(!lab.servers[0].is_down());
    assert!(!lab.cached("git.example.com"), "ended by the recovery");
    assert_eq!(
        got(&lab.resolve("git.example.com").await),
        (Rcode::NOERROR, 34)
    );
}

#[tokio::test(start_paused = true)]
async fn when_all_are_down_all_are_tried_and_timeouts_get_another_round() {
    let lab = Lab::new(&[FULL, FULL]).await;
    for s in &lab.servers {
        s.set_down("test");
    }
    let (outcome, trace) = lab.walk("a.example").await;
    assert_eq!(outcome.unwrap_err(), Rcode::SERVFAIL);
    assert!(trace.contains("every server is marked down"), "{trace}");
    // Two rounds (glibc's default attempts:2) over both.
    assert_eq!(lab.script().asked(lab.addr(0), "a.example"), 2);
    assert_eq!(lab.script().asked(lab.addr(1), "a.example"), 2);
}

#[tokio::test(start_paused = true)]
async fn a_truncated_reply_is_retried_over_tcp() {
    let lab = Lab::new(&[FULL]).await;
    lab.script().set(
        lab.addr(0),
        "big.example",
        with(answer(5), |r| r.truncated_udp = true),
    );
    let (outcome, _) = lab.walk("big.example").await;
    assert_eq!(got(&outcome), (Rcode::NOERROR, 5));
    let log = lab.script().log.lock().unwrap().clone();
    let protocols: Vec<_> = log
        .iter()
        .filter(|(_, n, _)| n == "big.example")
        .map(|(_, _, p)| *p)
        .collect();
    assert_eq!(protocols, [Protocol::Udp, Protocol::Tcp]);
}

/// Once per query, whether its walk runs in a task or begins outside one (`forward`).
#[tokio::test(start_paused = true)]
async fn rotate_starts_at_the_next_server_each_time() {
    let lab = Lab::new(&[FULL, FULL]).await;
    lab.script().set(lab.addr(0), "*", answer(1));
    lab.script().set(lab.addr(1), "*", answer(2));
    let options = WalkOptions {
        rotate: true,
        ..WalkOptions::default()
    };
    let mut firsts = Vec::new();
    for name in ["a.example", "b.example", "c.example"] {
        let (bytes, q) = query(name);
        let outcome = lab
            .fwd
            .walk(&bytes, &q, &lab.servers, options, &mut Trace::off())
            .await;
        firsts.push(got(&outcome).1);
    }
    for name in ["d.example", "e.example", "f.example"] {
        firsts.push(got(&lab.forward_with(name, options).await).1);
    }
    assert_eq!(firsts, [1, 2, 1, 2, 1, 2]);
}

// ---- sharing and bounds ----------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn identical_concurrent_questions_share_one_upstream_query() {
    let lab = Lab::new(&[FULL]).await;
    lab.answers_after(0, "same.example", 100);
    let asks: Vec<_> = (0..20).map(|_| lab.spawn_resolve("same.example")).collect();
    for a in asks {
        assert_eq!(a.await.unwrap().unwrap().rcode(), Rcode::NOERROR);
    }
    assert_eq!(lab.script().asked(lab.addr(0), "same.example"), 1);
    assert!(lab.cached("same.example"));
}

/// A question asked again just after its walk ended (cache missed by the caller, walk gone
/// by the time it claims one) takes the answer that walk stored: one upstream query, not two.
#[tokio::test(start_paused = true)]
async fn a_question_missed_in_the_cache_as_its_walk_ends_takes_that_walks_answer() {
    let lab = Lab::new(&[FULL]).await;
    lab.script().set(lab.addr(0), "same.example", answer(1));
    assert_eq!(got(&lab.resolve("same.example").await), (Rcode::NOERROR, 1));
    // The caller looked in the cache before that walk stored its answer: it asks again.
    assert_eq!(got(&lab.resolve("same.example").await), (Rcode::NOERROR, 1));
    assert_eq!(lab.script().asked(lab.addr(0), "same.example"), 1);
}

/// Routes or local data replaced while a walk is in flight (`set_routes` and `set_local` swap
/// them, then empty the cache): the walk's answer goes to its askers but is not kept, so the
/// cache never serves an answer sought under what was replaced.
#[tokio::test(start_paused = true)]
async fn an_answer_walked_across_a_clear_is_passed_on_not_kept() {
    let lab = Lab::new(&[FULL]).await;
    lab.answers_after(0, "late.example", 100);
    let walk = lab.resolving("late.example").await;
    lab.fwd.cache().clear();
    assert_eq!(got(&walk.await.unwrap()), (Rcode::NOERROR, 1));
    assert!(!lab.cached("late.example"));
    // Sought after the clear, it is kept.
    assert_eq!(got(&lab.resolve("late.example").await), (Rcode::NOERROR, 1));
    assert!(lab.cached("late.example"));
}

#[tokio::test(start_paused = true)]
async fn the_inflight_bound_answers_servfail_at_once() {
    let lab = Lab::with_inflight(&[FULL], 1).await;
    lab.answers_after(0, "*", 300);
    let first = lab.resolving("one.example").await;
    let started = tokio::time::Instant::now();
    assert_eq!(
        lab.resolve("two.example").await.unwrap_err(),
        Rcode::SERVFAIL
    );
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "not queued behind the first"
    );
    assert!(first.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn answers_cached_before_a_lesson_are_dropped() {
    // The fake root has not answered its probe yet: its NXDOMAIN is taken, as glibc does.
    let lab = Lab::new(&[Step::Timeout, FULL]).await;
    let (internal, public) = (lab.addr(0), lab.addr(1));
    lab.script()
        .set(internal, "www.example.com", nxdomain(true));
    lab.script().set(public, "www.example.com", answer(80));
    assert_eq!(
        got(&lab.resolve("www.example.com").await),
        (Rcode::NXDOMAIN, 0)
    );
    // Its probe answers: it is not a full resolver, and the cached NXDOMAIN goes.
    lab.script().set(internal, "", OWN_ROOT);
    tokio::time::sleep(Duration::from_millis(10)).await;
    lab.fwd.learn_now(&lab.servers).await;
    assert_eq!(lab.servers[0].capability(), Capability::NotFullResolver);
    // Asked with no lookup in between (as by a caller that missed the cache before the
    // lesson): the walk's own look in the cache does not take the old answer either.
    assert_eq!(
        got(&lab.resolve("www.example.com").await),
        (Rcode::NOERROR, 80)
    );
}

#[tokio::test(start_paused = true)]
async fn a_probe_ends_when_its_server_leaves_the_routing_table() {
    let lab = Lab::new(&[FULL, FULL]).await;
    lab.script().set(lab.addr(0), "", Step::Timeout);
    lab.script().set(lab.addr(0), "*", Step::Timeout);
    lab.script().set(lab.addr(1), "*", answer(2));
    assert_eq!(got(&lab.walk("a.example").await.0), (Rcode::NOERROR, 2));
    assert!(lab.servers[0].is_down());
    tokio::time::sleep(crate::dns::upstream::PROBE_INTERVAL * 3).await;
    let probes = || lab.script().asked(lab.addr(0), "");
    let before = probes();
    assert!(before >= 3, "probed while down: {before}");
    // resolv.conf no longer lists it: the pool forgets it, and nothing else holds it.
    let Lab { fwd, mut servers } = lab;
    fwd.pool().retain(&[servers[1].addr]);
    let gone = servers.remove(0);
    let addr = gone.addr;
    drop(gone);
    tokio::time::sleep(crate::dns::upstream::PROBE_INTERVAL * 2).await;
    let after = fwd.exchanger().asked(addr, "");
    tokio::time::sleep(crate::dns::upstream::PROBE_INTERVAL * 4).await;
    assert_eq!(fwd.exchanger().asked(addr, ""), after, "no more probes");
}

#[tokio::test(start_paused = true)]
async fn a_server_whose_tcp_fails_costs_one_slow_query_then_is_not_retried_over_tcp() {
    let lab = Lab::new(&[FULL, FULL]).await;
    let (first, second) = (lab.addr(0), lab.addr(1));
    let truncating = with(answer(1), |r| {
        r.truncated_udp = true;
        r.tcp_silent = true
    });
    lab.script().set(first, "*", truncating);
    lab.script()
        .set(first, "", with(FULL, |r| r.tcp_silent = true));
    lab.script().set(second, "*", answer(2));
    let tcp_asks = |name: &str| {
        let log = lab.script().log.lock().unwrap();
        log.iter()
            .filter(|(s, n, p)| *s == first && n == name && *p == Protocol::Tcp)
            .count()
    };
    assert_eq!(got(&lab.walk("a.example").await.0), (Rcode::NOERROR, 2));
    assert_eq!(
        tcp_asks("a.example"),
        1,
        "the first truncated answer tries TCP"
    );
    assert!(lab.servers[0].is_tcp_down() && !lab.servers[0].is_down());
    let (outcome, trace) = lab.walk("b.example").await;
    assert_eq!(got(&outcome), (Rcode::NOERROR, 2));
    assert_eq!(tcp_asks("b.example"), 0, "not again: {trace}");
    assert!(trace.contains("its TCP failed before"), "{trace}");
    // Its TCP comes back: a probe sees it, and TCP is used again.
    lab.script().set(first, "", FULL);
    lab.script()
        .set(first, "*", with(answer(1), |r| r.truncated_udp = true));
    tokio::time::sleep(crate::dns::upstream::PROBE_INTERVAL * 2).await;
    assert!(!lab.servers[0].is_tcp_down());
    assert_eq!(got(&lab.walk("c.example").await.0), (Rcode::NOERROR, 1));
}

// ---- walks begun outside a task --------------------------------------------------------------

impl Lab {
    /// Forwards `name` as the UDP listener does (`Forwarder::forward`: the first exchange
    /// started outside any task) and waits for the outcome it hands on.
    async fn forward(&self, name: &str) -> Outcome {
        self.forward_with(name, WalkOptions::default()).await
    }

    /// `forward` under `options`.
    async fn forward_with(&self, name: &str, options: WalkOptions) -> Outcome {
        let (bytes, q) = query(name);
        let (tx, rx) = oneshot::channel();
        let sought = self.fwd.cache().generation();
        let then = move |outcome, _: &[u8], _: &Query| {
            let _ = tx.send(outcome);
        };
        self.fwd.forward(
            bytes,
            q,
            &self.servers,
            options,
            sought,
            Instant::now(),
            then,
        );
        rx.await.expect("the outcome is handed on")
    }

    /// All a walk for `name` left behind: its outcome (answer, lifetime, whether a failure,
    /// from whom), every exchange for the name in order, what each server is now thought to
    /// be (in small letters: the evidence quotes names in their random case), and whether
    /// the answer is cached.
    fn footprint(&self, name: &str, outcome: &Outcome) -> String {
        let outcome = match outcome {
            Ok(a) => format!(
                "{:?} ttl {} failure {} from {:?}",
                got(outcome),
                a.ttl(),
                a.is_failure(),
                a.server()
            ),
            Err(code) => format!("{code}"),
        };
        let log = self.script().log.lock().unwrap().clone();
        let asked: Vec<_> = log.iter().filter(|(_, n, _)| n == name).collect();
        let servers: Vec<_> = (self.servers.iter())
            .map(|s| {
                let (down, tcp_down) = (s.is_down(), s.is_tcp_down());
                let guard = s.guard.to_string().to_lowercase();
                format!("{} down {down} tcp down {tcp_down}; {guard}", s.addr)
            })
            .collect();
        let cached = self.cached(name);
        format!("{outcome}\nasked {asked:?}\n{servers:#?}\ncached {cached}")
    }
}

/// A walk begun outside any task, whose first exchange's end is taken where the reply is
/// read, leaves exactly what the same walk in a task leaves: the same answer, the same
/// exchanges in the same order, the same lessons about every server, the same cache entry.
/// Whether it ends there (a final answer) or goes on in a task from where it stands (a
/// reply that moves on, a retry the guard or the walk calls for, a timeout, an error), and
/// when its first server is not asked alone (then no exchange is started outside a task).
#[tokio::test(start_paused = true)]
async fn a_walk_begun_outside_a_task_ends_as_one_in_a_task() {
    const NAME: &str = "www.example.com";
    type Setup = fn(&Lab);
    let scenarios: [(&str, [Step; 2], Setup); 15] = [
        ("final from the first", [FULL, FULL], |lab| {
            lab.script().set(lab.addr(0), "*", answer(11));
        }),
        ("REFUSED, then the next", [FULL, FULL], |lab| {
            let refused = bare(Rcode::REFUSED, false, true);
            lab.script().set(lab.addr(0), "*", refused);
        }),
        ("SERVFAIL, then the next", [FULL, FULL], |lab| {
            let servfail = bare(Rcode::SERVFAIL, false, true);
            lab.script().set(lab.addr(0), "*", servfail);
        }),
        ("NOTIMP, then the next", [FULL, FULL], |lab| {
            let notimp = bare(Rcode::NOTIMP, false, true);
            lab.script().set(lab.addr(0), "*", notimp);
        }),
        ("FORMERR", [FULL, FULL], |lab| {
            let formerr = bare(Rcode::FORMERR, false, true);
            lab.script().set(lab.addr(0), "*", formerr);
        }),
        ("silent: marked down", [FULL, FULL], |lab| {
            // Its probes go unanswered too: it stays down whenever they run.
            lab.script().set(lab.addr(0), "", Step::Timeout);
            lab.script().set(lab.addr(0), "*", Step::Timeout);
        }),
        ("an I/O error", [FULL, FULL], |lab| {
            lab.script().set(lab.addr(0), "", Step::Io);
            lab.script().set(lab.addr(0), "*", Step::Io);
        }),
        ("truncated: TCP", [FULL, FULL], |lab| {
            let truncated = with(answer(5), |r| r.truncated_udp = true);
            lab.script().set(lab.addr(0), "*", truncated);
        }),
        ("truncated, TCP silent", [FULL, FULL], |lab| {
            let silent = with(answer(5), |r| {
                r.truncated_udp = true;
                r.tcp_silent = true
            });
            lab.script().set(lab.addr(0), "*", silent);
            let probe_silent = with(FULL, |r| r.tcp_silent = true);
            lab.script().set(lab.addr(0), "", probe_silent);
        }),
        ("case not kept: settled over TCP", [FULL, FULL], |lab| {
            lab.script().set(lab.addr(0), "*", answer(11));
            let lowercases = Manner {
                lowercases: true,
                ..Manner::default()
            };
            lab.script().set_manner(lab.addr(0), lowercases);
        }),
        ("forgeries dropped", [FULL, FULL], |lab| {
            lab.script().set(lab.addr(0), "*", answer(11));
            let forgeries = [Forgery::Lowercase, Forgery::GuessedCookie];
            lab.script().forge(lab.addr(0), &forgeries);
        }),
        ("cookies, BADCOOKIE once", [FULL, FULL], |lab| {
            lab.script().set(lab.addr(0), "*", answer(11));
            let cookies = Manner {
                cookie: Some([7; 16]),
                badcookie: true,
                ..Manner::default()
            };
            lab.script().set_manner(lab.addr(0), cookies);
        }),
        ("nobody answers", [FULL, FULL], |lab| {
            for i in 0..2 {
                lab.script().set(lab.addr(i), "", Step::Timeout);
                lab.script().set(lab.addr(i), "*", Step::Timeout);
            }
        }),
        (
            "a fake root first, asked with the next",
            [OWN_ROOT, FULL],
            |lab| {
                lab.script().set(lab.addr(0), "*", nxdomain(true));
            },
        ),
        (
            "refuses outside its zones, asked with the next",
            [REFUSES, FULL],
            |lab| {
                lab.script()
                    .set(lab.addr(0), "*", bare(Rcode::REFUSED, false, false));
            },
        ),
    ];
    for (what, kinds, setup) in scenarios {
        let mut left = Vec::new();
        for outside in [false, true] {
            let lab = Lab::new(&kinds).await;
            lab.script().set(lab.addr(1), "*", answer(22));
            setup(&lab);
            let outcome = match outside {
                false => lab.resolve(NAME).await,
                true => lab.forward(NAME).await,
            };

            left.push(lab.footprint(NAME, &outcome));
            let started = lab.script().started.load(Ordering::Relaxed);
            // A full resolver first is asked alone; the others, together with the next.
            let alone = matches!(kinds[0], Step::Reply(r) if r.ra);
            assert_eq!(started, usize::from(outside && alone), "{what}: {outside}");
        }
        assert_eq!(left[0], left[1], "{what}: in a task, then outside");
    }
}

#[tokio::test(start_paused = true)]
async fn identical_questions_forwarded_together_share_one_walk() {
    let lab = Arc::new(Lab::new(&[FULL]).await);
    lab.answers_after(0, "same.example", 100);
    let asks: Vec<_> = (0..5)
        .map(|_| {
            let lab = lab.clone();
            tokio::spawn(async move { lab.forward("same.example").await })
        })
        .collect();
    for a in asks {
        assert_eq!(got(&a.await.unwrap()), (Rcode::NOERROR, 1));
    }
    assert_eq!(lab.script().asked(lab.addr(0), "same.example"), 1);
    assert!(lab.cached("same.example"));
    // Asked again, it is the cached answer: no other exchange.
    assert_eq!(got(&lab.forward("same.example").await), (Rcode::NOERROR, 1));
    assert_eq!(lab.script().asked(lab.addr(0), "same.example"), 1);
}

#[tokio::test(start_paused = true)]
async fn the_inflight_bound_answers_servfail_at_once_outside_a_task_too() {
    let lab = Lab::with_inflight(&[FULL], 1).await;
    lab.answers_after(0, "*", 300);
    let first = lab.resolving("one.example").await;
    let started = tokio::time::Instant::now();
    assert_eq!(
        lab.forward("two.example").await.unwrap_err(),
        Rcode::SERVFAIL
    );
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert!(first.await.unwrap().is_ok());
}
