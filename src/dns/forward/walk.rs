//! The walk over a name's servers: the host's order, glibc's verdicts (resolv/res_send.c),
//! and the only departures the parity rule allows.
//!
//! - Servers are asked in the route's order (resolv.conf's, rotated under `options rotate`).
//! - A server that is down (no reply; probed in the background) is skipped, unless all are.
//! - REFUSED, SERVFAIL, NOTIMP, a referral without glue and an extended-RCODE error move on,
//!   for this query only; NOERROR and NXDOMAIN are final; no reply moves on and marks the
//!   server down. Timed-out servers get another round per `options attempts`.
//! - A server known to refuse names outside its zones, or known not to be a full resolver,
//!   is asked *together with* the next server for names outside its zones, and the replies
//!   are still taken in order: its refusal costs no round trip, and an answer it does give
//!   (a zone nobody knew it had) still wins. Nothing is skipped on a guess.
//! - A server that is not a full resolver answers outside names from a fake root of its own;
//!   its NXDOMAIN or NODATA there (the SOA at the root, or none) gives way to a later
//!   server's answer, and stands only if no later server gives one. This is the one place
//!   guests get a better answer than the host, on purpose.
//! - An answer that came from a later server because an earlier one was down lives in the
//!   cache only until a server recovers; one that came after an earlier server failed
//!   (SERVFAIL, NOTIMP) lives at most `FAILURE_TTL`. A failure passed on because no server
//!   gave a final answer is marked as one, and the cache holds it with backoff when it
//!   repeats (`dns::cache`).

use super::{Forwarder, Outcome};
use crate::dns::cache::{Answer, FAILURE_TTL, MAX_TTL};
use crate::dns::guard;
use crate::dns::router::WalkOptions;
use crate::dns::trace::Trace;
use crate::dns::transport::{Exchange, ExchangeError, Exchanger, Protocol};
use crate::dns::upstream::{Capability, Upstream};
use crate::dns::wire::{self, Query, Rcode};
use smallvec::SmallVec;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// What one upstream reply means for the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Final,
    /// Try the next server.
    Next(NextReason),
}

/// Why glibc moves on from a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NextReason {
    /// REFUSED, SERVFAIL or NOTIMP.
    Rcode(Rcode),
    /// NOERROR with no answer, AA=0, RA=0 and nothing in the additional section.
    Referral,
    /// An extended RCODE in the OPT record (an EDNS error).
    ExtendedRcode,
}

impl std::fmt::Display for NextReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NextReason::Rcode(code) => write!(f, "{code}"),
            NextReason::Referral => f.write_str("referral (no answer, AA=0, RA=0)"),
            NextReason::ExtendedRcode => f.write_str("extended RCODE (EDNS error)"),
        }
    }
}

impl NextReason {
    /// The server says this name is not its business (rather than failing at it).
    fn is_refusal(self) -> bool {
        matches!(
            self,
            NextReason::Rcode(Rcode::REFUSED) | NextReason::Referral
        )
    }
}

/// glibc's rule for a reply, on the full 12-bit RCODE (`info` has the OPT's upper bits): a
/// referral is NOERROR with no answer, AA=0, RA=0 and nothing in the additional section but
/// our OPT.
pub(crate) fn verdict(reply: &[u8], info: &wire::ReplyInfo) -> Verdict {
    if info.opt.is_some_and(|o| o.edns.rcode_high != 0) {
        return Verdict::Next(NextReason::ExtendedRcode);
    }
    let additional = wire::arcount(reply) - u16::from(info.opt.is_some());
    match wire::rcode(reply) {
        code @ (Rcode::REFUSED | Rcode::SERVFAIL | Rcode::NOTIMP) => {
            Verdict::Next(NextReason::Rcode(code))
        }
        Rcode::NOERROR
            if wire::ancount(reply) == 0
                && additional == 0
                && !wire::aa(reply)
                && !wire::ra(reply) =>
        {
            Verdict::Next(NextReason::Referral)
        }
        _ => Verdict::Final,
    }
}

/// Why an answer from a later server might not be the host's answer for long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Failover {
    None,
    /// An earlier server failed this query (SERVFAIL, NOTIMP, EDNS error).
    AfterFailure,
    /// An earlier server was down or did not answer.
    AfterDown,
}

/// Servers in the order they are asked: a route's few, kept without an allocation.
type Servers = SmallVec<[Arc<Upstream>; 4]>;

/// The state of one walk: what it learned, and where it stands. It owns all it needs, so a
/// walk begun outside any task (`dns::forward`) can go on in one; the replies it holds, which
/// few walks do, are boxed, so that a walk is small to move.
pub(crate) struct Walk {
    /// The route chose these servers for the name's own domain: all of them serve it.
    scoped: bool,
    /// The pool's recovery count when the walk began.
    recoveries: u64,
    failover: Failover,
    /// The last reply glibc would move on from: passed on if nobody gives a final answer.
    last_reply: Option<Box<Exchange>>,
    /// A negative answer from a server that is not a full resolver: the host's answer,
    /// passed on if no later server gives a final one.
    host_answer: Option<Box<Exchange>>,
    /// This round's servers, in order, and the index of the next to ask.
    round: Servers,
    next: usize,
    /// The round (`options attempts`), from 1.
    attempt: u32,
    /// Servers of this round that timed out: the next round's.
    timed_out: Servers,
}

impl Walk {
    /// Whether `q`'s name lies outside every zone `server` is known to serve.
    fn outside_zones(&self, server: &Upstream, q: &Query) -> bool {
        !self.scoped && !server.serves_query(q)
    }

    /// The server asked first, if it is asked alone (no server asked together with it).
    pub(crate) fn first_alone(&self, q: &Query) -> Option<&Arc<Upstream>> {
        let first = self.round.first()?;
        (self.next == 0 && group(&self.round, self, q, &mut Trace::off()) == 1).then_some(first)
    }

    /// The first server, asked alone, gave a reply that did not end the walk: it goes on
    /// from the next.
    pub(crate) fn past_first(&mut self) {
        self.next = 1;
    }
}

/// How the first server's turn began when the walk's first exchange was started outside the
/// walk's task (`dns::forward`): the server was asked alone, and its turn goes on with the
/// timeout it began with.
pub(crate) struct FirstTurn {
    pub(crate) timeout: Duration,
    pub(crate) stands: Stands,
}

/// Where the first server's turn stands.
pub(crate) enum Stands {
    /// Its guard asks again (a retry the checks call for).
    Again(guard::Asking),
    /// Its guard's result for the question over UDP with EDNS.
    Asked(Result<Exchange, ExchangeError>),
}

impl<X: Exchanger> Forwarder<X> {
    /// The walk over the servers. Public so `explain` can run it with a trace on.
    pub(crate) async fn walk(
        &self,
        client: &[u8],
        q: &Query,
        servers: &[Arc<Upstream>],
        options: WalkOptions,
        trace: &mut Trace,
    ) -> Outcome {
        match self.begin_walk(servers, options, trace) {
            Some(walk) => self.walk_on(walk, client, q, options, trace, None).await,
            None => Err(Rcode::SERVFAIL),
        }
    }

    /// A walk over `servers`, before any is asked: None if there are none.
    pub(crate) fn begin_walk(
        &self,
        servers: &[Arc<Upstream>],
        options: WalkOptions,
        trace: &mut Trace,
    ) -> Option<Walk> {
        let mut walk = Walk {
            scoped: options.scoped,
            recoveries: self.pool.recoveries(),
            failover: Failover::None,
            last_reply: None,
            host_answer: None,
            round: Servers::new(),
            next: 0,
            attempt: 1,
            timed_out: Servers::new(),
        };
        walk.round = self.order(servers, options, &mut walk, trace);
        if walk.round.is_empty() {
            trace.note(|| "no upstream servers: SERVFAIL".into());
            return None;
        }
        Some(walk)
    }

    /// The walk from where `walk` stands, the first server's turn begun already if `first`
    /// says how.
    pub(crate) async fn walk_on(
        &self,
        mut walk: Walk,
        client: &[u8],
        q: &Query,
        options: WalkOptions,
        trace: &mut Trace,
        mut first: Option<FirstTurn>,
    ) -> Outcome {
        let bounds = self.timeouts(options);
        let mut round = std::mem::take(&mut walk.round);
        loop {
            let mut i = walk.next;
            while i < round.len() {
                // A first turn begun outside began alone, whatever the servers are known as
                // since.
                let n = match first {
                    Some(_) => 1,
                    None => group(&round[i..], &walk, q, trace),
                };
                let group = &round[i..i + n];
                // One server, the common case, is awaited as it is: no joined futures.
                let results: SmallVec<[_; 1]> = match group {
                    [one] => {
                        let timeout = first
                            .as_ref()
                            .map_or_else(|| one.timeout(bounds), |f| f.timeout);
                        smallvec::smallvec![self.ask(one, client, q, timeout, first.take()).await]
                    }
                    _ => {
                        let asks = group
                            .iter()
                            .map(|s| self.ask(s, client, q, s.timeout(bounds), None));
                        futures_util::future::join_all(asks).await.into()
                    }
                };
                for (j, (server, result)) in group.iter().zip(results).enumerate() {
                    let timed_out_now = matches!(result, Err(ExchangeError::Timeout(..)));
                    let attempt = walk.attempt;
                    if let Some(outcome) = self.take(&mut walk, q, server, result, attempt, trace) {
                        let rest = &round[i + group.len()..];
                        note_not_used(trace, &group[j + 1..], rest);
                        return outcome;
                    }
                    if timed_out_now {
                        walk.timed_out.push(server.clone());
                    }
                }
                i += group.len();
            }
            round = std::mem::take(&mut walk.timed_out);
            walk.next = 0;
            walk.attempt += 1;
            if round.is_empty() || walk.attempt > options.attempts.max(1) {
                break;
            }
        }
        self.give_up(walk, trace)
    }

    /// The least and most a server is waited for, under `options`.
    pub(crate) fn timeouts(&self, options: WalkOptions) -> (Duration, Duration) {
        let (low, high) = self.pool.bounds();
        (low, high.min(options.timeout_cap).max(low))
    }

    /// Servers in walk order: rotated if asked, live ones only unless all are down.
    fn order(
        &self,
        servers: &[Arc<Upstream>],
        options: WalkOptions,
        walk: &mut Walk,
        trace: &mut Trace,
    ) -> Servers {
        let mut order = Servers::from(servers);
        if options.rotate && !order.is_empty() {
            let start = self.rotation.fetch_add(1, Ordering::Relaxed) % order.len();
            order.rotate_left(start);
        }
        let live: Servers = order.iter().filter(|s| !s.is_down()).cloned().collect();
        if live.is_empty() {
            if !order.is_empty() {
                trace.note(|| "every server is marked down: trying them all anyway".into());
            }
            return order;
        }
        for s in order.iter().filter(|s| s.is_down()) {
            walk.failover = Failover::AfterDown;
            trace.note(|| {
                let (since, why) = s.down_since().unwrap_or((Instant::now(), String::new()));
                format!(
                    "skipped {}: down for {:.1} s ({why}); probed in the background every {:.1} s",
                    s.addr,
                    since.elapsed().as_secs_f64(),
                    crate::dns::upstream::PROBE_INTERVAL.as_secs_f64()
                )
            });
        }
        // Servers not known yet are probed now; the rest are re-learned by `Server`'s loop.
        for s in live
            .iter()
            .filter(|s| s.capability() == Capability::Unknown)
        {
            self.learn_later(s);
        }
        live
    }

    /// Takes one server's result in order. Returns the walk's outcome once it is decided.
    pub(crate) fn take(
        &self,
        walk: &mut Walk,
        q: &Query,
        server: &Arc<Upstream>,
        result: Result<Exchange, ExchangeError>,
        attempt: u32,
        trace: &mut Trace,
    ) -> Option<Outcome> {
        crate::metrics::upstream_exchange(server.addr, &result);
        let ex = match result {
            Ok(ex) => ex,
            Err(e) => {
                trace.note(|| {
                    format!(
                        "asked {} (attempt {attempt}): {e} -> next server",
                        server.addr
                    )
                });
                // A server that answers over UDP is alive even if its TCP fails: not "down",
                // but its TCP is remembered as failing (and probed) until it works again.
                match &e {
                    ExchangeError::Tcp(_) => self.mark_tcp_down(server),
                    _ => self.mark_down(server, &e.to_string()),
                }
                walk.failover = walk.failover.max(Failover::AfterDown);
                return None;
            }
        };
        self.pool.record_reply(server, ex.rtt);
        let asked = |trace: &mut Trace, what: &dyn Fn() -> String| {
            trace.note(|| {
                format!(
                    "asked {} (attempt {attempt}): {} {}, {} answer(s), {:.1} ms{} -> {}",
                    server.addr,
                    wire::rcode(&ex.reply),
                    wire::Flags(&ex.reply),
                    ex.info.answers,
                    ex.rtt.as_secs_f64() * 1e3,
                    ex.dropped,
                    what()
                )
            })
        };
        let capability = server.capability();
        match verdict(&ex.reply, &ex.info) {
            Verdict::Next(why) => {
                asked(trace, &|| format!("{why}: next server"));
                if why.is_refusal()
                    && capability != Capability::RefusesOutside
                    && walk.outside_zones(server, q)
                {
                    // It refused though it was thought to resolve: probe it again soon.
                    server.forget_capability();
                    self.learn_later(server);
                }
                if !why.is_refusal() {
                    walk.failover = walk.failover.max(Failover::AfterFailure);
                }
                walk.last_reply = Some(Box::new(ex));
                None
            }
            Verdict::Final
                if capability == Capability::NotFullResolver
                    && from_fake_root(&ex)
                    && walk.outside_zones(server, q) =>
            {
                asked(trace, &|| {
                    format!(
                        "not a full resolver ({}), and the name is outside its zones: a later \
                         server's answer is preferred",
                        evidence_text(server)
                    )
                });
                walk.host_answer.get_or_insert_with(|| Box::new(ex));
                None
            }
            Verdict::Final => {
                // From a server that refuses outside names, this is a zone of its own.
                asked(trace, &|| "final".into());
                let at = ex.received;
                Some(stored(ex, walk.failover, walk.recoveries, at))
            }
        }
    }

    /// No server gave a final answer: the host's answer if a server that is not a full
    /// resolver gave one, else the last reply glibc moved on from, else SERVFAIL.
    fn give_up(&self, walk: Walk, trace: &mut Trace) -> Outcome {
        if let Some(ex) = walk.host_answer {
            trace.note(|| {
                format!(
                    "no later server answered: passing on {}, the answer the host gets",
                    wire::rcode(&ex.reply)
                )
            });
            return stored(*ex, walk.failover, walk.recoveries, Instant::now());
        }
        match walk.last_reply {
            Some(ex) => {
                trace.note(|| {
                    format!(
                        "no server gave a final answer; passing on the last reply ({})",
                        wire::rcode(&ex.reply)
                    )
                });
                // A failure passed on after a server was down ends with its return, like
                // any answer the down server might have changed.
                let failover = walk.failover.max(Failover::AfterFailure);
                stored(*ex, failover, walk.recoveries, Instant::now())
            }
            None => {
                trace.note(|| "no server answered: SERVFAIL".into());
                Err(Rcode::SERVFAIL)
            }
        }
    }

    /// One server: UDP, then TCP if the reply was truncated, then without EDNS if the server
    /// rejected it with FORMERR.
    async fn ask(
        &self,
        server: &Upstream,
        client: &[u8],
        q: &Query,
        timeout: Duration,
        first: Option<FirstTurn>,
    ) -> Result<Exchange, ExchangeError> {
        let x = &*self.exchanger;
        let ex = match first.map(|f| f.stands) {
            None => guard::ask(x, server, client, q, Protocol::Udp, true, timeout).await?,
            Some(Stands::Again(asking)) => {
                guard::ask_on(x, server, client, q, asking, timeout).await?
            }
            Some(Stands::Asked(result)) => result?,
        };
        if asks_again(&ex) {
            return self.ask_again(server, client, q, timeout, ex).await;
        }
        Ok(ex)
    }

    /// `ask` after a first reply `asks_again` holds to ask again for.
    async fn ask_again(
        &self,
        server: &Upstream,
        client: &[u8],
        q: &Query,
        timeout: Duration,
        mut ex: Exchange,
    ) -> Result<Exchange, ExchangeError> {
        let x = &*self.exchanger;
        if without_edns_again(&ex) {
            ex = guard::ask(x, server, client, q, Protocol::Udp, false, timeout).await?;
        }
        if wire::tc(&ex.reply) {
            if server.is_tcp_down() {
                // Its TCP failed before: glibc would move on after a TCP timeout; so do we,
                // without the wait.
                return Err(ExchangeError::Tcp(Box::new(ExchangeError::Io(
                    std::io::Error::other("its TCP failed before; probed in the background"),
                ))));
            }
            let tcp_timeout = timeout.max(self.pool.bounds().1);
            return guard::ask(x, server, client, q, Protocol::Tcp, true, tcp_timeout)
                .await
                .map_err(|e| ExchangeError::Tcp(Box::new(e)));
        }
        Ok(ex)
    }
}

/// How many servers to ask at once, starting with `rest[0]`: it alone, or it and the
/// servers after it while each is known to refuse, or not to resolve, names outside its
/// zones.
fn group(rest: &[Arc<Upstream>], walk: &Walk, q: &Query, trace: &mut Trace) -> usize {
    let mut end = 1;
    while end < rest.len()
        && rest[end - 1].capability().overlaps_next()
        && walk.outside_zones(&rest[end - 1], q)
    {
        let s = &rest[end - 1];
        trace.note(|| {
            format!(
                "{} {} ({}): asking {} at the same time; replies still taken in order",
                s.addr,
                s.capability(),
                evidence_text(s),
                rest[end].addr
            )
        });
        end += 1;
    }
    end
}

/// Whether a server's first reply to the question (over UDP, with EDNS) is asked for again:
/// without EDNS after a FORMERR that shows no EDNS, or over TCP when it is truncated.
pub(crate) fn asks_again(ex: &Exchange) -> bool {
    without_edns_again(ex) || wire::tc(&ex.reply)
}

/// A FORMERR without an OPT: a server that does not know EDNS (RFC 6891 7).
fn without_edns_again(ex: &Exchange) -> bool {
    wire::rcode(&ex.reply) == Rcode::FORMERR && ex.info.opt.is_none()
}

/// A negative answer that speaks for no real zone: NXDOMAIN with the SOA of the root or none,
/// or NODATA with the root's SOA. One with a zone's SOA is that zone's answer, and final.
fn from_fake_root(ex: &Exchange) -> bool {
    match (wire::rcode(&ex.reply), ex.info.soa_labels) {
        (Rcode::NXDOMAIN, None | Some(0)) => true,
        (Rcode::NOERROR, Some(0)) => ex.info.answers == 0,
        _ => false,
    }
}

fn evidence_text(server: &Upstream) -> String {
    match server.evidence() {
        Some(e) => format!(
            "probe {}, {:.0} s ago",
            e.reply,
            e.at.elapsed().as_secs_f64()
        ),
        None => "not probed yet".into(),
    }
}

/// After a final answer: the replies of servers asked with it but later in order, and the
/// servers never asked.
fn note_not_used(trace: &mut Trace, unused: &[Arc<Upstream>], rest: &[Arc<Upstream>]) {
    let list = |servers: &[Arc<Upstream>]| {
        let names: Vec<String> = servers.iter().map(|s| s.addr.to_string()).collect();
        names.join(", ")
    };
    if !unused.is_empty() {
        trace.note(|| {
            format!(
                "reply of {} not used (the answer above is final)",
                list(unused)
            )
        });
    }
    if !rest.is_empty() {
        trace.note(|| format!("not asked: {} (the answer above is final)", list(rest)));
    }
}

/// Turns an accepted reply into a cacheable answer: OPT cut out, no TTL above how long it is
/// kept (RFC 2308 5: the SOA of a negative answer says no more than its lifetime). Failures
/// passed on (marked, for the cache's backoff), and answers obtained after an earlier server
/// failed, are kept only briefly; an answer obtained because an earlier server was down ends
/// with the next recovery. A reply without its question (FORMERR or NOTIMP from some servers)
/// becomes a plain error. Its lifetime runs from `at`: when a final answer was read, or when
/// the walk gave up and passed on an earlier reply (which the walk may have held for seconds,
/// longer than a failure is kept).
fn stored(ex: Exchange, failover: Failover, recoveries: u64, at: Instant) -> Outcome {
    let Exchange {
        mut reply,
        mut info,
        server,
        ..
    } = ex;
    if wire::qdcount(&reply) == 0 {
        return Err(wire::rcode(&reply));
    }
    wire::strip_hop_by_hop(&mut reply, &mut info);
    let ttl = match failover {
        Failover::AfterFailure => info.cache_ttl.unwrap_or(0).min(FAILURE_TTL),
        _ => info.cache_ttl.unwrap_or(0),
    };
    let passed_on_failure = verdict(&reply, &info) != Verdict::Final;
    let ttl = if passed_on_failure { FAILURE_TTL } else { ttl };
    wire::cap_ttls(
        &mut reply,
        &info.ttl_offsets,
        ttl.clamp(FAILURE_TTL, MAX_TTL),
    );
    let mut answer = Answer::new(reply, info.ttl_offsets, ttl, at).served_by(server);
    if passed_on_failure {
        answer = answer.failure();
    }
    Ok(Arc::new(match failover {
        Failover::AfterDown => answer.until_recovery(recoveries),
        _ => answer,
    }))
}
