//! The upstream pool: every server virtdns forwards to, with what it has learned about each —
//! a smoothed round-trip time that sets the per-attempt timeout, and whether it is down.
//!
//! A server that times out (or refuses the connection) is marked down: new queries skip it,
//! and a background probe asks it a question every `PROBE_INTERVAL` until it answers again.
//! When every server of a route is down, the health view is assumed wrong and all are tried.

use crate::dns::transport::{self, Protocol};
use crate::dns::wire;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// Timeout for a server we have no RTT for yet.
const INITIAL_RTT: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct Upstream {
    pub addr: SocketAddr,
    /// Smoothed RTT in microseconds (RFC 6298 style, gain 1/8).
    srtt_us: AtomicU32,
    down: AtomicBool,
    probing: AtomicBool,
}

impl Upstream {
    fn new(addr: SocketAddr) -> Upstream {
        Upstream {
            addr,
            srtt_us: AtomicU32::new(INITIAL_RTT.as_micros() as u32),
            down: AtomicBool::new(false),
            probing: AtomicBool::new(false),
        }
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    pub fn srtt(&self) -> Duration {
        Duration::from_micros(self.srtt_us.load(Ordering::Relaxed) as u64)
    }

    /// Per-attempt timeout: four smoothed RTTs, within `bounds`.
    pub fn timeout(&self, bounds: (Duration, Duration)) -> Duration {
        (self.srtt() * 4).clamp(bounds.0, bounds.1)
    }

    pub fn record_rtt(&self, rtt: Duration) {
        let sample = rtt.as_micros().min(u32::MAX as u128) as u32;
        let old = self.srtt_us.load(Ordering::Relaxed);
        let new = old - old / 8 + sample / 8;
        self.srtt_us.store(new, Ordering::Relaxed);
        self.down.store(false, Ordering::Relaxed);
    }
}

/// All upstreams by address, so that what is learned survives a resolv.conf reload.
#[derive(Debug, Clone)]
pub struct UpstreamPool {
    inner: Arc<PoolInner>,
}

#[derive(Debug)]
struct PoolInner {
    servers: Mutex<HashMap<SocketAddr, Arc<Upstream>>>,
    bounds: (Duration, Duration),
}

impl UpstreamPool {
    pub fn new(bounds: (Duration, Duration)) -> UpstreamPool {
        UpstreamPool {
            inner: Arc::new(PoolInner {
                servers: Mutex::new(HashMap::new()),
                bounds,
            }),
        }
    }

    pub fn bounds(&self) -> (Duration, Duration) {
        self.inner.bounds
    }

    pub fn get(&self, addr: SocketAddr) -> Arc<Upstream> {
        let mut servers = self.inner.servers.lock().unwrap();
        servers
            .entry(addr)
            .or_insert_with(|| Arc::new(Upstream::new(addr)))
            .clone()
    }

    /// Marks `server` down and starts probing it, unless a probe already runs.
    pub fn mark_down(&self, server: &Arc<Upstream>, why: &str) {
        if !server.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(server = %server.addr, why, "upstream marked down; skipping it until a probe answers");
        }
        if server.probing.swap(true, Ordering::Relaxed) {
            return;
        }
        let weak: Weak<Upstream> = Arc::downgrade(server);
        let max_wait = self.inner.bounds.1;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(probe_until_up(weak, max_wait));
        }
    }
}

/// Asks a down server `. NS` until any reply comes back (even REFUSED proves it is alive).
async fn probe_until_up(server: Weak<Upstream>, max_wait: Duration) {
    let root = wire::name_from_dotted("").expect("root name");
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    loop {
        tick.tick().await;
        let Some(up) = server.upgrade() else { return };
        if !up.is_down() {
            up.probing.store(false, Ordering::Relaxed);
            return;
        }
        let probe = wire::build_query(&root, wire::TYPE_NS, 0);
        let Ok(q) = wire::parse_query(&probe) else {
            return;
        };
        let result = transport::exchange(up.addr, &probe, &q, Protocol::Udp, false, max_wait).await;
        if let Ok(ex) = result {
            up.record_rtt(ex.rtt);
            up.probing.store(false, Ordering::Relaxed);
            tracing::info!(server = %up.addr, rtt = ?ex.rtt, "upstream answers again");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_follows_rtt_within_bounds() {
        let u = Upstream::new("127.0.0.1:53".parse().unwrap());
        let bounds = (Duration::from_millis(200), Duration::from_secs(2));
        assert_eq!(u.timeout(bounds), Duration::from_millis(400));
        for _ in 0..64 {
            u.record_rtt(Duration::from_micros(500));
        }
        assert_eq!(u.timeout(bounds), Duration::from_millis(200));
        for _ in 0..64 {
            u.record_rtt(Duration::from_secs(3));
        }
        assert_eq!(u.timeout(bounds), Duration::from_secs(2));
    }

    #[test]
    fn pool_keeps_state_per_address() {
        let pool = UpstreamPool::new((Duration::from_millis(200), Duration::from_secs(2)));
        let a = pool.get("127.0.0.1:53".parse().unwrap());
        a.down.store(true, Ordering::Relaxed);
        assert!(pool.get("127.0.0.1:53".parse().unwrap()).is_down());
        assert!(!pool.get("127.0.0.2:53".parse().unwrap()).is_down());
    }
}
