//! The cache keeps answering while the upstream is gone, exactly until the TTL runs out.

use crate::clients::dig;
use crate::lab::{Lab, wait_until};
use std::time::{Duration, Instant};

pub fn outlives_upstream_until_ttl(lab: &mut Lab) {
    let outside = lab.nsd_outside(3);
    let rc = lab.resolv_conf("resolv.conf", &[outside], "");
    let virtdns = lab.virtdns(1, &rc, "");

    // short.example.com has a TTL of 3 s, www.example.com 300 s.
    let fetched = Instant::now();
    let first = dig(virtdns).query("short.example.com", "A");
    assert_eq!(first.answers, vec!["A 192.0.2.3"]);
    assert_eq!(
        dig(virtdns).query("www.example.com", "A").answers,
        vec!["A 192.0.2.80"]
    );

    lab.proc("nsd-3").kill();
    let cached = dig(virtdns).query("short.example.com", "A");
    assert_eq!(
        cached.answers,
        vec!["A 192.0.2.3"],
        "served from cache with the upstream gone"
    );
    assert!(cached.ttls[0] <= 3);

    // Once the TTL has run out: SERVFAIL, promptly.
    wait_until(
        Duration::from_secs(6),
        "expired answer gives SERVFAIL",
        || dig(virtdns).query("short.example.com", "A").status == "SERVFAIL",
    );
    assert!(
        fetched.elapsed() >= Duration::from_secs(3),
        "served no longer than its TTL"
    );
    let after = dig(virtdns).timeout(3).query("short.example.com", "A");
    assert_eq!(after.status, "SERVFAIL");
    assert!(
        after.time < Duration::from_secs(1),
        "SERVFAIL, not a hang: {:?}",
        after.time
    );
    // The long-lived answer is still there, its TTL aged.
    let www = dig(virtdns).query("www.example.com", "A");
    assert_eq!(www.answers, vec!["A 192.0.2.80"]);
    assert!(
        www.ttls[0] < 300 && www.ttls[0] >= 290,
        "aged TTL {}",
        www.ttls[0]
    );
}
