//! The TTL rewrite: a reply `read_reply` accepts (bytes 0-3: the cap, 4-7: seconds elapsed,
//! 8: which question, then the reply), stored as the forwarder stores it, has every TTL capped
//! then aged in place by `cap_ttls` and `age_ttls`. Only the four bytes at each TTL offset may
//! change; where hickory-proto reads the stored reply, each of its records must have exactly
//! the TTL expected (RFC 2181 8: a TTL with the top bit set counts as zero).
#![no_main]

use hickory_proto::op::Message;
use hickory_proto::rr::{DNSClass, Name, RData, Record};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use virtdns::dns::wire;
use virtdns_fuzz::{Client, hickory, upstream_clients};

static CLIENTS: OnceLock<Vec<Client>> = OnceLock::new();

/// Every record of a message but OPT, in order.
fn all(m: &Message) -> impl Iterator<Item = &Record> {
    m.answers.iter().chain(&m.authorities).chain(&m.additionals)
}

/// What a message's records say, TTLs left out.
fn without_ttls(m: &Message) -> Vec<(Name, DNSClass, RData)> {
    all(m)
        .map(|r| (r.name.clone(), r.dns_class, r.data.clone()))
        .collect()
}

fn expected(ttl: u32, cap: u32, elapsed: u32) -> u32 {
    let ttl = if ttl & 0x8000_0000 != 0 { 0 } else { ttl };
    ttl.min(cap).saturating_sub(elapsed)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let cap = u32::from_be_bytes(data[0..4].try_into().unwrap());
    let elapsed = u32::from_be_bytes(data[4..8].try_into().unwrap());
    let clients = CLIENTS.get_or_init(upstream_clients);
    let c = &clients[data[8] as usize % clients.len()];
    let mut reply = data[9..].to_vec();
    if reply.len() >= 2 {
        wire::set_id(&mut reply, c.q.id);
    }
    let Ok(mut info) = wire::read_reply(&reply, &c.q, c.q.id) else {
        return;
    };
    if wire::qdcount(&reply) != 1 {
        return;
    }
    wire::strip_hop_by_hop(&mut reply, &mut info);
    let before = reply.clone();
    wire::cap_ttls(&mut reply, &info.ttl_offsets, cap);
    wire::age_ttls(&mut reply, &info.ttl_offsets, elapsed);

    let mut outside = vec![true; reply.len()];
    for &off in &info.ttl_offsets {
        let off = off as usize;
        outside[off..off + 4].fill(false);
        let old = u32::from_be_bytes(before[off..off + 4].try_into().unwrap());
        let new = u32::from_be_bytes(reply[off..off + 4].try_into().unwrap());
        assert_eq!(new, expected(old, cap, elapsed), "TTL at {off}");
    }
    for (i, keep) in outside.iter().enumerate() {
        if *keep {
            assert_eq!(reply[i], before[i], "byte {i} is no TTL");
        }
    }

    let Some(old) = hickory(&before) else {
        return;
    };
    assert_eq!(
        all(&old).count(),
        info.ttl_offsets.len(),
        "every record's TTL is known"
    );
    // A compression pointer may lead into a TTL (seen from fuzzing): then a name changes with
    // the TTL. Such a reply is the upstream's own doing and is stored as it came (only TTL
    // bytes change, checked above); it is told apart by setting every TTL to two values.
    let with_ttls = |v: u32| {
        let mut b = before.clone();
        for &off in &info.ttl_offsets {
            b[off as usize..off as usize + 4].copy_from_slice(&v.to_be_bytes());
        }
        hickory(&b).map(|m| without_ttls(&m))
    };
    let unchanged = Some(without_ttls(&old));
    if with_ttls(0) != unchanged || with_ttls(0x7fff_ffff) != unchanged {
        return;
    }
    let new = hickory(&reply).expect("hickory reads the rewritten reply");
    assert_eq!(Some(without_ttls(&new)), unchanged, "only TTLs change");
    for (o, n) in all(&old).zip(all(&new)) {
        assert_eq!(n.ttl, expected(o.ttl, cap, elapsed), "{o:?}");
    }
});
