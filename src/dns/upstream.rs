//! The upstream pool: every server virtdns forwards to, with what it has learned about each.
//! This module holds that knowledge and nothing that does I/O (`dns::probe` gathers it):
//!
//! - a smoothed round-trip time, which sets the per-attempt timeout;
//! - whether it is down (no reply), and since when — new queries skip it until a background
//!   probe sees it answer again;
//! - what kind of server it is (`Capability`), from a probe of the root's NS set, with the
//!   probe's reply kept as evidence for `explain` and `check`; re-learned after
//!   `KNOWLEDGE_TTL`;
//! - the zones it is known to serve (split domains found by `dns::discover`);
//! - its spoofing defences (`dns::guard::Guard`): our client cookie for it and the server
//!   cookie it gave, whether it returns cookies, whether 0x20 is on for it, what was dropped.
//!
//! The pool also counts recoveries: an answer obtained only because a server was down is
//! cached with the count at the time, and is no longer served once any server has come back.

use crate::dns::guard::Guard;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a down server is probed.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// How long what a probe showed about a server is trusted before it is asked again.
pub(crate) const KNOWLEDGE_TTL: Duration = Duration::from_secs(30);
/// A reply that contradicts what a probe showed brings the next probe forward, but never
/// sooner than this after the last one.
pub(crate) const RELEARN_HOLDOFF: Duration = Duration::from_secs(5);
/// Timeout for a server we have no RTT for yet.
const INITIAL_RTT: Duration = Duration::from_millis(100);

/// What a server does with names outside its own zones, as its answer for the root's NS set
/// showed. Only `RefusesOutside` and `NotFullResolver` change how the walk treats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Capability {
    /// Not probed yet, or the probe was inconclusive (SERVFAIL, no reply): it keeps its place
    /// and every reply is taken by glibc's rules.
    Unknown,
    /// Recursion available and the root's NS set answered: a resolver for every name.
    FullResolver,
    /// REFUSED or a referral for the root: it does not recurse. glibc moves past it for any
    /// name outside its zones, so the next server is asked at the same time.
    RefusesOutside,
    /// Answers the root from data of its own (NXDOMAIN, NODATA, or an authoritative root
    /// without recursion): it cannot resolve outside names, and its negative answers for them
    /// give way to a later server's answer.
    NotFullResolver,
}

impl Capability {
    fn from_u8(v: u8) -> Capability {
        match v {
            1 => Capability::FullResolver,
            2 => Capability::RefusesOutside,
            3 => Capability::NotFullResolver,
            _ => Capability::Unknown,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Capability::Unknown => 0,
            Capability::FullResolver => 1,
            Capability::RefusesOutside => 2,
            Capability::NotFullResolver => 3,
        }
    }

    /// Whether names outside the server's zones may be sent to the next server at once.
    pub(crate) fn overlaps_next(self) -> bool {
        matches!(
            self,
            Capability::RefusesOutside | Capability::NotFullResolver
        )
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Capability::Unknown => "not known yet",
            Capability::FullResolver => "full resolver",
            Capability::RefusesOutside => "refuses names outside its zones",
            Capability::NotFullResolver => "not a full resolver",
        })
    }
}

/// The probe that showed a server's capability, for `explain` and `check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Evidence {
    /// The probe's reply, e.g. `. NS -> REFUSED [aa], 0 answer(s), 0.4 ms`.
    pub(crate) reply: String,
    pub(crate) at: Instant,
}

/// One upstream server and what is known of it: its RTT, whether it is down, and whether its
/// TCP works.
#[derive(Debug)]
pub struct Upstream {
    pub(crate) addr: SocketAddr,
    /// Smoothed RTT in microseconds (RFC 6298 style, gain 1/8); 0 until the first reply.
    srtt_us: AtomicU32,
    down: AtomicBool,
    down_since: Mutex<Option<(Instant, String)>>,
    probing: AtomicBool,
    /// Its TCP failed (no reply, refused, reset): truncated answers are not retried over
    /// TCP with it until a background TCP probe succeeds.
    tcp_down: AtomicBool,
    tcp_probing: AtomicBool,
    capability: AtomicU8,
    evidence: Mutex<Option<Evidence>>,
    learning: AtomicBool,
    /// A reply disagreed with the capability: probe again at the next chance.
    contradicted: AtomicBool,
    zones: Mutex<Arc<[String]>>,
    /// Cookies and 0x20 for this server.
    pub(crate) guard: Guard,
}

impl Upstream {
    fn new(addr: SocketAddr) -> Upstream {
        Upstream {
            addr,
            srtt_us: AtomicU32::new(0),
            down: AtomicBool::new(false),
            down_since: Mutex::new(None),
            probing: AtomicBool::new(false),
            tcp_down: AtomicBool::new(false),
            tcp_probing: AtomicBool::new(false),
            capability: AtomicU8::new(Capability::Unknown.as_u8()),
            evidence: Mutex::new(None),
            learning: AtomicBool::new(false),
            contradicted: AtomicBool::new(false),
            zones: Mutex::new(Arc::from(Vec::new())),
            guard: Guard::new(addr),
        }
    }

    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// When it was marked down and why, while it is down.
    pub(crate) fn down_since(&self) -> Option<(Instant, String)> {
        self.down_since.lock().unwrap().clone()
    }

    /// The smoothed RTT, or None before the first reply.
    pub(crate) fn srtt(&self) -> Option<Duration> {
        match self.srtt_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us as u64)),
        }
    }

    /// Per-attempt timeout: four smoothed RTTs, within `bounds`.
    pub(crate) fn timeout(&self, bounds: (Duration, Duration)) -> Duration {
        (self.srtt().unwrap_or(INITIAL_RTT) * 4).clamp(bounds.0, bounds.1)
    }

    /// Folds in an RTT sample. Returns true when this reply brought the server back up.
    pub(crate) fn record_rtt(&self, rtt: Duration) -> bool {
        let sample = (rtt.as_micros().min(u32::MAX as u128) as u32).max(1);
        // A plain load and store, not a compare-and-swap loop: every reply from this server,
        // on every core, lands here, and a sample lost to a race only slows the average.
        let srtt = match self.srtt_us.load(Ordering::Relaxed) {
            0 => sample,
            old => (old - old / 8 + sample / 8).max(1),
        };
        self.srtt_us.store(srtt, Ordering::Relaxed);
        // Written only when it changes, so the line is not bounced between cores per reply.
        let was_down =
            self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::Relaxed);
        if was_down {
            *self.down_since.lock().unwrap() = None;
        }
        was_down
    }

    /// Marks it down. Returns true if it was up until now.
    pub(crate) fn set_down(&self, why: &str) -> bool {
        let newly = !self.down.swap(true, Ordering::Relaxed);
        if newly {
            *self.down_since.lock().unwrap() = Some((Instant::now(), why.to_string()));
        }
        newly
    }

    /// Whether its TCP is known to fail.
    pub(crate) fn is_tcp_down(&self) -> bool {
        self.tcp_down.load(Ordering::Relaxed)
    }

    /// Marks its TCP failing. Returns true if it was working until now; the caller starts a
    /// TCP probe when `start_tcp_probing` lets it.
    pub(crate) fn set_tcp_down(&self) -> bool {
        !self.tcp_down.swap(true, Ordering::Relaxed)
    }

    pub(crate) fn set_tcp_up(&self) {
        self.tcp_down.store(false, Ordering::Relaxed);
    }

    /// Claims the background TCP probe; false if one already runs.
    pub(crate) fn start_tcp_probing(&self) -> bool {
        !self.tcp_probing.swap(true, Ordering::Relaxed)
    }

    pub(crate) fn stop_tcp_probing(&self) {
        self.tcp_probing.store(false, Ordering::Relaxed);
    }

    /// Claims the background probe; false if one already runs.
    pub(crate) fn start_probing(&self) -> bool {
        !self.probing.swap(true, Ordering::Relaxed)
    }

    pub(crate) fn stop_probing(&self) {
        self.probing.store(false, Ordering::Relaxed);
    }

    pub(crate) fn capability(&self) -> Capability {
        Capability::from_u8(self.capability.load(Ordering::Relaxed))
    }

    pub(crate) fn evidence(&self) -> Option<Evidence> {
        self.evidence.lock().unwrap().clone()
    }

    /// Records what a probe showed. Returns the capability it had before.
    fn learn(&self, capability: Capability, evidence: Evidence) -> Capability {
        let old = self.capability.swap(capability.as_u8(), Ordering::Relaxed);
        *self.evidence.lock().unwrap() = Some(evidence);
        Capability::from_u8(old)
    }

    /// Whether the capability should be probed (again): never probed, or learned longer than
    /// `KNOWLEDGE_TTL` ago. Claims the probe when it returns true.
    pub(crate) fn claim_learning(&self, now: Instant) -> bool {
        let stale = match &*self.evidence.lock().unwrap() {
            Some(e) => {
                let age = now.saturating_duration_since(e.at);
                age >= KNOWLEDGE_TTL
                    || (age >= RELEARN_HOLDOFF && self.contradicted.load(Ordering::Relaxed))
            }
            None => true,
        };
        if stale && !self.learning.swap(true, Ordering::Relaxed) {
            self.contradicted.store(false, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Forces the next `claim_learning` to succeed (a reply contradicted what was learned).
    pub(crate) fn forget_capability(&self) {
        self.contradicted.store(true, Ordering::Relaxed);
    }

    pub(crate) fn learning_done(&self) {
        self.learning.store(false, Ordering::Relaxed);
    }

    /// The zones this server is known to serve (lower-case, no trailing dot).
    pub(crate) fn zones(&self) -> Arc<[String]> {
        self.zones.lock().unwrap().clone()
    }

    pub(crate) fn set_zones(&self, zones: Vec<String>) {
        *self.zones.lock().unwrap() = Arc::from(zones);
    }

    /// Whether the query's name lies in one of its known zones (no work when it knows none).
    pub(crate) fn serves_query(&self, q: &crate::dns::wire::Query) -> bool {
        let zones = self.zones();
        !zones.is_empty() && {
            let name = q.name.to_dotted();
            zones.iter().any(|z| crate::dns::local::is_within(&name, z))
        }
    }

    /// Whether `name` (dotted, lower-case) lies in one of its known zones.
    #[cfg(test)]
    pub(crate) fn serves(&self, name: &str) -> bool {
        self.zones
            .lock()
            .unwrap()
            .iter()
            .any(|z| crate::dns::local::is_within(name, z))
    }
}

/// One line of what is known: `addr: up, srtt 0.4 ms; full resolver (probe ...); zones: ...;
/// cookies: ...; 0x20: ...; replies dropped: ...`.
impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.addr)?;
        match self.down_since() {
            Some((since, why)) => write!(
                f,
                "down for {:.1} s ({why}), probed every {:.1} s",
                since.elapsed().as_secs_f64(),
                PROBE_INTERVAL.as_secs_f64()
            )?,
            None => match self.srtt() {
                Some(srtt) => write!(f, "up, srtt {:.1} ms", srtt.as_secs_f64() * 1e3)?,
                None => write!(f, "up, no reply yet")?,
            },
        }
        write!(f, "; {}", self.capability())?;
        match self.evidence() {
            Some(e) => write!(
                f,
                " (probe {}, {:.0} s ago)",
                e.reply,
                e.at.elapsed().as_secs_f64()
            )?,
            None => write!(f, " (not probed yet)")?,
        }
        let zones = self.zones();
        if zones.is_empty() {
            write!(f, "; zones: none known")?;
        } else {
            write!(f, "; zones: {}", zones.join(", "))?;
        }
        write!(f, "; {}", self.guard)
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
    recoveries: AtomicU64,
    /// Bumped whenever a server becomes, or stops being, known as not a full resolver: the
    /// only change of knowledge that changes answers, so answers cached before it may differ
    /// from what the walk gives now.
    lessons: AtomicU64,
}

impl UpstreamPool {
    /// An empty pool; per-attempt timeouts stay within `bounds` (least, most).
    pub fn new(bounds: (Duration, Duration)) -> UpstreamPool {
        UpstreamPool {
            inner: Arc::new(PoolInner {
                servers: Mutex::new(HashMap::new()),
                bounds,
                recoveries: AtomicU64::new(0),
                lessons: AtomicU64::new(0),
            }),
        }
    }

    pub(crate) fn bounds(&self) -> (Duration, Duration) {
        self.inner.bounds
    }

    /// The server at `addr`, added on first use.
    pub fn get(&self, addr: SocketAddr) -> Arc<Upstream> {
        let mut servers = self.inner.servers.lock().unwrap();
        servers
            .entry(addr)
            .or_insert_with(|| Arc::new(Upstream::new(addr)))
            .clone()
    }

    /// Forgets every server not in `keep`: once no routing table holds it either, its
    /// background probe ends (it holds only a weak reference).
    pub(crate) fn retain(&self, keep: &[SocketAddr]) {
        self.inner
            .servers
            .lock()
            .unwrap()
            .retain(|addr, _| keep.contains(addr));
    }

    /// Every server the pool knows, in address order.
    pub(crate) fn all(&self) -> Vec<Arc<Upstream>> {
        let mut all: Vec<_> = self
            .inner
            .servers
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect();
        all.sort_by_key(|s| s.addr);
        all
    }

    /// How many times a down server has come back; bumped by `record_reply`.
    pub(crate) fn recoveries(&self) -> u64 {
        self.inner.recoveries.load(Ordering::Acquire)
    }

    /// How many times a server's knowledge changed in a way that changes answers.
    pub(crate) fn lessons(&self) -> u64 {
        self.inner.lessons.load(Ordering::Acquire)
    }

    /// Records what a probe showed about `server`.
    pub(crate) fn learn(&self, server: &Upstream, capability: Capability, evidence: Evidence) {
        let reply = evidence.reply.clone();
        let old = server.learn(capability, evidence);
        if old == capability {
            return;
        }
        tracing::info!(server = %server.addr, %capability, probe = %reply, "learned what the upstream is");
        let not_full = Capability::NotFullResolver;
        if (old == not_full) != (capability == not_full) {
            self.inner.lessons.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Records a reply from `server`; returns true when it brought the server back up.
    pub(crate) fn record_reply(&self, server: &Upstream, rtt: Duration) -> bool {
        let recovered = server.record_rtt(rtt);
        if recovered {
            self.inner.recoveries.fetch_add(1, Ordering::AcqRel);
            tracing::info!(server = %server.addr, ?rtt, "upstream answers again");
        }
        recovered
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
    fn pool_keeps_state_per_address_and_counts_recoveries() {
        let pool = UpstreamPool::new((Duration::from_millis(200), Duration::from_secs(2)));
        let a = pool.get("127.0.0.1:53".parse().unwrap());
        assert!(a.set_down("no reply"));
        assert!(!a.set_down("no reply"), "already down");
        assert!(pool.get("127.0.0.1:53".parse().unwrap()).is_down());
        assert!(!pool.get("127.0.0.2:53".parse().unwrap()).is_down());
        assert_eq!(a.down_since().unwrap().1, "no reply");
        assert_eq!(pool.recoveries(), 0);
        assert!(pool.record_reply(&a, Duration::from_millis(1)));
        assert!(!pool.record_reply(&a, Duration::from_millis(1)));
        assert_eq!(pool.recoveries(), 1);
        assert!(!a.is_down() && a.down_since().is_none());
    }

    #[test]
    fn knowledge_is_relearned_after_its_ttl_or_when_contradicted() {
        let u = Upstream::new("127.0.0.1:53".parse().unwrap());
        let t0 = Instant::now();
        assert!(u.claim_learning(t0), "never probed");
        assert!(!u.claim_learning(t0), "a probe already runs");
        let pool = UpstreamPool::new((Duration::from_millis(200), Duration::from_secs(2)));
        pool.learn(
            &u,
            Capability::RefusesOutside,
            Evidence {
                reply: ". NS -> REFUSED".into(),
                at: t0,
            },
        );
        u.learning_done();
        assert!(!u.claim_learning(t0 + Duration::from_secs(1)));
        assert!(u.claim_learning(t0 + KNOWLEDGE_TTL));
        u.learning_done();
        u.forget_capability();
        assert!(!u.claim_learning(t0 + Duration::from_secs(1)), "held off");
        assert!(u.claim_learning(t0 + RELEARN_HOLDOFF));
        assert_eq!(u.capability(), Capability::RefusesOutside);
        assert_eq!(pool.lessons(), 0, "refusing changes no answer");
        let evidence = Evidence {
            reply: ". NS -> NXDOMAIN".into(),
            at: t0,
        };
        pool.learn(&u, Capability::NotFullResolver, evidence);
        assert_eq!(pool.lessons(), 1, "not a full resolver changes answers");
    }

    #[test]
    fn serves_only_its_zones() {
        let u = Upstream::new("127.0.0.1:53".parse().unwrap());
        u.set_zones(vec!["corp.example".into()]);
        assert!(u.serves("corp.example"));
        assert!(u.serves("wiki.corp.example"));
        assert!(!u.serves("notcorp.example"));
        assert!(!u.serves("example.com"));
    }
}
