//! Split-domain discovery: for each search domain of resolv.conf, ask every nameserver for the
//! domain's SOA and route the domain to the servers that know it, in resolv.conf order. This
//! makes the classic VPN layout (an internal server and a general one) work with no
//! configuration whichever is listed first, even when the general server answers NXDOMAIN
//! for the internal domain: a server that says the search domain does not exist, while
//! another serves it, gives the host a provably wrong answer for its own search domain.
//!
//! A server knows the domain when it answers NOERROR with the SOA in the answer section. A
//! route is made only when it narrows the list; the servers that know a domain also learn it
//! as one of their zones (`Upstream::serves`). The default order is never changed here.

use crate::dns::guard;
use crate::dns::probe::probe_query;
use crate::dns::router::{DomainRoute, RouteSource};
use crate::dns::transport::{Exchanger, Protocol};
use crate::dns::upstream::Upstream;
use crate::dns::wire::{self, Rcode};
use std::sync::Arc;
use std::time::Duration;

/// How one server answered the SOA probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Knows {
    Authoritative,
    Recursive,
    /// Answered, but not with the domain's SOA.
    No(Rcode),
    /// No usable reply: worth asking again later.
    Silent(String),
}

impl Knows {
    fn knows(&self) -> bool {
        matches!(self, Knows::Authoritative | Knows::Recursive)
    }
}

/// The result for one domain, kept for `check` and `explain`.
#[derive(Debug, Clone)]
pub struct Probe {
    pub(crate) domain: String,
    pub(crate) answers: Vec<(std::net::SocketAddr, Knows)>,
    pub(crate) route: Option<DomainRoute>,
}

/// Probes every domain on every server, and records in each server the domains it knows.
pub(crate) async fn discover<X: Exchanger>(
    exchanger: &X,
    domains: &[String],
    servers: &[Arc<Upstream>],
    timeout: Duration,
) -> Vec<Probe> {
    let probes = domains
        .iter()
        .map(|d| probe_domain(exchanger, d, servers, timeout));
    let probes = futures_util::future::join_all(probes).await;
    for server in servers {
        let zones = probes
            .iter()
            .filter(|p| {
                p.answers
                    .iter()
                    .any(|(a, k)| *a == server.addr && k.knows())
            })
            .map(|p| p.domain.clone())
            .collect();
        server.set_zones(zones);
    }
    probes
}

async fn probe_domain<X: Exchanger>(
    exchanger: &X,
    domain: &str,
    servers: &[Arc<Upstream>],
    timeout: Duration,
) -> Probe {
    let asks = servers
        .iter()
        .map(|s| ask_soa(exchanger, s, domain, timeout));
    let knows = futures_util::future::join_all(asks).await;
    let chosen: Vec<Arc<Upstream>> = servers
        .iter()
        .zip(&knows)
        .filter(|(_, k)| k.knows())
        .map(|(s, _)| s.clone())
        .collect();
    let narrows = !chosen.is_empty() && chosen.len() < servers.len();
    Probe {
        route: narrows.then(|| DomainRoute {
            domain: domain.into(),
            servers: chosen.into(),
            source: RouteSource::Discovered,
        }),
        answers: servers.iter().map(|s| s.addr).zip(knows).collect(),
        domain: domain.to_string(),
    }
}

async fn ask_soa<X: Exchanger>(
    exchanger: &X,
    server: &Upstream,
    domain: &str,
    timeout: Duration,
) -> Knows {
    let Some((query, q)) = probe_query(domain, wire::TYPE_SOA) else {
        return Knows::No(Rcode::FORMERR);
    };
    match guard::ask(exchanger, server, &query, &q, Protocol::Udp, true, timeout).await {
        Ok(ex) if wire::rcode(&ex.reply) == Rcode::NOERROR && ex.info.answers > 0 => {
            if wire::aa(&ex.reply) {
                Knows::Authoritative
            } else {
                Knows::Recursive
            }
        }
        Ok(ex) => Knows::No(wire::rcode(&ex.reply)),
        Err(e) => Knows::Silent(e.to_string()),
    }
}

impl Probe {
    /// A server did not answer: discovery should run again later.
    pub(crate) fn incomplete(&self) -> bool {
        self.answers
            .iter()
            .any(|(_, k)| matches!(k, Knows::Silent(_)))
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "search domain {}:", self.domain)?;
        for (addr, knows) in &self.answers {
            let k = match knows {
                Knows::Authoritative => "authoritative".to_string(),
                Knows::Recursive => "answers (not authoritative)".to_string(),
                Knows::No(code) => format!("does not know it ({code})"),
                Knows::Silent(why) => format!("did not answer ({why})"),
            };
            write!(f, " {addr} {k};")?;
        }
        match &self.route {
            Some(r) => {
                let list: Vec<String> = r.servers.iter().map(|s| s.addr.to_string()).collect();
                write!(f, " routed to {}", list.join(", "))
            }
            None => write!(f, " no route needed"),
        }
    }
}
