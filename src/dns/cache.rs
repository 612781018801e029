//! The answer cache: upstream replies kept as bytes (OPT removed), keyed by the lower-cased
//! question plus the DO and CD bits, served by rewriting the ID and ageing TTLs in place.
//!
//! Sharded behind plain mutexes (held for a hash lookup, never across `.await`) so workers on
//! different cores rarely meet. A key is hashed once, with a keyed hash (SipHash, a random key
//! per cache: names come from clients), and that hash picks both the shard and the slot.
//! Bounded: a full shard drops, of a few answers sampled from a random slot on, the one that
//! expires first (an expired one if there is any).
//!
//! An answer that exists only because an earlier server was down carries the upstream
//! pool's recovery count from when it was obtained; once any server has recovered since, it
//! is a miss, so the host's answer is served again as soon as the host would get it.
//!
//! A failure passed on (SERVFAIL and the like) is held `FAILURE_TTL` at first. One that
//! comes back as soon as it is asked again is held twice as long each time, up to
//! `FAILURE_HOLD_MAX` (RFC 9520 3.2's backoff for persistent failures): an expired failure
//! stays in its slot, as a miss, so that the next failure for the same question finds how
//! long the last one was held. Any other answer for the question ends the streak.

use crate::dns::wire::{self, MAX_NAME_LEN, Query, TtlOffsets};
use hashbrown::HashTable;
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
/// Entries looked at to choose one to evict from a full shard.
const EVICTION_SAMPLE: usize = 8;
/// Upper bound on any cached TTL.
pub(crate) const MAX_TTL: u32 = 86_400;
/// How long a failure (SERVFAIL and the like) is remembered at first.
pub(crate) const FAILURE_TTL: u32 = 2;
/// The longest a failure is held, however often it repeats. RFC 9520 allows five minutes;
/// this stays short because the host asks its servers afresh every time, and a guest should
/// see a server's recovery within seconds of the host.
pub(crate) const FAILURE_HOLD_MAX: u32 = 8;

/// What identifies a cached answer: DO/CD/RD flags, type, class and the lower-cased name,
/// packed into one byte string on the stack (no allocation to look one up).
#[derive(Clone, Copy)]
pub struct CacheKey {
    len: u16,
    bytes: [u8; 5 + MAX_NAME_LEN],
}

impl CacheKey {
    /// The key of the answer to `q`.
    pub fn of(q: &Query) -> CacheKey {
        // DO, CD and RD: DNSSEC-aware, validating and non-recursive clients get their own
        // answers.
        let flags = u8::from(q.dnssec_ok()) | (u8::from(q.cd) << 1) | (u8::from(q.rd) << 2);
        let name = q.name.as_bytes();
        let mut bytes = [0u8; 5 + MAX_NAME_LEN];
        bytes[0] = flags;
        bytes[1..3].copy_from_slice(&q.qtype.to_be_bytes());
        bytes[3..5].copy_from_slice(&q.qclass.to_be_bytes());
        bytes[5..5 + name.len()].copy_from_slice(name);
        CacheKey {
            len: (5 + name.len()) as u16,
            bytes,
        }
    }

    /// The key's bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl PartialEq for CacheKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}
impl Eq for CacheKey {}
impl std::hash::Hash for CacheKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state)
    }
}
impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CacheKey({:?})", self.as_slice())
    }
}

/// A reply ready to be reissued: bytes without OPT, where its TTLs are, when it was stored.
#[derive(Debug)]
pub struct Answer {
    bytes: Box<[u8]>,
    ttl_offsets: TtlOffsets,
    stored: Instant,
    ttl: u32,
    /// Set for a failover answer: the pool's recovery count it is valid for (`recovery_mark`).
    until_recovery: Option<NonZeroU64>,
    /// A failure passed on (no server gave a final answer): held longer when it repeats.
    failure: bool,
    /// The upstream server it came from.
    server: Option<std::net::SocketAddr>,
}

impl Answer {
    /// An answer from a reply's `bytes` (its OPT record cut out) and the offsets of its TTLs,
    /// received at `at`, to be reissued for `ttl` seconds (at most `MAX_TTL`) from then.
    pub fn new(bytes: Vec<u8>, mut ttl_offsets: TtlOffsets, ttl: u32, at: Instant) -> Answer {
        // Both shrunk to what they hold (the bytes once their OPT is cut out, offsets past the
        // 8 kept inline): an answer may be kept for hours.
        ttl_offsets.shrink_to_fit();
        Answer {
            bytes: bytes.into_boxed_slice(),
            ttl_offsets,
            stored: at,
            ttl: ttl.min(MAX_TTL),
            until_recovery: None,
            failure: false,
            server: None,
        }
    }

    /// Marks this answer as a failure passed on: held with backoff when it repeats.
    pub(crate) fn failure(mut self) -> Answer {
        self.failure = true;
        self
    }

    #[cfg(test)]
    fn stored_at(mut self, at: Instant) -> Answer {
        self.stored = at;
        self
    }

    /// Notes the upstream server the answer came from.
    pub(crate) fn served_by(mut self, server: std::net::SocketAddr) -> Answer {
        self.server = Some(server);
        self
    }

    /// The upstream server it came from, if it is known.
    pub(crate) fn server(&self) -> Option<std::net::SocketAddr> {
        self.server
    }

    /// Marks this answer as obtained while a server was down: it stops being served once the
    /// recovery count moves past `recoveries`.
    pub(crate) fn until_recovery(mut self, recoveries: u64) -> Answer {
        self.until_recovery = recovery_mark(recoveries);
        self
    }

    fn recovered_past(&self, recoveries: u64) -> bool {
        self.until_recovery
            .is_some_and(|r| Some(r) != recovery_mark(recoveries))
    }

    pub(crate) fn rcode(&self) -> wire::Rcode {
        wire::rcode(&self.bytes)
    }

    #[cfg(test)]
    pub(crate) fn ttl(&self) -> u32 {
        self.ttl
    }

    #[cfg(test)]
    pub(crate) fn is_failure(&self) -> bool {
        self.failure
    }

    /// The reply for this client at `now`: its ID and spelling, TTLs aged, OPT if it used
    /// EDNS, and truncated (TC, no records) when larger than `limit`.
    pub fn render(&self, client: &[u8], q: &Query, limit: usize, now: Instant) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.len() + wire::OPT_LEN);
        self.render_into(&mut out, client, q, limit, now);
        out
    }

    /// When it was received from its server: what its TTLs are aged from.
    pub(crate) fn stored(&self) -> Instant {
        self.stored
    }

    /// `render` into a buffer the caller reuses (the UDP hot path, which reads the clock once
    /// per batch).
    pub fn render_into(
        &self,
        out: &mut Vec<u8>,
        client: &[u8],
        q: &Query,
        limit: usize,
        now: Instant,
    ) {
        let elapsed = now.saturating_duration_since(self.stored).as_secs() as u32;
        out.clear();
        out.extend_from_slice(&self.bytes);
        wire::age_ttls(out, &self.ttl_offsets, elapsed);
        if !wire::finish_reply(out, client, q, limit) {
            *out = wire::header_only_reply(client, Some(q), self.rcode(), true);
            wire::set_aa(out, wire::aa(&self.bytes));
        }
    }
}

/// A recovery count as an answer holds it: plus one, so that with its `Option` it takes 8
/// bytes, not 16, and an answer fits a 128-byte allocation with its Arc's counts.
fn recovery_mark(recoveries: u64) -> Option<NonZeroU64> {
    NonZeroU64::new(recoveries.wrapping_add(1))
}

type Shard = Mutex<Entries>;

/// A cached answer with what choosing a victim and growing the table read, kept beside the
/// key so that neither follows a pointer: its hash and when it expires (whole seconds since
/// the cache was made). It is held `lifetime` seconds from when it was stored: its TTL, or
/// for a repeated failure the backoff's hold.
struct Entry {
    hash: u64,
    key: Box<[u8]>,
    answer: Arc<Answer>,
    expires: u32,
    lifetime: u32,
}

impl Entry {
    /// When its hold ends.
    fn ends(&self) -> Instant {
        self.answer.stored + Duration::from_secs(self.lifetime.into())
    }

    fn expired(&self, now: Instant) -> bool {
        now >= self.ends()
    }

    /// How long `answer`, stored in place of this entry, is held: its TTL, unless both are
    /// failures. Then twice as long as this one if its hold ended no longer than
    /// `FAILURE_HOLD_MAX` before (at most that), as long as this one if its hold has not
    /// ended (two walks for the question raced), else its TTL.
    fn next_hold(&self, answer: &Answer) -> u32 {
        if !(answer.failure && self.answer.failure) {
            return answer.ttl;
        }
        match answer.stored.checked_duration_since(self.ends()) {
            None => self.lifetime,
            Some(gap) if gap <= Duration::from_secs(FAILURE_HOLD_MAX.into()) => {
                self.lifetime.saturating_mul(2).min(FAILURE_HOLD_MAX)
            }
            Some(_) => answer.ttl,
        }
    }
}

/// Matches the entry stored under `key`, whose hash is `hash`.
fn same(hash: u64, key: &CacheKey) -> impl Fn(&Entry) -> bool + '_ {
    move |e| e.hash == hash && *e.key == *key.as_slice()
}

/// A key with the hash its cache files it under, computed once (`Cache::hashed`).
pub(crate) struct HashedKey {
    key: CacheKey,
    hash: u64,
}

impl HashedKey {
    pub(crate) fn key(&self) -> &CacheKey {
        &self.key
    }

    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }
}

/// One shard's answers, and what it has let go of (counted under the lock it already holds).
#[derive(Default)]
struct Entries {
    map: HashTable<Entry>,
    evicted: u64,
    expired: u64,
}

/// What the cache holds and has let go of, summed over its shards (for the metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CacheStats {
    pub(crate) entries: usize,
    /// Answers dropped to make room for another.
    pub(crate) evicted: u64,
    /// Answers found outlived when asked for (TTL run out, or a failover answer after a
    /// recovery).
    pub(crate) expired: u64,
}

/// Answers by question, with a bounded number of entries, in shards each behind a lock of
/// its own.
pub struct Cache {
    shards: Box<[Shard]>,
    per_shard: usize,
    hasher: RandomState,
    /// What entries' expiry times count from.
    epoch: Instant,
    /// Bumped by every `clear`.
    generation: AtomicU64,
}

/// Which emptying of the cache an answer was sought after (`Cache::generation`): read before
/// the routes and local names a query is judged by, and checked when its answer is stored, so
/// that an answer walked under routes or local data replaced since is passed on but not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation(u64);

impl Cache {
    /// A cache of about `capacity` answers, spread over its shards.
    pub fn new(capacity: usize) -> Cache {
        Cache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
            epoch: Instant::now(),
            generation: AtomicU64::new(0),
        }
    }

    /// The current generation: taken before reading what a walk is based on.
    pub fn generation(&self) -> Generation {
        Generation(self.generation.load(Ordering::Acquire))
    }

    /// The hash this cache files `key` under.
    fn hash(&self, key: &CacheKey) -> u64 {
        self.hasher.hash_one(key.as_slice())
    }

    /// `key` with its hash, for a caller that finds the question in a table of its own too
    /// (the in-flight walks) and stores the answer later (`insert_hashed`).
    pub(crate) fn hashed(&self, key: CacheKey) -> HashedKey {
        HashedKey {
            hash: self.hash(&key),
            key,
        }
    }

    /// `at` in whole seconds since the cache was made.
    fn seconds(&self, at: Instant) -> u32 {
        let secs = at.saturating_duration_since(self.epoch).as_secs();
        u32::try_from(secs).unwrap_or(u32::MAX)
    }

    /// The shard of a key's hash: bits the table itself does not use (it takes the low bits
    /// for the slot and the top seven for its tags).
    fn shard(&self, hash: u64) -> &Shard {
        &self.shards[(hash >> 40) as usize % SHARDS]
    }

    /// The answer for `key`, unless it expired or is a failover answer older than the
    /// latest recovery (`recoveries`, the upstream pool's count).
    pub fn get(&self, key: &CacheKey, recoveries: u64) -> Option<Arc<Answer>> {
        self.get_at(key, recoveries, Instant::now())
    }

    /// `get`, with the time already read (once per batch, on the UDP hot path).
    pub fn get_at(&self, key: &CacheKey, recoveries: u64, now: Instant) -> Option<Arc<Answer>> {
        self.lookup(self.hash(key), key, recoveries, now)
    }

    /// `get_at` for a key whose hash is known.
    pub(crate) fn get_hashed(
        &self,
        key: &HashedKey,
        recoveries: u64,
        now: Instant,
    ) -> Option<Arc<Answer>> {
        self.lookup(key.hash, &key.key, recoveries, now)
    }

    fn lookup(
        &self,
        hash: u64,
        key: &CacheKey,
        recoveries: u64,
        now: Instant,
    ) -> Option<Arc<Answer>> {
        let mut guard = self.shard(hash).lock().unwrap();
        let shard = &mut *guard;
        let entry = shard.map.find_entry(hash, same(hash, key)).ok()?;
        let held = entry.get();
        if held.answer.recovered_past(recoveries) {
            entry.remove();
        } else if !held.expired(now) {
            return Some(held.answer.clone());
        } else if held.answer.failure {
            // Kept as a miss, for the next failure to find (the backoff). Counted once:
            // `expires` 0 marks it (a stored entry expires at 1 or later), and makes it the
            // first to go when room is needed.
            let held = entry.into_mut();
            if held.expires == 0 {
                return None;
            }
            held.expires = 0;
        } else {
            entry.remove();
        }
        shard.expired += 1;
        None
    }

    /// Stores `answer` under `key`, first evicting a sampled entry if the shard is full. An
    /// answer with TTL 0 is not stored.
    pub fn insert(&self, key: CacheKey, answer: Arc<Answer>) {
        self.insert_hashed(&self.hashed(key), answer, self.generation());
    }

    /// `insert`, with the key's hash already known.
    pub(crate) fn insert_hashed(&self, key: &HashedKey, answer: Arc<Answer>, sought: Generation) {
        let (hash, key) = (key.hash, &key.key);
        if answer.ttl == 0 {
            return;
        }
        let at = self.seconds(answer.stored);
        let mut guard = self.shard(hash).lock().unwrap();
        // Checked under the shard's lock: a `clear` that bumped the generation first empties
        // this shard after us, or has emptied it already and we see its bump.
        if self.generation() != sought {
            return;
        }
        let shard = &mut *guard;
        if let Some(held) = shard.map.find_mut(hash, same(hash, key)) {
            let lifetime = held.next_hold(&answer);
            held.expires = at.saturating_add(lifetime);
            (held.lifetime, held.answer) = (lifetime, answer);
            return;
        }
        if shard.map.len() >= self.per_shard {
            // Sampled eviction: of a few entries from a random slot on, drop the one that
            // expires first (an expired one if there is any). Constant work per insert, unlike
            // a sweep of the shard. From slot 0 every time, the scan would lengthen as the
            // table's first slots emptied, and would evict whatever was stored there last,
            // whatever its TTL.
            let map = &shard.map;
            let slots = map.num_buckets();
            let start = rand::random_range(0..slots);
            let victim = (start..slots)
                .chain(0..start)
                .filter_map(|i| map.get_bucket(i).map(|e| (e.expires, i)))
                .take(EVICTION_SAMPLE)
                .min()
                .map(|(_, i)| i);
            if let Some(Ok(entry)) = victim.map(|i| shard.map.get_bucket_entry(i)) {
                entry.remove();
                shard.evicted += 1;
            }
        }
        let entry = Entry {
            hash,
            key: Box::from(key.as_slice()),
            expires: at.saturating_add(answer.ttl),
            lifetime: answer.ttl,
            answer,
        };
        shard.map.insert_unique(hash, entry, |e| e.hash);
    }

    /// Empties the cache; answers sought before this are not stored after it.
    pub(crate) fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        for shard in self.shards.iter() {
            shard.lock().unwrap().map.clear();
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap().map.len())
            .sum()
    }

    /// Entries held, evicted and expired so far (each shard locked in turn: a scrape's view).
    pub(crate) fn stats(&self) -> CacheStats {
        self.shards.iter().fold(CacheStats::default(), |sum, s| {
            let s = s.lock().unwrap();
            CacheStats {
                entries: sum.entries + s.map.len(),
                evicted: sum.evicted + s.evicted,
                expired: sum.expired + s.expired,
            }
        })
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str) -> (Vec<u8>, Query) {
        let n = wire::name_from_dotted(name).unwrap();
        let bytes = wire::build_query(&n, wire::TYPE_A, 7);
        let q = wire::parse_query(&bytes).unwrap();
        (bytes, q)
    }

    fn answer_for(bytes: &[u8], ttl: u32) -> Arc<Answer> {
        let mut reply = bytes.to_vec();
        reply[2] |= 0x80;
        Arc::new(Answer::new(reply, TtlOffsets::new(), ttl, Instant::now()))
    }

    #[test]
    fn bounded_and_keyed_case_insensitively() {
        let cache = Cache::new(32);
        for i in 0..200 {
            let (bytes, q) = query(&format!("n{i}.example"));
            cache.insert(CacheKey::of(&q), answer_for(&bytes, 60));
        }
        assert!(cache.len() <= 32, "{} entries", cache.len());
        let stats = cache.stats();
        assert_eq!(stats.entries, cache.len());
        assert_eq!(
            stats.evicted,
            200 - cache.len() as u64,
            "each insert into a full shard"
        );
        let (bytes, q) = query("Mixed.Example");
        cache.insert(CacheKey::of(&q), answer_for(&bytes, 60));
        let (_, lower) = query("mixed.example");
        assert!(cache.get(&CacheKey::of(&lower), 0).is_some());
    }

    /// Stores answers for `count` names, each with a TTL a second longer than the one before
    /// (so each expires after all stored before it); returns their keys in that order.
    fn store_with_rising_ttls(cache: &Cache, count: u32) -> Vec<CacheKey> {
        (0..count)
            .map(|i| {
                let (bytes, q) = query(&format!("n{i}.example"));
                cache.insert(CacheKey::of(&q), answer_for(&bytes, 1000 + i));
                CacheKey::of(&q)
            })
            .collect()
    }

    /// A full shard lets go of the answer that expires first among those it samples; with no
    /// more answers per shard than it samples, that is the one expiring first in the shard.
    /// So of answers stored with ever longer TTLs, only the last of each shard are left. (This
    /// checks the choice among the sample, not where the sample starts: the next test does.)
    #[test]
    fn a_full_shard_evicts_what_expires_first() {
        let cache = Cache::new(SHARDS * EVICTION_SAMPLE);
        let stored = 1600;
        let keys = store_with_rising_ttls(&cache, stored);
        let kept: Vec<usize> = (0..stored as usize)
            .filter(|&i| cache.get(&keys[i], 0).is_some())
            .collect();
        assert_eq!(kept.len(), SHARDS * EVICTION_SAMPLE);
        assert!(kept.contains(&(stored as usize - 1)), "the last one stored");
        // About 100 answers per shard, of which the last 8 stay: none of the first half.
        assert!(kept.iter().all(|&i| i >= stored as usize / 2), "{kept:?}");
    }

    /// With more answers per shard than it samples, the sample starts at a random slot: every
    /// old answer is soon in one and goes, wherever it sits in the table. (Sampled from slot 0
    /// every time, the answers stored at the table's start go first, new or old, and old ones
    /// further on stay.) Its shard takes some 1 000 samples of 8 of its 64 answers while 16 000
    /// more are stored, so an old answer is in about 125 of them, and in each it is among the
    /// oldest: for one to stay is not a matter of chance worth counting ((7/8)^1000 to be in
    /// none).
    #[test]
    fn eviction_samples_from_anywhere_in_the_shard() {
        let per_shard = 64;
        let cache = Cache::new(SHARDS * per_shard);
        let (old, stored) = (256, 16_256);
        let keys = store_with_rising_ttls(&cache, stored);
        let kept_old = keys[..old as usize]
            .iter()
            .filter(|k| cache.get(k, 0).is_some())
            .count();
        assert_eq!(kept_old, 0, "of the first {old} answers stored");
    }

    #[test]
    fn failover_answers_end_with_the_next_recovery() {
        let cache = Cache::new(10);
        let (bytes, q) = query("a.example");
        let mut reply = bytes.clone();
        reply[2] |= 0x80;
        let failover = Answer::new(reply, TtlOffsets::new(), 60, Instant::now()).until_recovery(3);
        cache.insert(CacheKey::of(&q), Arc::new(failover));
        assert!(cache.get(&CacheKey::of(&q), 3).is_some());
        assert!(cache.get(&CacheKey::of(&q), 4).is_none());
        assert!(cache.is_empty(), "dropped, not just hidden");
        assert_eq!(cache.stats().expired, 1);
        // Valid for recovery count 0 too (held as 1), and an answer not from a failover is
        // valid whatever the count.
        let mut reply = bytes.clone();
        reply[2] |= 0x80;
        let at_zero = Answer::new(reply.clone(), TtlOffsets::new(), 60, Instant::now());
        assert!(!at_zero.until_recovery(0).recovered_past(0));
        let plain = Answer::new(reply, TtlOffsets::new(), 60, Instant::now());
        assert!(!plain.recovered_past(0) && !plain.recovered_past(u64::MAX));
    }

    /// An answer and its Arc's counts fit jemalloc's 128-byte size class: each of the
    /// (default) 100 000 cached answers costs 128 bytes beside its reply, not 160.
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn an_answer_with_its_counts_fits_128_bytes() {
        assert!(std::mem::size_of::<Answer>() + 16 <= 128);
    }

    /// A cache, a question's bytes and key, and the time the test starts from.
    fn one_question(name: &str) -> (Cache, Vec<u8>, CacheKey, Instant) {
        let (bytes, q) = query(name);
        (Cache::new(10), bytes, CacheKey::of(&q), Instant::now())
    }

    /// A SERVFAIL for `bytes`'s question, passed on as a failure, stored `at`.
    fn failure_at(bytes: &[u8], at: Instant) -> Arc<Answer> {
        let mut reply = bytes.to_vec();
        reply[2] |= 0x80;
        reply[3] = (reply[3] & 0xf0) | 2;
        Arc::new(
            Answer::new(reply, TtlOffsets::new(), FAILURE_TTL, Instant::now())
                .failure()
                .stored_at(at),
        )
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// RFC 9520's backoff: a failure that comes back as soon as it is asked again is held
    /// 2, 4, 8 seconds, then 8 again.
    #[test]
    fn a_repeated_failure_is_held_twice_as_long_up_to_the_cap() {
        let (cache, bytes, key, t0) = one_question("broken.example");
        let mut at = t0;
        for hold in [2, 4, 8, 8] {
            cache.insert(key, failure_at(&bytes, at));
            assert!(
                cache
                    .get_at(&key, 0, at + secs(hold) - Duration::from_millis(1),)
                    .is_some(),
                "held {hold} s"
            );
            at += secs(hold);
            assert!(cache.get_at(&key, 0, at).is_none(), "gone after {hold} s");
        }
        assert_eq!(FAILURE_HOLD_MAX, 8);
    }

    /// Whether the answer for `key` is held at `at`.
    fn held(cache: &Cache, key: &CacheKey, at: Instant) -> bool {
        cache.get_at(key, 0, at).is_some()
    }

    /// The streak goes on across a pause of up to `FAILURE_HOLD_MAX` after a hold ends, and
    /// starts over after a longer one.
    #[test]
    fn a_failure_after_a_long_pause_is_held_briefly_again() {
        let (cache, bytes, key, t0) = one_question("flaky.example");
        cache.insert(key, failure_at(&bytes, t0));
        // 7 s after the 2 s hold ended: held 4 s.
        let t1 = t0 + secs(2 + 7);
        cache.insert(key, failure_at(&bytes, t1));
        assert!(held(&cache, &key, t1 + secs(3)), "held 4 s");
        assert!(!held(&cache, &key, t1 + secs(4)));
        // 9 s after that 4 s hold ended: 2 s again.
        let t2 = t1 + secs(4 + 9);
        cache.insert(key, failure_at(&bytes, t2));
        assert!(held(&cache, &key, t2 + secs(1)));
        assert!(!held(&cache, &key, t2 + secs(2)), "held 2 s, not 8");
    }

    /// Any other answer ends the streak, whether or not it was looked up in between.
    #[test]
    fn an_answer_between_failures_ends_the_streak() {
        let (cache, bytes, key, t0) = one_question("flaky.example");
        cache.insert(key, failure_at(&bytes, t0));
        let answer = Answer::new(bytes.clone(), TtlOffsets::new(), 3, Instant::now())
            .stored_at(t0 + secs(2));
        cache.insert(key, Arc::new(answer));
        cache.insert(key, failure_at(&bytes, t0 + secs(6)));
        assert!(!held(&cache, &key, t0 + secs(8)), "held 2 s, not more");
    }

    /// Two walks for one question racing: the second failure, stored while the first is still
    /// held, is held as long, not twice as long; the next one after the hold doubles it.
    #[test]
    fn a_failure_stored_over_a_live_one_keeps_its_hold() {
        let (cache, bytes, key, t0) = one_question("raced.example");
        cache.insert(key, failure_at(&bytes, t0));
        let t1 = t0 + Duration::from_millis(10);
        cache.insert(key, failure_at(&bytes, t1));
        assert!(!held(&cache, &key, t1 + secs(2)), "held 2 s, not 4");
        cache.insert(key, failure_at(&bytes, t1 + secs(2)));
        assert!(held(&cache, &key, t1 + secs(5)), "then 4 s");
    }

    /// An expired answer is counted once, and goes; an expired failure is counted once too
    /// (however often it is asked for before the next one), and stays as a miss.
    #[test]
    fn expired_answers_are_counted_once() {
        // Room for both in any shard (ten answers would be one per shard).
        let cache = Cache::new(SHARDS * 2);
        let (bytes, q) = query("a.example");
        let (fbytes, fq) = query("broken.example");
        let t0 = Instant::now();
        cache.insert(
            CacheKey::of(&q),
            Arc::new(Answer::new(bytes, TtlOffsets::new(), 1, Instant::now()).stored_at(t0)),
        );
        cache.insert(CacheKey::of(&fq), failure_at(&fbytes, t0));
        for _ in 0..3 {
            assert!(!held(&cache, &CacheKey::of(&q), t0 + secs(2)));
            assert!(!held(&cache, &CacheKey::of(&fq), t0 + secs(2)));
        }
        assert_eq!(cache.stats().expired, 2);
        assert_eq!(cache.len(), 1, "the failure stays, as a miss");
    }

    #[test]
    fn a_second_answer_for_a_question_replaces_the_first() {
        let cache = Cache::new(10);
        let (bytes, q) = query("a.example");
        cache.insert(CacheKey::of(&q), answer_for(&bytes, 60));
        cache.insert(CacheKey::of(&q), answer_for(&bytes, 300));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(&CacheKey::of(&q), 0).unwrap().ttl, 300);
        assert_eq!(cache.stats().evicted, 0);
    }

    #[test]
    fn zero_ttl_is_not_stored() {
        let cache = Cache::new(10);
        let (bytes, q) = query("a.example");
        cache.insert(CacheKey::of(&q), answer_for(&bytes, 0));
        assert!(cache.is_empty());
    }

    #[test]
    fn oversized_answer_renders_truncated() {
        let (bytes, q) = query("a.example");
        let mut reply = bytes.clone();
        reply[2] |= 0x80;
        reply.extend(std::iter::repeat_n(0u8, 600));
        let a = Answer::new(reply, TtlOffsets::new(), 60, Instant::now());
        let out = a.render(&bytes, &q, 512, Instant::now());
        assert!(wire::tc(&out));
        assert_eq!(out.len(), q.question_end);
        assert!(a.render(&bytes, &q, 65535, Instant::now()).len() > 600);
    }
}
