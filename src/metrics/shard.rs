//! Counters kept per thread and summed when scraped: each thread bumps its own `Shard` (a plain
//! load and store of its own cells: no locked instruction, no cache line shared with another
//! core), and a scrape adds every shard up (`Shards::totals`). A thread that ends leaves its
//! counts behind in the set's retired sum, so no count is lost and no memory kept for it.
//!
//! The layout of the cells (which counter is where) is this module's too: `Slot` names one.

use crate::dns::rcode::Rcode;
use crate::dns::served::{Source, Transport};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// RCODEs counted apart: the 4-bit header code.
pub(crate) const RCODES: usize = 16;
/// DHCP message types counted apart (option 53 values 1 to 8); 0 holds every other one.
pub(crate) const DHCP_KINDS: [&str; 9] = [
    "other", "discover", "offer", "request", "decline", "ack", "nak", "release", "inform",
];
/// Upper bounds of the lease store's commit latency buckets, in seconds (+Inf follows).
pub(crate) const COMMIT_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
];

/// Whether a DHCP message came in or went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Received,
    Sent,
}

impl Direction {
    pub(crate) const ALL: [Direction; 2] = [Direction::Received, Direction::Sent];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Direction::Received => "received",
            Direction::Sent => "sent",
        }
    }
}

const QUERIES: usize = 0;
const DROPPED: usize = QUERIES + Transport::ALL.len() * Source::ALL.len() * RCODES;
const FORWARDS_BEGUN: usize = DROPPED + Transport::ALL.len();
const FORWARDS_DONE: usize = FORWARDS_BEGUN + 1;
const DHCP: usize = FORWARDS_DONE + 1;
const COMMITS: usize = DHCP + Direction::ALL.len() * DHCP_KINDS.len();
/// Per bucket (not cumulative), then +Inf.
const COMMIT_SUM_US: usize = COMMITS + COMMIT_BUCKETS.len() + 1;
const COMMIT_COUNT: usize = COMMIT_SUM_US + 1;
const CELLS: usize = COMMIT_COUNT + 1;

/// Per upstream: each RCODE, then timeouts, then other failures.
const UPSTREAM_TIMEOUT: usize = RCODES;
const UPSTREAM_ERROR: usize = RCODES + 1;
const UPSTREAM_CELLS: usize = RCODES + 2;

/// One counter's place among a shard's cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Slot(usize);

impl Slot {
    /// Client queries answered, by transport, source and RCODE.
    pub(crate) fn query(transport: Transport, source: Source, rcode: Rcode) -> Slot {
        Slot(
            QUERIES
                + (transport.index() * Source::ALL.len() + source.index()) * RCODES
                + usize::from(rcode.bits()),
        )
    }

    /// Client packets given no answer (unreadable, or themselves responses).
    pub(crate) fn dropped(transport: Transport) -> Slot {
        Slot(DROPPED + transport.index())
    }

    /// Client queries that began, and that ended, waiting on an upstream.
    pub(crate) fn forwards_begun() -> Slot {
        Slot(FORWARDS_BEGUN)
    }

    pub(crate) fn forwards_done() -> Slot {
        Slot(FORWARDS_DONE)
    }

    /// DHCP messages by direction and type (option 53).
    pub(crate) fn dhcp(direction: Direction, message_type: u8) -> Slot {
        let kind = match message_type {
            1..=8 => usize::from(message_type),
            _ => 0,
        };
        Slot(DHCP + direction as usize * DHCP_KINDS.len() + kind)
    }
}

/// What one upstream exchange of the walk came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamResult {
    Reply(Rcode),
    Timeout,
    /// Any other failure (an ICMP error, a reply that did not match, TCP that failed).
    Error,
}

impl UpstreamResult {
    fn cell(self) -> usize {
        match self {
            UpstreamResult::Reply(rcode) => usize::from(rcode.bits()),
            UpstreamResult::Timeout => UPSTREAM_TIMEOUT,
            UpstreamResult::Error => UPSTREAM_ERROR,
        }
    }
}

/// A counter written by one thread only and read by any: a relaxed load and store, which
/// compile to plain moves, where a `fetch_add` would be a locked instruction.
#[derive(Debug, Default)]
struct Cell(AtomicU64);

impl Cell {
    #[inline]
    fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

type UpstreamCells = [Cell; UPSTREAM_CELLS];

/// One thread's counters. Only that thread may bump them (`Cell`); any thread may read them.
#[derive(Debug)]
pub(crate) struct Shard {
    cells: [Cell; CELLS],
    /// Per upstream server, as the thread first met each one.
    upstreams: Mutex<Vec<(SocketAddr, Arc<UpstreamCells>)>>,
}

impl Default for Shard {
    fn default() -> Shard {
        Shard {
            cells: std::array::from_fn(|_| Cell::default()),
            upstreams: Mutex::new(Vec::new()),
        }
    }
}

impl Shard {
    /// Adds one to the counter at `slot`. Only the shard's own thread calls this.
    #[inline]
    pub(crate) fn bump(&self, slot: Slot) {
        self.cells[slot.0].add(1);
    }

    /// Records one commit of the lease store that took `took`.
    pub(crate) fn commit(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = COMMIT_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(COMMIT_BUCKETS.len());
        self.cells[COMMITS + bucket].add(1);
        self.cells[COMMIT_SUM_US].add(took.as_micros().min(u128::from(u64::MAX)) as u64);
        self.cells[COMMIT_COUNT].add(1);
    }

    /// The cells for `server` (made on first use; the caller keeps them to bump without this
    /// lock).
    pub(crate) fn upstream(&self, server: SocketAddr) -> UpstreamCounter {
        let mut upstreams = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        let cells = match upstreams.iter().find(|(a, _)| *a == server) {
            Some((_, cells)) => cells.clone(),
            None => {
                let cells = Arc::new(std::array::from_fn(|_| Cell::default()));
                upstreams.push((server, Arc::clone(&cells)));
                cells
            }
        };
        UpstreamCounter { server, cells }
    }

    /// What this shard has counted so far.
    fn read(&self) -> Totals {
        let mut totals = Totals::new();
        for (t, c) in totals.cells.iter_mut().zip(&self.cells) {
            *t = c.get();
        }
        let upstreams = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        for (addr, cells) in upstreams.iter() {
            let mut counts = [0; UPSTREAM_CELLS];
            for (t, c) in counts.iter_mut().zip(cells.iter()) {
                *t = c.get();
            }
            totals.upstreams.insert(*addr, counts);
        }
        totals
    }
}

/// One upstream's cells in one shard; bumped by the shard's own thread only.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamCounter {
    server: SocketAddr,
    cells: Arc<UpstreamCells>,
}

impl UpstreamCounter {
    pub(crate) fn server(&self) -> SocketAddr {
        self.server
    }

    #[inline]
    pub(crate) fn bump(&self, result: UpstreamResult) {
        self.cells[result.cell()].add(1);
    }
}

/// Every shard of the process, and what shards of ended threads counted.
#[derive(Debug)]
pub(crate) struct Shards {
    live: Mutex<Vec<Arc<Shard>>>,
    retired: Mutex<Totals>,
}

impl Default for Shards {
    fn default() -> Shards {
        Shards::new()
    }
}

impl Shards {
    pub(crate) const fn new() -> Shards {
        Shards {
            live: Mutex::new(Vec::new()),
            retired: Mutex::new(Totals::new()),
        }
    }

    /// A new shard for the calling thread, counted from now on.
    pub(crate) fn join(&self) -> Arc<Shard> {
        let shard = Arc::new(Shard::default());
        self.lock_live().push(Arc::clone(&shard));
        shard
    }

    /// The thread of `shard` ends: its counts move to the retired sum (once: leaving again
    /// changes nothing). Both change under the live lock, so a scrape never sees the counts
    /// twice or not at all.
    pub(crate) fn leave(&self, shard: &Arc<Shard>) {
        let mut live = self.lock_live();
        if let Some(i) = live.iter().position(|s| Arc::ptr_eq(s, shard)) {
            self.lock_retired().add(&shard.read());
            live.swap_remove(i);
        }
    }

    /// Everything counted so far, by every thread.
    pub(crate) fn totals(&self) -> Totals {
        let live = self.lock_live();
        let mut totals = self.lock_retired().clone();
        for shard in live.iter() {
            totals.add(&shard.read());
        }
        totals
    }

    fn lock_live(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Shard>>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_retired(&self) -> std::sync::MutexGuard<'_, Totals> {
        self.retired.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Counts summed over shards: what a scrape renders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Totals {
    cells: [u64; CELLS],
    upstreams: BTreeMap<SocketAddr, [u64; UPSTREAM_CELLS]>,
}

impl Default for Totals {
    fn default() -> Totals {
        Totals::new()
    }
}

/// A histogram as prometheus-client encodes it: the count in each bucket by its upper bound
/// (+Inf last; not cumulative: the encoder adds them up), the sum in seconds and the count.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Histogram {
    pub(crate) buckets: Vec<(f64, u64)>,
    pub(crate) sum_seconds: f64,
    pub(crate) count: u64,
}

/// What one upstream's exchanges came to, summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UpstreamTotals {
    counts: [u64; UPSTREAM_CELLS],
}

impl UpstreamTotals {
    pub(crate) fn replies(&self, rcode: Rcode) -> u64 {
        self.counts[usize::from(rcode.bits())]
    }
    pub(crate) fn timeouts(&self) -> u64 {
        self.counts[UPSTREAM_TIMEOUT]
    }
    pub(crate) fn errors(&self) -> u64 {
        self.counts[UPSTREAM_ERROR]
    }
    /// Every exchange, whatever came of it.
    pub(crate) fn queries(&self) -> u64 {
        self.counts.iter().sum()
    }
}

impl Totals {
    pub(crate) const fn new() -> Totals {
        Totals {
            cells: [0; CELLS],
            upstreams: BTreeMap::new(),
        }
    }

    pub(crate) fn add(&mut self, other: &Totals) {
        for (a, b) in self.cells.iter_mut().zip(&other.cells) {
            *a = a.wrapping_add(*b);
        }
        for (addr, counts) in &other.upstreams {
            let mine = self.upstreams.entry(*addr).or_insert([0; UPSTREAM_CELLS]);
            for (a, b) in mine.iter_mut().zip(counts) {
                *a = a.wrapping_add(*b);
            }
        }
    }

    pub(crate) fn get(&self, slot: Slot) -> u64 {
        self.cells[slot.0]
    }

    pub(crate) fn query(&self, transport: Transport, source: Source, rcode: Rcode) -> u64 {
        self.get(Slot::query(transport, source, rcode))
    }

    /// Client queries answered from `source`, over every transport and RCODE.
    pub(crate) fn answered_from(&self, source: Source) -> u64 {
        Transport::ALL
            .iter()
            .flat_map(|&t| (0..RCODES as u8).map(move |r| (t, Rcode::from_header(r))))
            .map(|(t, r)| self.query(t, source, r))
            .sum()
    }

    /// Client queries waiting on an upstream now.
    pub(crate) fn in_flight(&self) -> u64 {
        self.get(Slot::forwards_begun())
            .saturating_sub(self.get(Slot::forwards_done()))
    }

    pub(crate) fn commits(&self) -> Histogram {
        let bounds = COMMIT_BUCKETS.iter().copied().chain([f64::INFINITY]);
        let buckets = bounds
            .enumerate()
            .map(|(i, le)| (le, self.cells[COMMITS + i]))
            .collect();
        Histogram {
            buckets,
            sum_seconds: self.cells[COMMIT_SUM_US] as f64 / 1e6,
            count: self.cells[COMMIT_COUNT],
        }
    }

    /// Every upstream any thread exchanged with, in address order.
    pub(crate) fn upstreams(&self) -> impl Iterator<Item = (SocketAddr, UpstreamTotals)> + '_ {
        self.upstreams
            .iter()
            .map(|(a, counts)| (*a, UpstreamTotals { counts: *counts }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn shards_of_many_threads_add_up() {
        let shards = Arc::new(Shards::new());
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let shards = shards.clone();
                std::thread::spawn(move || {
                    let shard = shards.join();
                    let upstream = shard.upstream(addr("127.0.0.3:53"));
                    for _ in 0..1000 {
                        shard.bump(Slot::query(Transport::Udp, Source::Cache, Rcode::NOERROR));
                        upstream.bump(UpstreamResult::Reply(Rcode::NXDOMAIN));
                    }
                    shard.bump(Slot::dropped(Transport::Tcp));
                    upstream.bump(UpstreamResult::Timeout);
                    // Half the threads end before the scrape: their counts must stay.
                    if i % 2 == 0 {
                        shards.leave(&shard);
                    }
                    shard
                })
            })
            .collect();
        let kept: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let totals = shards.totals();
        assert_eq!(
            totals.query(Transport::Udp, Source::Cache, Rcode::NOERROR),
            4000
        );
        assert_eq!(totals.answered_from(Source::Cache), 4000);
        assert_eq!(totals.answered_from(Source::Forwarded), 0);
        assert_eq!(totals.get(Slot::dropped(Transport::Tcp)), 4);
        assert_eq!(totals.get(Slot::dropped(Transport::Udp)), 0);
        let (server, up) = totals.upstreams().next().unwrap();
        assert_eq!(server, addr("127.0.0.3:53"));
        assert_eq!(
            (up.replies(Rcode::NXDOMAIN), up.timeouts(), up.queries()),
            (4000, 4, 4004)
        );
        assert_eq!(shards.lock_live().len(), 2);
        // The rest leave too, some twice: nothing changes in the totals.
        for s in kept.iter().chain(&kept) {
            shards.leave(s);
        }
        assert!(shards.lock_live().is_empty());
        assert_eq!(shards.totals(), totals);
    }

    #[test]
    fn slots_do_not_overlap() {
        let mut seen = std::collections::HashSet::new();
        for t in Transport::ALL {
            for s in Source::ALL {
                for r in 0..16 {
                    assert!(seen.insert(Slot::query(t, s, Rcode::from_header(r))));
                }
            }
            assert!(seen.insert(Slot::dropped(t)));
        }
        assert!(seen.insert(Slot::forwards_begun()));
        assert!(seen.insert(Slot::forwards_done()));
        for d in Direction::ALL {
            for kind in 0..=8 {
                assert!(seen.insert(Slot::dhcp(d, kind)));
            }
        }
        // Unknown message types share "other".
        assert_eq!(
            Slot::dhcp(Direction::Sent, 0),
            Slot::dhcp(Direction::Sent, 200)
        );
        assert!(seen.iter().all(|s| s.0 < COMMITS));
    }

    #[test]
    fn in_flight_is_begun_less_done_summed_over_threads() {
        let shards = Shards::new();
        let a = shards.join();
        let b = shards.join();
        a.bump(Slot::forwards_begun());
        a.bump(Slot::forwards_begun());
        a.bump(Slot::forwards_begun());
        // A query that began on one thread may end on another.
        b.bump(Slot::forwards_done());
        assert_eq!(shards.totals().in_flight(), 2);
    }

    #[test]
    fn commit_latency_lands_in_its_bucket() {
        let shards = Shards::new();
        let s = shards.join();
        s.commit(Duration::from_micros(300)); // <= 0.5 ms
        s.commit(Duration::from_millis(1)); // <= 1 ms (bounds are inclusive)
        s.commit(Duration::from_millis(7)); // <= 10 ms
        s.commit(Duration::from_secs(5)); // +Inf only
        let h = shards.totals().commits();
        assert_eq!(h.count, 4);
        assert!((h.sum_seconds - 5.0083).abs() < 1e-9, "{}", h.sum_seconds);
        let at = |le: f64| h.buckets.iter().find(|(b, _)| *b == le).unwrap().1;
        assert_eq!(at(0.0005), 1);
        assert_eq!(at(0.001), 1);
        assert_eq!(at(0.005), 0);
        assert_eq!(at(0.01), 1);
        assert_eq!(at(2.0), 0);
        assert_eq!(at(f64::INFINITY), 1);
        assert_eq!(h.buckets.len(), COMMIT_BUCKETS.len() + 1);
    }
}
