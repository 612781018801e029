//! Upstreams that fail: a real server answering SERVFAIL, a silent one, and an internal server
//! that answers NXDOMAIN for every outside name.

use super::{expect_same_view, expect_split_answers};
use crate::clients::{ALL_EDNS, dig, getent};
use crate::lab::{Lab, run};
use crate::peers::{Fake, virtdns_bin};
use std::process::Command;
use std::time::Duration;

pub fn servfail_first(lab: &mut Lab) {
    let first = lab.unbound_servfail(2);
    let outside = lab.nsd_outside(3);
    let rc = lab.resolv_conf("resolv.conf", &[first, outside], "");
    let virtdns = lab.virtdns(1, &rc, "");

    assert_eq!(
        dig(first).query("www.example.com", "A").status,
        "SERVFAIL",
        "the first server fails"
    );
    for edns in ALL_EDNS {
        let r = dig(virtdns).edns(edns).query("www.example.com", "A");
        assert_eq!(r.answers, vec!["A 192.0.2.80"], "{edns:?}");
    }
    let guest = lab.resolv_conf("guest.resolv.conf", &[virtdns], "");
    expect_same_view(
        &rc,
        &guest,
        &["www.example.com", "alias.example.com", "nx.example.com"],
    );
}

/// A silent first server: the first new name resolves within 1 s, the next 100 different
/// names within 50 ms each.
pub fn dead_first_is_fast(lab: &mut Lab) {
    let (dead, _silent) = lab.fake(2, Fake::Silent);
    let outside = lab.nsd_outside(3);
    let rc = lab.resolv_conf("resolv.conf", &[dead, outside], "");
    let virtdns = lab.virtdns(1, &rc, "");

    let edns_modes = ALL_EDNS;
    let first = dig(virtdns).query("n0.example.com", "A");
    assert_eq!(first.status, "NOERROR");
    assert!(
        first.time < Duration::from_secs(1),
        "first name took {:?}",
        first.time
    );
    let mut slowest = Duration::ZERO;
    for i in 1..=100 {
        let r = dig(virtdns)
            .edns(edns_modes[i % 3])
            .query(&format!("n{i}.example.com"), "A");
        assert_eq!(r.status, "NOERROR", "n{i}");
        assert!(
            r.time <= Duration::from_millis(50),
            "n{i} took {:?}",
            r.time
        );
        slowest = slowest.max(r.time);
    }
    println!(
        "    dead first server: first name {:?}, slowest of the next 100 {:?}",
        first.time, slowest
    );
}

pub fn internal_server_answers_nxdomain(lab: &mut Lab) {
    let internal = lab.nsd_internal_nxdomain(2);
    let outside = lab.nsd_outside(3);
    let host = lab.resolv_conf(
        "host.resolv.conf",
        &[internal, outside],
        "search corp.example\n",
    );
    let virtdns = lab.virtdns(1, &host, "");
    let guest = lab.resolv_conf("guest.resolv.conf", &[virtdns], "search corp.example\n");

    assert_eq!(
        dig(internal).query("www.example.com", "A").status,
        "NXDOMAIN",
        "internal hides outside names"
    );
    assert!(
        getent(&host, "www.example.com").is_empty(),
        "the host itself cannot resolve outside names"
    );
    // Discovery routes corp.example to the internal server and the rest elsewhere.
    crate::lab::wait_until(Duration::from_secs(3), "discovery applied", || {
        dig(virtdns).query("www.example.com", "A").status == "NOERROR"
    });
    expect_split_answers(virtdns);
    assert_eq!(getent(&guest, "intranet")[..1], ["198.51.100.10"]);
    assert_eq!(getent(&guest, "www.example.com")[..1], ["192.0.2.80"]);

    let check = run(Command::new(virtdns_bin())
        .arg("check")
        .arg("--resolv-conf")
        .arg(&host)
        .arg("--no-hosts"));
    assert!(
        check.contains(&format!(
            "corp.example -> {internal} [discovered split domain]"
        )),
        "check shows the discovered route:\n{check}"
    );
}
