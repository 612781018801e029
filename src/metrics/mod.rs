//! Metrics for Prometheus (`[metrics] listen`). The serving path bumps counters kept per
//! thread (`shard`; the calls it makes are `record`'s, re-exported here), so counting takes
//! no lock and shares no cache line between cores; everything else is read from the parts
//! when scraped (`scrape`): the cache's size, what is known of each upstream, each DHCP
//! range's addresses, the name publisher's progress. `render` turns a scrape into the Prometheus text format; `endpoint`
//! serves it over HTTP. Counters are the process's: one virtdns serves one network per
//! process.

pub(crate) mod endpoint;
pub(crate) mod record;
pub(crate) mod render;
pub(crate) mod shard;

pub(crate) use record::{
    answered, dhcp, dropped, forwarding, lease_commit, started, totals, upstream_exchange,
};

use crate::dhcp::service::Serving;
use crate::server::Server;
use render::{Snapshot, UpstreamState};

/// A scrape: the counters summed and the parts read now, rendered.
pub(crate) fn scrape(server: &Server, dhcp: &Serving, publish: Option<&PublishView>) -> String {
    let upstreams = server
        .upstreams()
        .iter()
        .map(|u| UpstreamState {
            addr: u.addr,
            up: !u.is_down(),
            srtt: u.srtt(),
        })
        .collect();
    render::render(Snapshot {
        totals: totals(),
        cache: server.resolver().forwarder().cache().stats(),
        upstreams,
        dhcp_ranges: dhcp.get().map(|d| d.usage()).unwrap_or_default(),
        started: started(),
        version: env!("CARGO_PKG_VERSION"),
        query_log: crate::dns::querylog::is_on(),
        publish: publish.map(PublishView::state),
    })
}

/// What a scrape reads of the name publisher.
#[derive(Clone)]
pub(crate) struct PublishView {
    pub(crate) progress: std::sync::Arc<std::sync::Mutex<crate::publish::publisher::Progress>>,
    pub(crate) primaries: std::sync::Arc<crate::publish::primary::Primaries>,
}

impl PublishView {
    fn state(&self) -> render::PublishState {
        let p = self.progress.lock().unwrap().clone();
        render::PublishState {
            applied: p.applied,
            failed: p.failed,
            conflicts: p.conflicts,
            pending: p.pending,
            servers: self.primaries.health(),
        }
    }
}

/// The endpoint `[metrics]` asks for, its address bound: bound before the DNS sockets, so it
/// answers as soon as DNS does, and a bad address stops the start before anything serves.
pub(crate) struct Endpoint {
    listener: tokio::net::TcpListener,
}

impl Endpoint {
    /// None without `[metrics]`. A later `[metrics]` takes effect at the next start.
    pub(crate) async fn bind(config: &crate::config::Config) -> Result<Option<Endpoint>, String> {
        let Some(metrics) = &config.metrics else {
            return Ok(None);
        };
        let listener = endpoint::bind(metrics.listen.0).await?;
        tracing::info!("metrics at http://{}/metrics", metrics.listen.0);
        Ok(Some(Endpoint { listener }))
    }

    /// Serves scrapes of `server` and `dhcp` until `cancel` fires.
    pub(crate) async fn serve(
        self,
        server: std::sync::Arc<Server>,
        dhcp: std::sync::Arc<Serving>,
        publish: Option<PublishView>,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<(), String> {
        let scrape: endpoint::Scrape =
            std::sync::Arc::new(move || scrape(&server, &dhcp, publish.as_ref()));
        endpoint::serve(self.listener, scrape, cancel).await
    }
}
