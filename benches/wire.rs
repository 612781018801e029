//! Micro-benchmarks of the cache-hit fast path, piece by piece: reading a query in place,
//! building its cache key, the cache lookup, and reissuing a stored reply (ID and spelling
//! rewritten, TTLs aged), and what reporting each query (metrics, query log off) adds to it.
//! `cargo bench --bench wire`.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;
use virtdns::dns::cache::{Answer, Cache, CacheKey};
use virtdns::dns::observe::Arrival;
use virtdns::dns::served::{Source, Transport};
use virtdns::dns::wire;

/// A query for `name` A with an EDNS OPT, as dig sends it.
fn query(name: &str) -> Vec<u8> {
    let mut q = wire::build_query(&wire::name_from_dotted(name).unwrap(), wire::TYPE_A, 0x1234);
    wire::push_opt(&mut q, false, 0);
    q
}

/// A reply to `q` with two A records (TTL 300), OPT stripped as the cache stores it.
fn stored_reply(q: &[u8], parsed: &wire::Query) -> Answer {
    let mut r = q[..parsed.question_end].to_vec();
    r[2] |= 0x80;
    r[3] = 0x80;
    r[6..8].copy_from_slice(&2u16.to_be_bytes());
    r[10..12].fill(0);
    let mut offsets = virtdns::dns::wire::TtlOffsets::new();
    for last in [1u8, 2] {
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        offsets.push(r.len() as u16);
        r.extend_from_slice(&[0, 0, 1, 44, 0, 4, 192, 0, 2, last]);
    }
    Answer::new(r, offsets, 300, Instant::now())
}

fn fast_path(c: &mut Criterion) {
    let q = query("www.Example.com");
    let parsed = wire::parse_query(&q).unwrap();
    c.bench_function("parse_query", |b| {
        b.iter(|| wire::parse_query(black_box(&q)).unwrap())
    });
    c.bench_function("cache_key", |b| b.iter(|| CacheKey::of(black_box(&parsed))));

    let cache = Cache::new(10_000);
    for i in 0..5_000 {
        let other = query(&format!("n{i}.example.com"));
        let p = wire::parse_query(&other).unwrap();
        cache.insert(CacheKey::of(&p), Arc::new(stored_reply(&other, &p)));
    }
    cache.insert(CacheKey::of(&parsed), Arc::new(stored_reply(&q, &parsed)));
    let key = CacheKey::of(&parsed);
    c.bench_function("cache_lookup_hit", |b| {
        b.iter(|| cache.get(black_box(&key), 0).unwrap())
    });

    let answer = stored_reply(&q, &parsed);
    let mut out = Vec::with_capacity(512);
    c.bench_function("render_reply_id_spelling_ttl", |b| {
        b.iter(|| answer.render_into(&mut out, black_box(&q), &parsed, 1232, Instant::now()))
    });
    let mut bytes = out.clone();
    c.bench_function("age_ttls_two_records", |b| {
        b.iter(|| wire::age_ttls(black_box(&mut bytes), &[34, 50], 1))
    });
    c.bench_function("whole_hit_path", |b| {
        b.iter(|| {
            let now = Instant::now();
            let p = wire::parse_query(black_box(&q)).unwrap();
            let a = cache.get_at(&CacheKey::of(&p), 0, now).unwrap();
            a.render_into(&mut out, &q, &p, p.udp_limit(), now);
        })
    });
    // What each query adds for the metrics and the query log (off): the same path, reported.
    let peer: std::net::SocketAddr = "192.0.2.5:40000".parse().unwrap();
    c.bench_function("observe_hit_log_off", |b| {
        b.iter(|| {
            let arrival = Arrival::new(Transport::Udp, Some(black_box(peer)));
            arrival.answered(black_box(&q), Source::Cache, black_box(&out), None);
        })
    });
    c.bench_function("whole_hit_path_observed", |b| {
        b.iter(|| {
            let arrival = Arrival::new(Transport::Udp, Some(black_box(peer)));
            let now = Instant::now();
            let p = wire::parse_query(black_box(&q)).unwrap();
            let a = cache.get_at(&CacheKey::of(&p), 0, now).unwrap();
            a.render_into(&mut out, &q, &p, p.udp_limit(), now);
            arrival.answered(&q, Source::Cache, &out, None);
        })
    });
}

criterion_group!(benches, fast_path);
criterion_main!(benches);
