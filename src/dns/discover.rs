//! Split-domain discovery: for each search domain of resolv.conf, ask every nameserver for the
//! domain's SOA and route the domain to the servers that know it. This makes the classic VPN
//! layout (an internal server first, a general one second) work with no configuration, even
//! when the internal server answers NXDOMAIN for outside names.
//!
//! A server knows the domain when it answers NOERROR with the SOA in the answer section;
//! authoritative answers (AA) are preferred. A route is made only when it narrows the list:
//! if every server knows the domain, normal order already does the right thing.

use crate::dns::router::{DomainRoute, RouteSource};
use crate::dns::transport::{self, Protocol};
use crate::dns::upstream::Upstream;
use crate::dns::wire;
use std::sync::Arc;
use std::time::Duration;

/// How one server answered the SOA probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Knows {
    Authoritative,
    Recursive,
    /// Answered, but not with the domain's SOA (the RCODE).
    No(String),
    /// No usable reply: worth asking again later.
    Silent(String),
}

/// The result for one domain, kept for `check` and `explain`.
#[derive(Debug, Clone)]
pub struct Probe {
    pub domain: String,
    pub answers: Vec<(std::net::SocketAddr, Knows)>,
    pub route: Option<DomainRoute>,
}

pub async fn discover(
    domains: &[String],
    servers: &[Arc<Upstream>],
    timeout: Duration,
) -> Vec<Probe> {
    let probes = domains
        .iter()
        .map(|d| probe_domain(d.clone(), servers.to_vec(), timeout));
    futures_join_all(probes).await
}

async fn probe_domain(domain: String, servers: Vec<Arc<Upstream>>, timeout: Duration) -> Probe {
    let asks = servers
        .iter()
        .map(|s| ask_soa(s.addr, domain.clone(), timeout));
    let knows = futures_join_all(asks).await;
    let pick = |kind: &Knows| -> Vec<Arc<Upstream>> {
        servers
            .iter()
            .zip(&knows)
            .filter(|(_, k)| *k == kind)
            .map(|(s, _)| s.clone())
            .collect()
    };
    let mut chosen = pick(&Knows::Authoritative);
    if chosen.is_empty() {
        chosen = pick(&Knows::Recursive);
    }
    let narrows = !chosen.is_empty() && chosen.len() < servers.len();
    Probe {
        route: narrows.then(|| DomainRoute {
            domain: domain.clone(),
            servers: chosen,
            source: RouteSource::Discovered,
        }),
        answers: servers.iter().map(|s| s.addr).zip(knows).collect(),
        domain,
    }
}

async fn ask_soa(server: std::net::SocketAddr, domain: String, timeout: Duration) -> Knows {
    let Some(name) = wire::name_from_dotted(&domain) else {
        return Knows::No("bad name".into());
    };
    let query = wire::build_query(&name, wire::TYPE_SOA, 0);
    let Ok(q) = wire::parse_query(&query) else {
        return Knows::No("bad query".into());
    };
    match transport::exchange(server, &query, &q, Protocol::Udp, true, timeout).await {
        Ok(ex) if wire::rcode(&ex.reply) == wire::rcode::NOERROR && ex.info.answers > 0 => {
            if wire::aa(&ex.reply) {
                Knows::Authoritative
            } else {
                Knows::Recursive
            }
        }
        Ok(ex) => Knows::No(wire::rcode::name(wire::rcode(&ex.reply)).to_string()),
        Err(e) => Knows::Silent(e.to_string()),
    }
}

/// Runs futures concurrently and collects their results in order (tokio has no join_all).
async fn futures_join_all<F, T>(futures: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("discovery task panicked"));
    }
    out
}

impl Probe {
    /// A server did not answer: discovery should run again later.
    pub fn incomplete(&self) -> bool {
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
                Knows::No(why) => format!("does not know it ({why})"),
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
