//! The answer cache: upstream replies kept as bytes (OPT removed), keyed by the lower-cased
//! question plus the DO and CD bits, served by rewriting the ID and ageing TTLs in place.
//!
//! Sharded behind plain mutexes (held for a hash lookup, never across `.await`) so workers on
//! different cores rarely meet. Bounded: a full shard first drops expired answers, then an
//! arbitrary one (hash order, so effectively random eviction).

use crate::dns::wire::{self, Query, WireName};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
/// Upper bound on any cached TTL.
pub const MAX_TTL: u32 = 86_400;
/// How long a failure (SERVFAIL and the like) is remembered.
pub const FAILURE_TTL: u32 = 2;

/// What identifies a cached answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey {
    name: WireName,
    qtype: u16,
    qclass: u16,
    /// DO, CD and RD bits: DNSSEC-aware, validating and non-recursive clients get their own
    /// answers.
    flags: u8,
}

impl CacheKey {
    pub fn of(q: &Query) -> CacheKey {
        CacheKey {
            name: q.name,
            qtype: q.qtype,
            qclass: q.qclass,
            flags: u8::from(q.dnssec_ok()) | (u8::from(q.cd) << 1) | (u8::from(q.rd) << 2),
        }
    }
}

/// A reply ready to be reissued: bytes without OPT, where its TTLs are, when it was stored.
#[derive(Debug)]
pub struct Answer {
    bytes: Box<[u8]>,
    ttl_offsets: Box<[u16]>,
    stored: Instant,
    ttl: u32,
}

impl Answer {
    pub fn new(bytes: Vec<u8>, ttl_offsets: Vec<u16>, ttl: u32) -> Answer {
        Answer {
            bytes: bytes.into_boxed_slice(),
            ttl_offsets: ttl_offsets.into_boxed_slice(),
            stored: Instant::now(),
            ttl: ttl.min(MAX_TTL),
        }
    }

    pub fn rcode(&self) -> u8 {
        wire::rcode(&self.bytes)
    }

    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.stored) >= Duration::from_secs(self.ttl as u64)
    }

    /// The reply for this client: its ID and spelling, TTLs aged, OPT if it used EDNS, and
    /// truncated (TC, no records) when larger than `limit`.
    pub fn render(&self, client: &[u8], q: &Query, limit: usize) -> Vec<u8> {
        let elapsed = self.stored.elapsed().as_secs() as u32;
        let mut out = Vec::with_capacity(self.bytes.len() + wire::OPT_LEN);
        out.extend_from_slice(&self.bytes);
        wire::age_ttls(&mut out, &self.ttl_offsets, elapsed);
        if wire::finish_reply(&mut out, client, q, limit) {
            out
        } else {
            let mut t = wire::header_only_reply(client, Some(q), self.rcode(), true);
            t[2] |= self.bytes[2] & 0x04; // keep AA
            t
        }
    }
}

type Shard = Mutex<HashMap<CacheKey, Arc<Answer>>>;

pub struct Cache {
    shards: Box<[Shard]>,
    per_shard: usize,
}

impl Cache {
    pub fn new(capacity: usize) -> Cache {
        Cache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    /// FNV-1a over the name and type: cheap, and stable for a key.
    fn shard(&self, key: &CacheKey) -> &Shard {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.name.as_bytes().iter().chain(&key.qtype.to_be_bytes()) {
            h = (h ^ *b as u64).wrapping_mul(0x100_0000_01b3);
        }
        &self.shards[(h as usize) % SHARDS]
    }

    pub fn get(&self, key: &CacheKey) -> Option<Arc<Answer>> {
        let mut shard = self.shard(key).lock().unwrap();
        let answer = shard.get(key)?;
        if answer.expired(Instant::now()) {
            shard.remove(key);
            return None;
        }
        Some(answer.clone())
    }

    pub fn insert(&self, key: CacheKey, answer: Arc<Answer>) {
        if answer.ttl == 0 {
            return;
        }
        let mut shard = self.shard(&key).lock().unwrap();
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            let now = Instant::now();
            shard.retain(|_, a| !a.expired(now));
            if shard.len() >= self.per_shard
                && let Some(victim) = shard.keys().next().copied()
            {
                shard.remove(&victim);
            }
        }
        shard.insert(key, answer);
    }

    pub fn clear(&self) {
        for shard in self.shards.iter() {
            shard.lock().unwrap().clear();
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
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
        Arc::new(Answer::new(reply, Vec::new(), ttl))
    }

    #[test]
    fn bounded_and_keyed_case_insensitively() {
        let cache = Cache::new(32);
        for i in 0..200 {
            let (bytes, q) = query(&format!("n{i}.example"));
            cache.insert(CacheKey::of(&q), answer_for(&bytes, 60));
        }
        assert!(cache.len() <= 32, "{} entries", cache.len());
        let (bytes, q) = query("Mixed.Example");
        cache.insert(CacheKey::of(&q), answer_for(&bytes, 60));
        let (_, lower) = query("mixed.example");
        assert!(cache.get(&CacheKey::of(&lower)).is_some());
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
        let a = Answer::new(reply, Vec::new(), 60);
        let out = a.render(&bytes, &q, 512);
        assert!(wire::tc(&out));
        assert_eq!(out.len(), q.question_end);
        assert!(a.render(&bytes, &q, 65535).len() > 600);
    }
}
