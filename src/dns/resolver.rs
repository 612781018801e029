//! The router of a query's flow: packet in, reply out. It reads the query in place, then asks
//! local names, then the cache, then the forwarder along the route — the order a query meets
//! them. Listeners call `answer_now` (everything that needs no waiting, done inline) and
//! `answer_from` for the rest; each query answered is reported (`dns::observe`).

use crate::dns::acl::Acl;
use crate::dns::cache::{Answer, CacheKey, Generation};
use crate::dns::forward::{Forwarder, Outcome};
use crate::dns::local::{LocalNames, LocalVerdict};
use crate::dns::observe::Arrival;
use crate::dns::router::{Route, RoutingTable};
use crate::dns::trace::Trace;
use crate::dns::transport::{Exchanger, Network};
use crate::dns::wire::{self, Query, QueryProblem, Rcode};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

pub use crate::dns::served::{Source, Transport};

/// What can be said about a query without waiting.
// Returned once per packet and consumed at once; boxing the query would cost an allocation
// on every forwarded query to save a copy of a few hundred bytes.
#[allow(clippy::large_enum_variant)]
pub enum Immediate {
    /// A reply built here, and where it came from (local data, REFUSED, an error).
    Reply(Vec<u8>, Source),
    /// A cache hit: the caller renders it (into a buffer it reuses).
    Cached(Arc<Answer>, Query),
    /// No reply: the packet is dropped (not a query that can be answered, even with an error).
    Drop,
    /// Needs the forwarder: the query, its route, and the cache's generation the route was
    /// read in.
    Forward(Query, Route, Generation),
}

/// A forwarded query's reply, and the upstream server it came from (None when no server
/// gave it: SERVFAIL).
pub(crate) struct Forwarded {
    pub(crate) reply: Vec<u8>,
    pub(crate) upstream: Option<SocketAddr>,
}

/// Answers client queries: after the ACL, from the cache, local names or routing table, and
/// failing those through the forwarder.
pub struct Resolver<X: Exchanger = Network> {
    /// Read on every packet, replaced when interfaces change: lock-free reads.
    acl: ArcSwap<Acl>,
    /// Read for every query not answered from the cache, replaced when leases, static
    /// records or hosts files change.
    local: ArcSwap<LocalNames>,
    /// Read likewise, replaced when resolv.conf, the VPN's domains or the configuration do.
    routes: ArcSwap<RoutingTable>,
    forwarder: Arc<Forwarder<X>>,
}

impl<X: Exchanger> Resolver<X> {
    /// A resolver from its parts.
    pub fn new(
        acl: Acl,
        local: LocalNames,
        routes: RoutingTable,
        forwarder: Forwarder<X>,
    ) -> Resolver<X> {
        Resolver {
            acl: ArcSwap::from_pointee(acl),
            local: ArcSwap::from_pointee(local),
            routes: ArcSwap::from_pointee(routes),
            forwarder: Arc::new(forwarder),
        }
    }

    pub(crate) fn routes(&self) -> Arc<RoutingTable> {
        self.routes.load_full()
    }

    pub(crate) fn local(&self) -> Arc<LocalNames> {
        self.local.load_full()
    }

    /// Swaps the routing table; answers cached under the old one are dropped.
    pub(crate) fn set_routes(&self, routes: RoutingTable) {
        self.routes.store(Arc::new(routes));
        self.forwarder.cache().clear();
    }

    /// Swaps local data; cached answers go too, since a name may have become local.
    pub(crate) fn set_local(&self, local: LocalNames) {
        self.local.store(Arc::new(local));
        self.forwarder.cache().clear();
    }

    pub(crate) fn forwarder(&self) -> &Arc<Forwarder<X>> {
        &self.forwarder
    }

    /// Whether a client at `ip` is answered at all.
    pub(crate) fn admits(&self, ip: std::net::IpAddr) -> bool {
        self.acl.load().admits(ip)
    }

    pub(crate) fn acl(&self) -> Arc<Acl> {
        self.acl.load_full()
    }

    pub(crate) fn set_acl(&self, acl: Acl) {
        self.acl.store(Arc::new(acl));
    }

    /// The answer for a client that is not admitted: REFUSED, if the query can be read.
    pub fn refuse(&self, packet: &[u8]) -> Immediate {
        match wire::parse_query(packet) {
            Ok(q) => Immediate::Reply(
                wire::header_only_reply(packet, Some(&q), Rcode::REFUSED, false),
                Source::Refused,
            ),
            Err(_) => Immediate::Drop,
        }
    }

    /// Parses and answers whatever needs no upstream: errors, local data, cache hits (as of
    /// `now`).
    pub fn answer_now(&self, packet: &[u8], transport: Transport, now: Instant) -> Immediate {
        let q = match wire::parse_query(packet) {
            Ok(q) => q,
            Err(QueryProblem::Drop(why)) => {
                tracing::debug!(%why, "dropping packet");
                return Immediate::Drop;
            }
            Err(QueryProblem::Answer(code, why)) => {
                tracing::debug!(%why, "answering {code}");
                return Immediate::Reply(
                    wire::header_only_reply(packet, None, code, false),
                    Source::Invalid,
                );
            }
        };
        if q.edns.is_some_and(|e| e.version > 0) {
            return Immediate::Reply(wire::badvers_reply(packet, &q), Source::Invalid);
        }
        // The cache holds only forwarded answers and is emptied whenever local data changes,
        // so asking it first cannot shadow a local name; it spares the hit path the local
        // lookup.
        if let Some(answer) = self.forwarder.cached(&CacheKey::of(&q), now) {
            return Immediate::Cached(answer, q);
        }
        // Read before local data and routes: `set_local` and `set_routes` swap those, then
        // empty the cache, so an answer sought under the old ones is not kept.
        let sought = self.forwarder.cache().generation();
        let name = q.name.dotted();
        let name = name.as_str();
        if let LocalVerdict::Answer(reply, _) = self.local.load().answer(packet, &q, name) {
            return Immediate::Reply(fit(reply, packet, &q, transport), Source::Local);
        }
        match self.routes.load().route(name) {
            Route::PlainNameStaysLocal => Immediate::Reply(
                wire::header_only_reply(packet, Some(&q), Rcode::NXDOMAIN, false),
                Source::Local,
            ),
            route => Immediate::Forward(q, route, sought),
        }
    }

    /// The complete answer to a query, or None when it is dropped.
    #[cfg(test)]
    pub(crate) async fn answer(&self, packet: &[u8], transport: Transport) -> Option<Vec<u8>> {
        self.answer_from(None, packet, transport).await
    }

    /// `answer` for a query from `client`, reported (`dns::observe`).
    pub(crate) async fn answer_from(
        &self,
        client: Option<SocketAddr>,
        packet: &[u8],
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let arrival = Arrival::new(transport, client);
        let now = Instant::now();
        let (reply, source, upstream) = match self.answer_now(packet, transport, now) {
            Immediate::Reply(reply, source) => (reply, source, None),
            Immediate::Cached(answer, q) => {
                let reply = answer.render(packet, &q, limit(&q, transport), now);
                (reply, Source::Cache, None)
            }
            Immediate::Drop => {
                arrival.dropped();
                return None;
            }
            Immediate::Forward(q, route, sought) => {
                let forwarded = self.forward(packet, q, route, sought, transport).await;
                (forwarded.reply, Source::Forwarded, forwarded.upstream)
            }
        };
        arrival.answered(packet, source, &reply, upstream);
        Some(reply)
    }

    pub(crate) async fn forward(
        &self,
        packet: &[u8],
        q: Query,
        route: Route,
        sought: Generation,
        transport: Transport,
    ) -> Forwarded {
        let _in_flight = crate::metrics::forwarding();
        let Route::Forward {
            servers, options, ..
        } = route
        else {
            return stays_local(packet, &q);
        };
        let outcome = self
            .forwarder
            .resolve(packet, &q, &servers, options, sought)
            .await;
        forwarded(outcome, packet, &q, transport)
    }

    /// `forward` with the reply handed to `send` (with the query's bytes) rather than
    /// returned, from wherever the walk ends (`Forwarder::forward`): in the upstream reader's
    /// wake-up when the first server's reply ends it, as it does for most names. `now` is the
    /// time the query's batch was read.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_then<S>(
        &self,
        packet: Vec<u8>,
        q: Query,
        route: Route,
        sought: Generation,
        transport: Transport,
        now: Instant,
        send: S,
    ) where
        S: FnOnce(&[u8], Forwarded) + Send + 'static,
    {
        let in_flight = crate::metrics::forwarding();
        let Route::Forward {
            servers, options, ..
        } = route
        else {
            return send(&packet, stays_local(&packet, &q));
        };
        let then = move |outcome: Outcome, packet: &[u8], q: &Query| {
            send(packet, forwarded(outcome, packet, q, transport));
            drop(in_flight);
        };
        self.forwarder
            .forward(packet, q, &servers, options, sought, now, then);
    }

    /// Resolves like `answer`, bypassing the cache, and records every decision.
    pub async fn explain(&self, packet: &[u8]) -> (Option<Vec<u8>>, Trace) {
        let mut trace = Trace::on();
        let q = match wire::parse_query(packet) {
            Ok(q) => q,
            Err(e) => {
                trace.note(|| format!("query unreadable: {e:?}"));
                return (None, trace);
            }
        };
        let name = q.name.to_dotted();
        if let LocalVerdict::Answer(reply, why) = self.local().answer(packet, &q, &name) {
            trace.note(|| why.to_string());
            return (Some(reply), trace);
        }
        trace.note(|| format!("{name} is not in local data"));
        match self.routes().route(&name) {
            Route::PlainNameStaysLocal => {
                trace.note(|| {
                    "single-label name and forward_plain_names = false: NXDOMAIN, not forwarded"
                        .into()
                });
                let reply = wire::header_only_reply(packet, Some(&q), Rcode::NXDOMAIN, false);
                (Some(reply), trace)
            }
            Route::Forward {
                servers,
                rule,
                options,
            } => {
                let list: Vec<String> = servers.iter().map(|s| s.addr.to_string()).collect();
                trace.note(|| format!("rule: {rule}; servers in order: {}", list.join(", ")));
                let outcome = self
                    .forwarder
                    .walk(packet, &q, &servers, options, &mut trace)
                    .await;
                (Some(render(outcome, packet, &q, Transport::Tcp)), trace)
            }
        }
    }
}

/// The largest reply `transport` can carry to this client.
pub fn limit(q: &Query, transport: Transport) -> usize {
    match transport {
        Transport::Udp => q.udp_limit(),
        Transport::Tcp => u16::MAX as usize,
    }
}

/// The reply for a query whose name is not forwarded (a plain name kept local): NXDOMAIN.
fn stays_local(packet: &[u8], q: &Query) -> Forwarded {
    Forwarded {
        reply: wire::header_only_reply(packet, Some(q), Rcode::NXDOMAIN, false),
        upstream: None,
    }
}

/// A walk's outcome as the reply to the client, and the server it came from.
fn forwarded(outcome: Outcome, packet: &[u8], q: &Query, transport: Transport) -> Forwarded {
    let upstream = outcome.as_ref().ok().and_then(|a| a.server());
    Forwarded {
        reply: render(outcome, packet, q, transport),
        upstream,
    }
}

/// The reply for a walk's outcome, aged from when its answer was stored: as the walk ended,
/// with its final reply or as it gave up (or, for an answer the walk found in the cache as it
/// began, as a walk that ended since this query missed the cache did). So there is no time
/// to age its TTLs by, and no clock to read.
fn render(outcome: Outcome, packet: &[u8], q: &Query, transport: Transport) -> Vec<u8> {
    match outcome {
        Ok(answer) => answer.render(packet, q, limit(q, transport), answer.stored()),
        Err(code) => wire::header_only_reply(packet, Some(q), code, false),
    }
}

/// A locally built reply that is too large for the client's UDP buffer becomes TC.
fn fit(reply: Vec<u8>, packet: &[u8], q: &Query, transport: Transport) -> Vec<u8> {
    if reply.len() <= limit(q, transport) {
        reply
    } else {
        let mut t = wire::header_only_reply(packet, Some(q), wire::rcode(&reply), true);
        wire::set_aa(&mut t, true);
        t
    }
}

#[cfg(test)]
mod tests;
