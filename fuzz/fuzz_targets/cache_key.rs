//! The cache key: two client queries (the first byte says where the first ends) share a key
//! exactly when they ask the same question, name compared without ASCII case, with the same
//! DO, CD and RD bits; a cached answer is found under one exactly when it was stored under the
//! other. The names are compared a second way, from the packets' own bytes and with
//! hickory-proto where it reads both.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use virtdns::dns::cache::{Answer, Cache, CacheKey};
use virtdns::dns::wire::{self, Query};
use virtdns_fuzz::hickory;

/// The question as the client wrote it, ASCII case folded: the name's wire bytes (parse_query
/// takes only uncompressed questions), then type, class and the bits that split the cache.
fn question(data: &[u8], q: &Query) -> (Vec<u8>, u16, u16, bool, bool, bool) {
    let name = data[wire::HEADER_LEN..q.question_end - 4].to_ascii_lowercase();
    (name, q.qtype, q.qclass, q.dnssec_ok(), q.cd, q.rd)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let (a, b) = rest.split_at((split as usize).min(rest.len()));
    let (Ok(qa), Ok(qb)) = (wire::parse_query(a), wire::parse_query(b)) else {
        return;
    };
    let (ka, kb) = (CacheKey::of(&qa), CacheKey::of(&qb));
    let same = question(a, &qa) == question(b, &qb);
    assert_eq!(ka == kb, same, "key equality");
    assert_eq!(ka.as_slice() == kb.as_slice(), same);
    assert_eq!(&ka.as_slice()[5..], qa.name.as_bytes());

    if let (Some(ma), Some(mb)) = (hickory(a), hickory(b))
        && ma.queries.len() == 1
        && mb.queries.len() == 1
    {
        // hickory-proto compares names without ASCII case too.
        let same_name = ma.queries[0].name() == mb.queries[0].name();
        assert_eq!(same_name, qa.name == qb.name, "names: hickory and virtdns");
    }

    let cache = Cache::new(4);
    let reply = wire::header_only_reply(a, Some(&qa), wire::Rcode::NOERROR, false);
    cache.insert(
        ka,
        Arc::new(Answer::new(
            reply,
            Default::default(),
            60,
            std::time::Instant::now(),
        )),
    );
    assert_eq!(
        cache.get(&kb, 0).is_some(),
        same,
        "found under the other key"
    );
    assert!(cache.get(&ka, 0).is_some());
});
