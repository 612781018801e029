//! Forwarders from the config, with libvirt's `<forwarder>` meaning: a domain with servers, a
//! domain kept local, servers replacing resolv.conf, and plain names that never leave.

use crate::lab::Lab;
use crate::peers::Fake;

pub fn config_forwarders(lab: &mut Lab) {
    let internal = lab.bind_internal(2);
    let outside = lab.nsd_outside(3);
    let (watcher, fake) = lab.fake(4, Fake::Rcode(5));
    // resolv.conf knows only a server that must never be asked.
    let rc = lab.resolv_conf("resolv.conf", &[watcher], "");
    let config = format!(
        r#"
[dns]
forward_plain_names = false

[[dns.forwarder]]          # corp.example and below: only the internal server
domain = "corp.example"
addr = "{internal}"

[[dns.forwarder]]          # everything else: instead of resolv.conf
addr = ["{outside}"]

[[dns.forwarder]]          # kept local: never forwarded
domain = "secret.example.com"
"#
    );
    let virtdns = lab.virtdns(1, &rc, &config);

    let cases: &[super::Expected] = &[
        (
            "intranet.corp.example",
            "A",
            "NOERROR",
            &["A 198.51.100.10"],
        ),
        ("nx.corp.example", "A", "NXDOMAIN", &[]),
        ("www.example.com", "A", "NOERROR", &["A 192.0.2.80"]),
        ("db.secret.example.com", "A", "NXDOMAIN", &[]),
        ("printer", "A", "NXDOMAIN", &[]),
    ];
    super::expect_answers(virtdns, crate::clients::Edns::Cookie, cases);
    assert_eq!(
        fake.received(),
        0,
        "resolv.conf's server is replaced by the addr-only forwarder"
    );
}
