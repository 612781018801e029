//! What the serving path reports of each client query, in one call: it is counted
//! (`crate::metrics`) and, while the query log is on, logged (`dns::querylog`). An `Arrival`
//! is taken when the query comes in and told how it was answered when the reply goes out.

use crate::dns::querylog;
use crate::dns::served::{Source, Transport};
use crate::dns::wire;
use std::net::SocketAddr;
use std::time::Instant;

/// A client query that came in; `Copy`, so a forwarded query's task takes it along.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    transport: Transport,
    client: Option<SocketAddr>,
    /// When it came in, if the query log is on.
    started: Option<Instant>,
}

impl Arrival {
    /// A query that came in now over `transport`, from `client` when known.
    #[inline]
    pub fn new(transport: Transport, client: Option<SocketAddr>) -> Arrival {
        Arrival {
            transport,
            client,
            started: querylog::start(),
        }
    }

    /// `query` was answered from `source` with `reply` (from `upstream`, if forwarded).
    #[inline]
    pub fn answered(
        &self,
        query: &[u8],
        source: Source,
        reply: &[u8],
        upstream: Option<SocketAddr>,
    ) {
        let rcode = wire::rcode(reply);
        crate::metrics::answered(self.transport, source, rcode);
        if let Some(started) = self.started {
            querylog::log(querylog::Entry {
                client: self.client,
                query,
                transport: self.transport,
                source,
                upstream,
                rcode,
                took: started.elapsed(),
            });
        }
    }

    /// The packet gets no answer.
    pub(crate) fn dropped(&self) {
        crate::metrics::dropped(self.transport);
    }
}
