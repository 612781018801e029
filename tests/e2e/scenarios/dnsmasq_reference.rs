//! What dnsmasq 2.90 with libvirt's options (`strict-order`) gets wrong, shown side by side with
//! virtdns on the same upstreams. These assertions document the failures virtdns fixes; if a
//! dnsmasq update fixes one, its assertion here fails and the README's claim must change.

use super::expect_split_answers;
use crate::clients::{ALL_EDNS, Edns, dig};
use crate::lab::Lab;
use crate::peers::Fake;

pub fn refused_with_cookie(lab: &mut Lab) {
    let (_, _, rc) = super::seed_layout(lab);
    let dnsmasq = lab.dnsmasq(4, &rc);
    let virtdns = lab.virtdns(1, &rc, "");

    // dnsmasq: a query carrying a cookie gets the internal server's REFUSED.
    let r = dig(dnsmasq).edns(Edns::Cookie).query("n1.example.com", "A");
    assert_eq!(r.status, "REFUSED", "dnsmasq with cookie: {r:?}");
    // Without EDNS it moves on (fixed in 2.78).
    let r = dig(dnsmasq).edns(Edns::None).query("n2.example.com", "A");
    assert_eq!(r.status, "NOERROR", "dnsmasq without EDNS: {r:?}");

    for edns in ALL_EDNS {
        let r = dig(virtdns).edns(edns).query("n1.example.com", "A");
        assert_eq!(r.answers, vec!["A 192.0.2.2"], "virtdns with {edns:?}");
    }
    expect_split_answers(virtdns);
}

pub fn notimp_first(lab: &mut Lab) {
    let (first, _fake) = lab.fake(2, Fake::Rcode(4));
    let outside = lab.nsd_outside(3);
    let rc = lab.resolv_conf("resolv.conf", &[first, outside], "");
    let dnsmasq = lab.dnsmasq(4, &rc);
    let virtdns = lab.virtdns(1, &rc, "");

    for (i, edns) in ALL_EDNS.iter().enumerate() {
        let name = format!("n{i}.example.com");
        let r = dig(dnsmasq).edns(*edns).query(&name, "A");
        assert_eq!(
            r.status, "NOTIMP",
            "dnsmasq passes NOTIMP through ({edns:?})"
        );
        let r = dig(virtdns).edns(*edns).query(&name, "A");
        assert_eq!(
            r.status, "NOERROR",
            "virtdns moves on from NOTIMP ({edns:?})"
        );
        assert_eq!(r.answers.len(), 1);
    }
    let host = lab.resolv_conf("host.resolv.conf", &[first, outside], "");
    let guest = lab.resolv_conf("guest.resolv.conf", &[virtdns], "");
    super::expect_same_view(
        &host,
        &guest,
        &["www.example.com", "alias.example.com", "nx.example.com"],
    );
}

pub fn dead_first(lab: &mut Lab) {
    let (first, _silent) = lab.fake(2, Fake::Silent);
    let outside = lab.nsd_outside(3);
    let rc = lab.resolv_conf("resolv.conf", &[first, outside], "");
    let dnsmasq = lab.dnsmasq(4, &rc);
    let virtdns = lab.virtdns(1, &rc, "");

    // dnsmasq is up (it answers its own name at once)...
    assert_eq!(
        dig(dnsmasq).query("alive.test", "A").answers,
        vec!["A 192.0.2.99"]
    );
    // ...but every new name waits for the silent server; a one-try client gets nothing.
    for i in 0..3 {
        let r = dig(dnsmasq)
            .timeout(2)
            .query(&format!("n{i}.example.com"), "A");
        assert_eq!(r.status, "TIMEOUT", "dnsmasq, new name {i}: {r:?}");
    }
    // virtdns: the first new name costs one short timeout, the rest none.
    for i in 10..20 {
        let r = dig(virtdns)
            .timeout(2)
            .query(&format!("n{i}.example.com"), "A");
        assert_eq!(r.status, "NOERROR", "virtdns, new name {i}");
    }
}
