//! Forwarding one question with the host's semantics, without the host's waits. This file
//! owns the in-flight table (identical concurrent questions share one walk), the cache
//! write, and the background learning about servers; `walk` owns the walk itself (order,
//! skips, glibc's verdicts, failover), written against the `Exchanger` seam.
//!
//! A walk runs in a task (`resolve`), or begins where the query arrives (`forward`): when its
//! first server is asked alone, that exchange is started there (`Exchanger::start`) and its
//! end is taken by whoever reads the reply (the upstream reader). If that reply ends the walk,
//! as it does for most names, the answer is kept and handed on right there: the query costs
//! no task, channel or timer of its own. Anything else (no reply, a retry the guard or the
//! walk calls for, a reply that moves the walk on) goes on in a task, through the same walk
//! code, from where it stands.

mod walk;

use walk::{FirstTurn, Stands, Walk, asks_again};
pub(crate) use walk::{Verdict, verdict};

use crate::dns::cache::{Answer, Cache, CacheKey, Generation, HashedKey};
use crate::dns::guard::{Asking, Expect};
use crate::dns::probe;
use crate::dns::router::WalkOptions;
use crate::dns::trace::Trace;
use crate::dns::transport::{self, Completion, Ended, Exchanger, Network, Protocol};
use crate::dns::upstream::{Upstream, UpstreamPool};
use crate::dns::wire::{Query, Rcode};
use hashbrown::HashTable;
use smallvec::SmallVec;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

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
    limit: Arc<Semaphore>,
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
            limit: Arc::new(Semaphore::new(max_inflight)),
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
    /// shares its outcome (`lead`). The answer is kept only if the cache was not emptied since
    /// `sought` (taken before `servers` were chosen).
    pub async fn resolve(
        self: &Arc<Self>,
        client: &[u8],
        q: &Query,
        servers: &[Arc<Upstream>],
        options: WalkOptions,
        sought: Generation,
    ) -> Outcome {
        let mut leading = match self.lead(q, Instant::now()) {
            Lead::Walk(leading) => leading,
            Lead::Joined(outcome) => return outcome.await.unwrap_or(Err(Rcode::SERVFAIL)),
            Lead::Done(outcome) => return outcome,
        };
        // Boxed: the walk is most of a forwarding future's size, and every future above it
        // (this one, the resolver's, the listener's task) would otherwise hold it inline and
        // be copied whole as each is built and started; one allocation costs less.
        let mut trace = Trace::off();
        let outcome = Box::pin(self.walk(client, q, servers, options, &mut trace)).await;
        leading.conclude(q, outcome, sought)
    }

    /// `resolve`, with the outcome handed to `then` (with the query's bytes and question)
    /// rather than returned: at once if it is known at once, from the upstream reader if the
    /// first server's reply ends the walk, else from a task (see the module's comment). `now`
    /// is the caller's reading of the clock (one serves a batch of queries).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward<F>(
        self: &Arc<Self>,
        client: Vec<u8>,
        q: Query,
        servers: &[Arc<Upstream>],
        options: WalkOptions,
        sought: Generation,
        now: Instant,
        then: F,
    ) where
        F: FnOnce(Outcome, &[u8], &Query) + Send + 'static,
    {
        let mut leading = match self.lead(&q, now) {
            Lead::Walk(leading) => leading,
            Lead::Joined(outcome) => {
                tokio::spawn(async move {
                    then(outcome.await.unwrap_or(Err(Rcode::SERVFAIL)), &client, &q);
                });
                return;
            }
            Lead::Done(outcome) => return then(outcome, &client, &q),
        };
        let Some(walk) = self.begin_walk(servers, options, &mut Trace::off()) else {
            return then(
                leading.conclude(&q, Err(Rcode::SERVFAIL), sought),
                &client,
                &q,
            );
        };
        let server = walk.first_alone(&q).cloned();
        let ending = Ending {
            leading,
            client,
            q,
            sought,
            then: Some(then),
        };
        let begun = Begun {
            walk,
            options,
            ending,
        };
        let Some(server) = server else {
            return begun.go_on(None);
        };
        let (client, q) = (&begun.ending.client[..], &begun.ending.q);
        let asking = Asking::new(Protocol::Udp, true);
        let (query, expect, mix) = asking.prepare(&server, client, q);
        let timeout = server.timeout(self.timeouts(options));
        let first = Box::new(FirstExchange {
            begun,
            server,
            asking,
            expect,
            mix,
            timeout,
        });
        let server = first.server.addr;
        self.exchanger.start(server, query, now + timeout, first);
    }

    /// What the asker of `q`, not in the cache, is to do: lead its walk (the in-flight entry
    /// is then ours), wait for the one in flight, or take the outcome known already: the
    /// answer of a walk that ended since the caller looked in the cache (stored before its
    /// in-flight entry went), or SERVFAIL when too many walks are in flight.
    fn lead(self: &Arc<Self>, q: &Query, now: Instant) -> Lead<X> {
        let key = self.cache.hashed(CacheKey::of(q));
        {
            // Made before the lock is taken (and freed after it is let go, if not needed).
            let ours = InFlight::new(&key);
            let mut inflight = self.inflight.lock().unwrap();
            if let Some(walk) = inflight.find_mut(key.hash(), |w| w.is(&key)) {
                let (tx, rx) = oneshot::channel();
                walk.waiters.push(tx);
                return Lead::Joined(rx);
            }
            inflight.insert_unique(key.hash(), ours, |w| w.hash);
        }
        if let Some(answer) = self.cached_hashed(&key, now) {
            self.finish(&key, Ok(answer.clone()), None);
            return Lead::Done(Ok(answer));
        }
        let Ok(permit) = self.limit.clone().try_acquire_owned() else {
            tracing::warn!("too many queries in flight; answering SERVFAIL");
            self.finish(&key, Err(Rcode::SERVFAIL), None);
            return Lead::Done(Err(Rcode::SERVFAIL));
        };
        Lead::Walk(Leading {
            forwarder: self.clone(),
            key: Some(key),
            _permit: permit,
            started: now,
        })
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

/// What the asker of a question not in the cache is to do (`Forwarder::lead`).
// Returned once per walk and taken apart at once: boxing the lead would cost an allocation
// per forwarded query to save a copy of its key.
#[allow(clippy::large_enum_variant)]
enum Lead<X: Exchanger> {
    /// Walk it.
    Walk(Leading<X>),
    /// Wait for the outcome of the walk in flight.
    Joined(oneshot::Receiver<Outcome>),
    /// Take this outcome, known already.
    Done(Outcome),
}

/// The lead of a walk: its in-flight entry and its share of the limit. Dropped before
/// `conclude` (its task dropped midway), it gives whoever waits SERVFAIL rather than have
/// them wait forever.
struct Leading<X: Exchanger> {
    forwarder: Arc<Forwarder<X>>,
    key: Option<HashedKey>,
    _permit: OwnedSemaphorePermit,
    started: Instant,
}

impl<X: Exchanger> Leading<X> {
    /// The walk of `q` ended with `outcome`: it is shared, and kept if the cache was not
    /// emptied since `sought`.
    fn conclude(&mut self, q: &Query, outcome: Outcome, sought: Generation) -> Outcome {
        let Some(key) = self.key.take() else {
            return outcome; // concluded already
        };
        tracing::debug!(
            name = %q.name.to_dotted(),
            qtype = q.qtype,
            rcode = %outcome.as_ref().map_or_else(|c| *c, |a| a.rcode()),
            ms = self.started.elapsed().as_secs_f64() * 1e3,
            "forwarded"
        );
        // An answer walked with knowledge that changed meanwhile is shared, not kept: the
        // change empties the cache, and `sought` is then past.
        self.forwarder.forget_old_lessons();
        self.forwarder.finish(&key, outcome.clone(), Some(sought));
        outcome
    }
}

impl<X: Exchanger> Drop for Leading<X> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.forwarder.finish(&key, Err(Rcode::SERVFAIL), None);
        }
    }
}

/// A walk begun outside any task.
struct Begun<X: Exchanger, F> {
    walk: Walk,
    options: WalkOptions,
    ending: Ending<X, F>,
}

/// What becomes of a walk's outcome: it is concluded (`Leading`), then handed to `then`.
struct Ending<X: Exchanger, F> {
    leading: Leading<X>,
    client: Vec<u8>,
    q: Query,
    sought: Generation,
    /// Taken when called. In an `Option` so that ending takes no more than a reference: an
    /// ending is large, and most end where they are kept (`FirstExchange`), not moved.
    then: Option<F>,
}

impl<X: Exchanger, F: FnOnce(Outcome, &[u8], &Query) + Send + 'static> Ending<X, F> {
    fn end(&mut self, outcome: Outcome) {
        let outcome = self.leading.conclude(&self.q, outcome, self.sought);
        if let Some(then) = self.then.take() {
            then(outcome, &self.client, &self.q);
        }
    }
}

impl<X: Exchanger, F: FnOnce(Outcome, &[u8], &Query) + Send + 'static> Begun<X, F> {
    /// The walk goes on in a task, from where it stands (with the first server's turn begun
    /// already if `first` says how).
    fn go_on(self, first: Option<FirstTurn>) {
        // None while the runtime shuts down: dropped, the walk's lead answers SERVFAIL.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let Begun {
                walk,
                options,
                mut ending,
            } = self;
            let (client, q) = (&ending.client[..], &ending.q);
            let forwarder = &ending.leading.forwarder;
            let mut trace = Trace::off();
            let walk_on = forwarder.walk_on(walk, client, q, options, &mut trace, first);
            let outcome = Box::pin(walk_on).await;
            ending.end(outcome);
        });
    }
}

/// The first exchange of a walk begun outside any task: how it was asked, so that its end
/// can be concluded as the walk's task would have.
struct FirstExchange<X: Exchanger, F> {
    begun: Begun<X, F>,
    server: Arc<Upstream>,
    asking: Asking,
    expect: Expect,
    mix: bool,
    timeout: Duration,
}

impl<X: Exchanger, F: FnOnce(Outcome, &[u8], &Query) + Send + 'static> Completion
    for FirstExchange<X, F>
{
    fn expect(&self) -> &Expect {
        &self.expect
    }

    fn complete(mut self: Box<Self>, ended: Ended) {
        if let Ended::NotStarted = ended {
            return self.begun.go_on(None);
        }
        // Worked on where it is: most walks end here, and moving them out costs copies.
        let this = &mut *self;
        let (client, q) = (&this.begun.ending.client[..], &this.begun.ending.q);
        let result = transport::exchanged(this.server.addr, ended, this.timeout);
        let concluded =
            (this.asking).conclude(&this.server, client, q, &this.expect, this.mix, result);
        let stands = match concluded {
            None => Stands::Again(this.asking),
            Some(Ok(ex)) if !asks_again(&ex) => {
                let forwarder = &this.begun.ending.leading.forwarder;
                let mut trace = Trace::off();
                let walk = &mut this.begun.walk;
                match forwarder.take(walk, q, &this.server, Ok(ex), 1, &mut trace) {
                    Some(outcome) => return this.begun.ending.end(outcome),
                    None => {
                        walk.past_first();
                        return self.begun.go_on(None);
                    }
                }
            }
            Some(result) => Stands::Asked(result),
        };
        let timeout = self.timeout;
        self.begun.go_on(Some(FirstTurn { timeout, stands }))
    }
}

#[cfg(test)]
mod tests;
