//! Forwarding one question with the host's semantics (glibc res_send): servers in order,
//! REFUSED, SERVFAIL, NOTIMP and referrals move on, NOERROR and NXDOMAIN answers are final,
//! silence moves on — but without the host's waits: down servers are skipped, timeouts follow
//! measured RTTs, identical concurrent questions share one upstream exchange, and the result
//! is cached.

use crate::dns::cache::{Answer, Cache, CacheKey, FAILURE_TTL, MAX_TTL};
use crate::dns::router::WalkOptions;
use crate::dns::trace::Trace;
use crate::dns::transport::{self, ExchangeError, Protocol};
use crate::dns::upstream::{Upstream, UpstreamPool};
use crate::dns::wire::{self, Query, rcode};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, oneshot};

/// What one upstream reply means for the walk.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Final,
    /// Try the next server; the reason is for logs and `explain`.
    Next(&'static str),
}

/// glibc's rule for a reply (resolv/res_send.c), on the full 12-bit RCODE (`info` has the
/// OPT's upper bits): a referral is NOERROR with no answer, AA=0, RA=0 and nothing in the
/// additional section but our OPT.
pub fn verdict(reply: &[u8], info: &wire::ReplyInfo) -> Verdict {
    if info.opt.is_some_and(|o| o.edns.rcode_high != 0) {
        return Verdict::Next("extended RCODE (EDNS error)");
    }
    let additional = wire::arcount(reply) - u16::from(info.opt.is_some());
    match wire::rcode(reply) {
        rcode::REFUSED => Verdict::Next("REFUSED"),
        rcode::SERVFAIL => Verdict::Next("SERVFAIL"),
        rcode::NOTIMP => Verdict::Next("NOTIMP"),
        rcode::NOERROR
            if wire::ancount(reply) == 0
                && additional == 0
                && !wire::aa(reply)
                && !wire::ra(reply) =>
        {
            Verdict::Next("referral (no answer, AA=0, RA=0)")
        }
        _ => Verdict::Final,
    }
}

/// The outcome shared by everyone who asked the same question.
pub type Outcome = Result<Arc<Answer>, u8>;

pub struct Forwarder {
    pool: UpstreamPool,
    cache: Cache,
    inflight: Mutex<HashMap<CacheKey, Vec<oneshot::Sender<Outcome>>>>,
    limit: Semaphore,
    rotation: AtomicUsize,
}

impl Forwarder {
    pub fn new(pool: UpstreamPool, cache_size: usize, max_inflight: usize) -> Forwarder {
        Forwarder {
            pool,
            cache: Cache::new(cache_size),
            inflight: Mutex::new(HashMap::new()),
            limit: Semaphore::new(max_inflight),
            rotation: AtomicUsize::new(0),
        }
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Resolves `q` through `servers`, or joins an identical exchange already in flight and
    /// shares its outcome. The first asker does the walk itself; if its task is dropped midway
    /// the others get SERVFAIL rather than wait forever.
    pub async fn resolve(
        self: &Arc<Self>,
        client: &[u8],
        q: &Query,
        servers: Vec<Arc<Upstream>>,
        options: WalkOptions,
    ) -> Outcome {
        let key = CacheKey::of(q);
        let joined = {
            let mut inflight = self.inflight.lock().unwrap();
            match inflight.get_mut(&key) {
                Some(waiters) => {
                    let (tx, rx) = oneshot::channel();
                    waiters.push(tx);
                    Some(rx)
                }
                None => {
                    inflight.insert(key, Vec::new());
                    None
                }
            }
        };
        if let Some(rx) = joined {
            return rx.await.unwrap_or(Err(rcode::SERVFAIL));
        }
        let Ok(_permit) = self.limit.try_acquire() else {
            tracing::warn!("too many queries in flight; answering SERVFAIL");
            self.finish(&key, Err(rcode::SERVFAIL));
            return Err(rcode::SERVFAIL);
        };
        let mut guard = FinishOnDrop {
            forwarder: self.clone(),
            key: Some(key),
        };
        let started = std::time::Instant::now();
        let outcome = self
            .walk(client, q, &servers, options, &mut Trace::off())
            .await;
        tracing::debug!(
            name = %q.name.to_dotted(),
            qtype = q.qtype,
            rcode = rcode::name(outcome.as_ref().map_or_else(|c| *c, |a| a.rcode())),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "forwarded"
        );
        guard.key = None;
        self.finish(&key, outcome.clone());
        outcome
    }

    fn finish(&self, key: &CacheKey, outcome: Outcome) {
        if let Ok(answer) = &outcome {
            self.cache.insert(*key, answer.clone());
        }
        let waiters = self
            .inflight
            .lock()
            .unwrap()
            .remove(key)
            .unwrap_or_default();
        for w in waiters {
            let _ = w.send(outcome.clone());
        }
    }

    /// The walk over the servers. Public so `explain` can run it with a trace on.
    pub async fn walk(
        &self,
        client: &[u8],
        q: &Query,
        servers: &[Arc<Upstream>],
        options: WalkOptions,
        trace: &mut Trace,
    ) -> Outcome {
        let order = self.order(servers, options, trace);
        if order.is_empty() {
            trace.note(|| "no upstream servers: SERVFAIL".into());
            return Err(rcode::SERVFAIL);
        }
        let (low, high) = self.pool.bounds();
        let bounds = (low, high.min(options.timeout_cap).max(low));
        let mut last_reply: Option<(Vec<u8>, wire::ReplyInfo)> = None;
        let mut pending = order;
        for attempt in 1..=options.attempts.max(1) {
            let mut timed_out = Vec::new();
            for server in &pending {
                let timeout = server.timeout(bounds);
                let result = self.ask(server, client, q, timeout).await;
                match result {
                    Ok(ex) => {
                        server.record_rtt(ex.rtt);
                        let v = verdict(&ex.reply, &ex.info);
                        trace.note(|| {
                            format!(
                                "asked {} (attempt {attempt}): {} {}, {} answer(s), {:.1} ms -> {}",
                                server.addr,
                                rcode::name(wire::rcode(&ex.reply)),
                                flags(&ex.reply),
                                ex.info.answers,
                                ex.rtt.as_secs_f64() * 1e3,
                                match v {
                                    Verdict::Final => "final".to_string(),
                                    Verdict::Next(why) => format!("{why}: next server"),
                                }
                            )
                        });
                        if v == Verdict::Final {
                            return stored(ex.reply, ex.info, false);
                        }
                        last_reply = Some((ex.reply, ex.info));
                    }
                    Err(e) => {
                        trace.note(|| {
                            format!(
                                "asked {} (attempt {attempt}): {e} -> next server",
                                server.addr
                            )
                        });
                        if !matches!(e, ExchangeError::Tcp(_)) {
                            self.pool.mark_down(server, &e.to_string());
                        }
                        if matches!(e, ExchangeError::Timeout(_)) {
                            timed_out.push(server.clone());
                        }
                    }
                }
            }
            pending = timed_out;
            if pending.is_empty() {
                break;
            }
        }
        match last_reply {
            Some((reply, info)) => {
                trace.note(|| {
                    format!(
                        "no server gave a final answer; passing on the last reply ({})",
                        rcode::name(wire::rcode(&reply))
                    )
                });
                stored(reply, info, true)
            }
            None => {
                trace.note(|| "no server answered: SERVFAIL".into());
                Err(rcode::SERVFAIL)
            }
        }
    }

    /// Servers in walk order: rotated if asked, live ones only unless all are down.
    fn order(
        &self,
        servers: &[Arc<Upstream>],
        options: WalkOptions,
        trace: &mut Trace,
    ) -> Vec<Arc<Upstream>> {
        let mut order = servers.to_vec();
        if options.rotate && !order.is_empty() {
            let start = self.rotation.fetch_add(1, Ordering::Relaxed) % order.len();
            order.rotate_left(start);
        }
        let live: Vec<_> = order.iter().filter(|s| !s.is_down()).cloned().collect();
        for s in order.iter().filter(|s| s.is_down()) {
            trace.note(|| {
                format!(
                    "skipping {}: marked down after a timeout, probed in the background",
                    s.addr
                )
            });
        }
        if live.is_empty() {
            if !order.is_empty() {
                trace.note(|| "every server is marked down: trying them all anyway".into());
            }
            order
        } else {
            live
        }
    }

    /// One server: UDP, then TCP if the reply was truncated, then without EDNS if the server
    /// rejected it with FORMERR.
    async fn ask(
        &self,
        server: &Upstream,
        client: &[u8],
        q: &Query,
        timeout: std::time::Duration,
    ) -> Result<transport::Exchange, ExchangeError> {
        let mut ex =
            transport::exchange(server.addr, client, q, Protocol::Udp, true, timeout).await?;
        if wire::rcode(&ex.reply) == rcode::FORMERR && ex.info.opt.is_none() {
            ex = transport::exchange(server.addr, client, q, Protocol::Udp, false, timeout).await?;
        }
        if wire::tc(&ex.reply) {
            let tcp_timeout = timeout.max(self.pool.bounds().1);
            // A server that answers over UDP is alive even if its TCP fails: not "down".
            return transport::exchange(server.addr, client, q, Protocol::Tcp, true, tcp_timeout)
                .await
                .map_err(|e| ExchangeError::Tcp(e.to_string()));
        }
        Ok(ex)
    }
}

/// Turns an accepted reply into a cacheable answer: OPT cut out, no TTL above how long it is
/// kept (RFC 2308 5: the SOA of a negative answer says no more than its lifetime). Failures
/// passed on to the client are remembered only briefly; a reply without its question
/// (FORMERR or NOTIMP from some servers) becomes a plain error.
fn stored(mut reply: Vec<u8>, mut info: wire::ReplyInfo, failure: bool) -> Outcome {
    if wire::qdcount(&reply) == 0 {
        return Err(wire::rcode(&reply));
    }
    wire::strip_opt(&mut reply, &mut info);
    let ttl = if failure {
        FAILURE_TTL
    } else {
        info.cache_ttl.unwrap_or(0)
    };
    wire::cap_ttls(
        &mut reply,
        &info.ttl_offsets,
        ttl.clamp(FAILURE_TTL, MAX_TTL),
    );
    Ok(Arc::new(Answer::new(reply, info.ttl_offsets, ttl)))
}

/// Completes an in-flight entry with SERVFAIL unless the leader completed it.
struct FinishOnDrop {
    forwarder: Arc<Forwarder>,
    key: Option<CacheKey>,
}

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.forwarder.finish(&key, Err(rcode::SERVFAIL));
        }
    }
}

fn flags(reply: &[u8]) -> String {
    let mut f = Vec::new();
    for (set, name) in [
        (wire::aa(reply), "aa"),
        (wire::tc(reply), "tc"),
        (wire::ra(reply), "ra"),
    ] {
        if set {
            f.push(name);
        }
    }
    format!("[{}]", f.join(" "))
}

#[cfg(test)]
mod tests;
