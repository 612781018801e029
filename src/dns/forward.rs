//! Forwarding one question with the host's semantics, without the host's waits. This file
//! owns the in-flight table (identical concurrent questions share one walk), the cache
//! write, and the background learning about servers; `walk` owns the walk itself (order,
//! skips, glibc's verdicts, failover), written against the `Exchanger` seam.

mod walk;

pub(crate) use walk::{Verdict, verdict};

use crate::dns::cache::{Answer, Cache, CacheKey, Generation, HashedKey};
use crate::dns::probe;
use crate::dns::router::WalkOptions;
use crate::dns::trace::Trace;
use crate::dns::transport::{Exchanger, Network};
use crate::dns::upstream::{Upstream, UpstreamPool};
use crate::dns::wire::{Query, Rcode};
use hashbrown::HashTable;
use smallvec::SmallVec;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, oneshot};

/// How long a capability probe waits for its reply.
const LEARN_TIMEOUT: Duration = Duration::from_secs(1);

/// The outcome shared by everyone who asked the same question.
pub(crate) type Outcome = Result<Arc<Answer>, Rcode>;

/// Forwards queries upstream: walks a route's servers, caches what they answer, and has
/// concurrent identical questions share one walk.
pub struct Forwarder<X: Exchanger = Network> {
    exchanger: Arc<X>,
    pool: UpstreamPool,
    cache: Cache,
    inflight: Mutex<HashTable<InFlight>>,
    limit: Semaphore,
    rotation: AtomicUsize,
    /// The pool's lesson count the cache was last emptied for.
    lessons_seen: AtomicU64,
}

impl Forwarder<Network> {
    /// A forwarder over the real network, with a cache of `cache_size` answers and at most
    /// `max_inflight` walks at once.
    pub fn new(pool: UpstreamPool, cache_size: usize, max_inflight: usize) -> Forwarder {
        Forwarder::with_exchanger(Network, pool, cache_size, max_inflight)
    }
}

impl<X: Exchanger> Forwarder<X> {
    /// A forwarder whose upstream exchanges go through `exchanger` (a script, in tests and
    /// fuzzing).
    pub fn with_exchanger(
        exchanger: X,
        pool: UpstreamPool,
        cache_size: usize,
        max_inflight: usize,
    ) -> Forwarder<X> {
        Forwarder {
            exchanger: Arc::new(exchanger),
            pool,
            cache: Cache::new(cache_size),
            inflight: Mutex::new(HashTable::new()),
            limit: Semaphore::new(max_inflight),
            rotation: AtomicUsize::new(0),
            lessons_seen: AtomicU64::new(0),
        }
    }

    /// Its answer cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    #[cfg(test)]
    pub(crate) fn pool(&self) -> &UpstreamPool {
        &self.pool
    }

    pub(crate) fn exchanger(&self) -> &X {
        &self.exchanger
    }

    /// A cached answer for `key` that is still the host's answer. Answers cached before a
    /// server turned out to be something else are dropped (learning is rare: emptying the
    /// whole cache then costs nothing worth counting).
    pub(crate) fn cached(&self, key: &CacheKey, now: Instant) -> Option<Arc<Answer>> {
        self.forget_old_lessons();
        self.cache.get_at(key, self.pool.recoveries(), now)
    }

    /// `cached` for a key whose hash is known.
    fn cached_hashed(&self, key: &HashedKey, now: Instant) -> Option<Arc<Answer>> {
        self.forget_old_lessons();
        self.cache.get_hashed(key, self.pool.recoveries(), now)
    }

    /// Empties the cache if a server's capability changed since it was last emptied (which
    /// also starts a new generation: answers walked with the old knowledge are not kept).
    fn forget_old_lessons(&self) {
        let lessons = self.pool.lessons();
        // Read first: this runs on every lookup, and a write would bounce the line.
        if self.lessons_seen.load(Ordering::Relaxed) != lessons
            && self.lessons_seen.swap(lessons, Ordering::Relaxed) != lessons
        {
            self.cache.clear();
        }
    }

    /// Resolves `q` through `servers`, or joins an identical exchange already in flight and
    /// shares its outcome. The first asker does the walk itself (or takes the answer of one that
    /// ended since the caller looked in the cache); if its task is dropped midway the others
    /// get SERVFAIL rather than wait forever. The answer is kept only if the cache was not
    /// emptied since `sought` (taken before `servers` were chosen).
    pub async fn resolve(
        self: &Arc<Self>,
        client: &[u8],
        q: &Query,
        servers: &[Arc<Upstream>],
        options: WalkOptions,
        sought: Generation,
    ) -> Outcome {
        let key = self.cache.hashed(CacheKey::of(q));
        let joined = {
            // Made before the lock is taken (and freed after it is let go, if not needed).
            let ours = InFlight::new(&key);
            let mut inflight = self.inflight.lock().unwrap();
            match inflight.find_mut(key.hash(), |w| w.is(&key)) {
                Some(walk) => {
                    let (tx, rx) = oneshot::channel();
                    walk.waiters.push(tx);
                    Some(rx)
                }
                None => {
                    inflight.insert_unique(key.hash(), ours, |w| w.hash);
                    None
                }
            }
        };
        if let Some(rx) = joined {
            return rx.await.unwrap_or(Err(Rcode::SERVFAIL));
        }
        // A walk for the same question may have ended between the caller's cache miss and
        // now: its answer is in the cache (stored before its in-flight entry went), and is
        // the outcome, without a walk of our own.
        let started = Instant::now();
        if let Some(answer) = self.cached_hashed(&key, started) {
            self.finish(&key, Ok(answer.clone()), None);
            return Ok(answer);
        }
        let Ok(_permit) = self.limit.try_acquire() else {
            tracing::warn!("too many queries in flight; answering SERVFAIL");
            self.finish(&key, Err(Rcode::SERVFAIL), None);
            return Err(Rcode::SERVFAIL);
        };
        let mut guard = FinishOnDrop {
            forwarder: self.clone(),
            key: Some(key),
        };
        // Boxed: the walk is most of a forwarding future's size, and every future above it
        // (this one, the resolver's, the listener's task) would otherwise hold it inline and
        // be copied whole as each is built and started; one allocation costs less.
        let mut trace = Trace::off();
        let outcome = Box::pin(self.walk(client, q, servers, options, &mut trace)).await;
        tracing::debug!(
            name = %q.name.to_dotted(),
            qtype = q.qtype,
            rcode = %outcome.as_ref().map_or_else(|c| *c, |a| a.rcode()),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "forwarded"
        );
        let key = guard.key.take().expect("set before the walk");
        // An answer walked with knowledge that changed meanwhile is shared, not kept: the
        // change empties the cache, and `sought` is then past.
        self.forget_old_lessons();
        self.finish(&key, outcome.clone(), Some(sought));
        outcome
    }

    /// Shares `outcome` with whoever waits for the walk of `key`, and stores an answer if it is
    /// to be kept (`keep`: the generation it was sought in).
    fn finish(&self, key: &HashedKey, outcome: Outcome, keep: Option<Generation>) {
        if let (Ok(answer), Some(sought)) = (&outcome, keep) {
            self.cache.insert_hashed(key, answer.clone(), sought);
        }
        let walk = {
            let mut inflight = self.inflight.lock().unwrap();
            inflight
                .find_entry(key.hash(), |w| w.is(key))
                .ok()
                .map(|e| e.remove().0)
        };
        for w in walk.map(|w| w.waiters).unwrap_or_default() {
            let _ = w.send(outcome.clone());
        }
    }

    /// Probes the capability of every server in `servers` now and waits for the replies (at
    /// start, after resolv.conf changed, and for `check`).
    pub async fn learn_now(&self, servers: &[Arc<Upstream>]) {
        let probes = servers.iter().map(|s| async move {
            if s.claim_learning(Instant::now()) {
                probe::learn(&*self.exchanger, &self.pool, s, LEARN_TIMEOUT).await;
            }
        });
        futures_util::future::join_all(probes).await;
    }

    /// Starts a capability probe of `server` in the background if what is known about it is
    /// missing, old, or was contradicted.
    fn learn_later(&self, server: &Arc<Upstream>) {
        if !server.claim_learning(Instant::now()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            server.learning_done();
            return;
        };
        let (exchanger, pool, server) = (self.exchanger.clone(), self.pool.clone(), server.clone());
        runtime.spawn(async move {
            probe::learn(&*exchanger, &pool, &server, LEARN_TIMEOUT).await;
        });
    }

    /// Marks `server` down and starts probing it until it answers, unless a probe runs.
    fn mark_down(&self, server: &Arc<Upstream>, why: &str) {
        if server.set_down(why) {
            tracing::warn!(server = %server.addr, why, "upstream marked down; skipping it until a probe answers");
        }
        if !server.start_probing() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            server.stop_probing();
            return;
        };
        runtime.spawn(probe::probe_until_up(
            self.exchanger.clone(),
            self.pool.clone(),
            Arc::downgrade(server),
            self.pool.bounds().1,
        ));
    }
}

impl<X: Exchanger> Forwarder<X> {
    /// Remembers that `server`'s TCP failed and probes it over TCP until it answers.
    fn mark_tcp_down(&self, server: &Arc<Upstream>) {
        if server.set_tcp_down() {
            tracing::warn!(server = %server.addr, "upstream's TCP failed; truncated answers from it are not retried over TCP until a probe answers");
        }
        if !server.start_tcp_probing() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            server.stop_tcp_probing();
            return;
        };
        runtime.spawn(probe::probe_tcp_until_up(
            self.exchanger.clone(),
            Arc::downgrade(server),
            self.pool.bounds().1,
        ));
    }
}

/// A walk in flight and who else waits for its outcome, filed under the cache's hash of its
/// question. The key's bytes are kept inline up to 64 (a `CacheKey` is 262 bytes, most of
/// them unused): no allocation for a common name, a small table all the same.
struct InFlight {
    hash: u64,
    key: SmallVec<[u8; 64]>,
    waiters: Vec<oneshot::Sender<Outcome>>,
}

impl InFlight {
    /// A walk for `key` that nobody else waits for yet.
    fn new(key: &HashedKey) -> InFlight {
        InFlight {
            hash: key.hash(),
            key: SmallVec::from_slice(key.key().as_slice()),
            waiters: Vec::new(),
        }
    }

    fn is(&self, key: &HashedKey) -> bool {
        self.hash == key.hash() && *self.key == *key.key().as_slice()
    }
}

/// Completes an in-flight entry with SERVFAIL unless the leader completed it.
struct FinishOnDrop<X: Exchanger> {
    forwarder: Arc<Forwarder<X>>,
    key: Option<HashedKey>,
}

impl<X: Exchanger> Drop for FinishOnDrop<X> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.forwarder.finish(&key, Err(Rcode::SERVFAIL), None);
        }
    }
}

#[cfg(test)]
mod tests;
