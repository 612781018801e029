//! The seed's layout: an internal BIND that serves only corp.example and answers REFUSED for
//! everything else, listed first; NSD serving the outside names second.

use super::{GLIBC_NAMES, expect_same_view, expect_split_answers};
use crate::clients::{Edns, dig, getent};
use crate::lab::Lab;

pub fn refused_first_matches_host_view(lab: &mut Lab) {
    let (_, _, host) = super::seed_layout(lab);
    let virtdns = lab.virtdns(1, &host, "");
    let guest = lab.resolv_conf("guest.resolv.conf", &[virtdns], "search corp.example\n");

    expect_split_answers(virtdns);
    expect_same_view(&host, &guest, GLIBC_NAMES);
    assert_eq!(getent(&guest, "intranet")[..1], ["198.51.100.10"]);
    assert_eq!(getent(&guest, "www.example.com")[..1], ["192.0.2.80"]);
}

pub fn large_answers_and_tcp(lab: &mut Lab) {
    let (_, _, host) = super::seed_layout(lab);
    let virtdns = lab.virtdns(1, &host, "");

    // Over 2 KB of TXT: too large for UDP. dig retries over TCP after the truncated reply.
    for edns in [Edns::Cookie, Edns::None] {
        let r = dig(virtdns).edns(edns).query("big.example.com", "TXT");
        assert_eq!(r.status, "NOERROR", "{edns:?}");
        assert_eq!(r.answers.len(), 1);
        assert!(
            r.answers[0].len() > 2000,
            "TXT arrives whole: {} bytes",
            r.answers[0].len()
        );
    }
    // The UDP reply itself is truncated, not cut short or dropped.
    let udp_only = dig(virtdns).opt("+ignore").query("big.example.com", "TXT");
    assert_eq!(udp_only.status, "NOERROR");
    assert!(udp_only.has_flag("tc"), "flags {:?}", udp_only.flags);
    // Even a client offering a large buffer gets at most what virtdns advertises (1232) over
    // UDP: no fragmented replies (RFC 6891 6.2.5, DNS Flag Day 2020).
    let big_buffer = dig(virtdns)
        .opt("+ignore")
        .opt("+bufsize=4096")
        .query("big.example.com", "TXT");
    assert!(big_buffer.has_flag("tc"), "{big_buffer:?}");
    // And over TCP from the start.
    let tcp = dig(virtdns).opt("+tcp").query("www.example.com", "A");
    assert_eq!(tcp.answers, vec!["A 192.0.2.80"]);
}
