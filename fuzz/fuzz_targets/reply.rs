//! Upstream replies: the first byte picks one of a few client questions (and what the two
//! scripted servers are), the rest is the first server's reply. `wire::read_reply` checks it;
//! what it accepts goes through `strip_hop_by_hop`, `cap_ttls`, the cache's `Answer` and `render`
//! for a client with and one without EDNS, directly and through the forwarder's walk (which
//! stores what it takes, or fails over to the second server). Every reply sent must pass
//! `check_reply`; where hickory-proto reads the upstream reply, it must read what virtdns
//! sends from it, with the same records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use virtdns::dns::cache::Answer;
use virtdns::dns::forward::Forwarder;
use virtdns::dns::router::WalkOptions;
use virtdns::dns::upstream::UpstreamPool;
use virtdns::dns::wire::{self, ReplyInfo};
use virtdns_fuzz::{
    Client, FIRST, Kind, SECOND, Scripted, block_on, check_reply_hickory, hickory, hickory_records,
    other_edns, pointer_into_rewritten, upstream_clients,
};

static CLIENTS: OnceLock<Vec<(Client, Client)>> = OnceLock::new();

/// What `read_reply` says must hold of the bytes it read.
fn check_info(reply: &[u8], info: &ReplyInfo) {
    assert_eq!(info.answers, wire::ancount(reply));
    assert_eq!(info.rcode, wire::rcode(reply));
    let mut last = 0;
    for &off in &info.ttl_offsets {
        let off = off as usize;
        assert!(off > last && off + 6 <= reply.len(), "TTL offset {off}");
        last = off;
    }
    if let Some(opt) = info.opt {
        assert!(opt.start < opt.end && opt.end <= reply.len());
        assert_eq!(reply[opt.start], 0, "OPT owned by the root");
        assert_eq!(
            u16::from_be_bytes([reply[opt.start + 1], reply[opt.start + 2]]),
            wire::TYPE_OPT
        );
    }
}

/// The records hickory-proto reads in `reply`, if it reads it: (answers, all but OPT and TSIG).
fn hickory_counts(reply: &[u8], info: &ReplyInfo) -> Option<(usize, usize)> {
    let m = hickory(reply)?;
    assert_eq!(m.metadata.response_code.low(), info.rcode.bits(), "RCODE");
    assert_eq!(m.edns.is_some(), info.opt.is_some(), "OPT");
    assert_eq!(m.answers.len(), info.answers as usize, "answers");
    assert_eq!(hickory_records(&m), info.ttl_offsets.len(), "records");
    Some((m.answers.len(), hickory_records(&m)))
}

/// Renders `answer` for the client and for its twin with the other EDNS, over UDP and TCP.
fn render_all(
    answer: &Answer,
    c: &(Client, Client),
    must_read: bool,
    counts: Option<(usize, usize)>,
) {
    for client in [&c.0, &c.1] {
        for limit in [client.q.udp_limit(), u16::MAX as usize] {
            let out = answer.render(&client.bytes, &client.q, limit, std::time::Instant::now());
            check_reply_hickory(&client.bytes, &client.q, &out, limit, must_read, counts);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&select, reply)) = data.split_first() else {
        return;
    };
    let clients = CLIENTS.get_or_init(|| {
        upstream_clients()
            .into_iter()
            .map(|c| {
                let twin = other_edns(&c);
                (c, twin)
            })
            .collect()
    });
    let c = &clients[select as usize % clients.len()];
    let (client, q) = (&c.0.bytes, &c.0.q);
    let mut reply = reply.to_vec();
    if reply.len() >= 2 {
        wire::set_id(&mut reply, q.id);
    }

    // The pipeline, step by step.
    // A reply without its question (FORMERR, NOTIMP) is accepted unread: never stored.
    if let Ok(mut info) = wire::read_reply(&reply, q, q.id)
        && wire::qdcount(&reply) == 1
    {
        check_info(&reply, &info);
        let expected = hickory_counts(&reply, &info)
            .filter(|_| !pointer_into_rewritten(&reply, &info.ttl_offsets));
        {
            let mut stored = reply.clone();
            wire::strip_hop_by_hop(&mut stored, &mut info);
            assert!(info.opt.is_none());
            assert_eq!(
                wire::records_end(&stored, q.question_end),
                Ok(stored.len()),
                "stored bytes end with the last record"
            );
            // The OPT goes with the records after it.
            let expected = expected.map(|(answers, _)| (answers, info.ttl_offsets.len()));
            let again = wire::read_reply(&stored, q, q.id).expect("stored bytes read again");
            assert_eq!(again.ttl_offsets, info.ttl_offsets);
            assert!(again.opt.is_none());
            if let Some(e) = expected {
                let m = hickory(&stored).expect("hickory reads the stored bytes");
                assert_eq!((m.answers.len(), hickory_records(&m)), e);
                assert!(m.edns.is_none());
            }
            wire::cap_ttls(&mut stored, &info.ttl_offsets, 300);
            let answer = Answer::new(stored, info.ttl_offsets, 300, std::time::Instant::now());
            render_all(&answer, c, expected.is_some(), expected);
        }
    }

    // The same reply through the forwarder's walk, with the kind of each server picked too.
    let kinds = [Kind::from_bits(select >> 3), Kind::from_bits(select >> 5)];
    let pool = UpstreamPool::new((Duration::from_millis(200), Duration::from_secs(2)));
    let forwarder = Arc::new(Forwarder::with_exchanger(
        Scripted {
            fuzzed: reply.clone(),
            kinds,
        },
        pool.clone(),
        16,
        16,
    ));
    let servers = [pool.get(FIRST), pool.get(SECOND)];
    block_on(forwarder.learn_now(&servers));
    let options = WalkOptions {
        attempts: 1,
        ..WalkOptions::default()
    };
    let sought = forwarder.cache().generation();
    let outcome = block_on(forwarder.resolve(client, q, &servers, options, sought));
    if let Ok(answer) = outcome {
        // Whichever server's reply the walk took, hickory-proto reads what is sent from it
        // if it read the fuzzed reply (the second server's are well-formed).
        let hickory_reads = wire::read_reply(&reply, q, q.id).is_ok_and(|info| {
            wire::qdcount(&reply) != 1
                || (hickory_counts(&reply, &info).is_some()
                    && !pointer_into_rewritten(&reply, &info.ttl_offsets))
        });
        render_all(&answer, c, hickory_reads, None);
    }
});
