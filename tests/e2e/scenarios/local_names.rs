//! The network's own names: static records, a hosts file and the local domain, answered to
//! guests (dig, glibc) without ever being forwarded.

use crate::clients::{dig, getent};
use crate::lab::Lab;

const CONFIG: &str = r#"
[dns]
domain = "vm.test"
hosts = ["HOSTS"]

[[dns.forwarder]]
domain = "lab.test"

[[dns.record]]
name = "web.vm.test"
type = "A"
value = "192.168.122.10"

[[dns.record]]
name = "www.vm.test"
type = "CNAME"
value = "web.vm.test"

[[dns.record]]
name = "_http._tcp.vm.test"
type = "SRV"
value = "0 5 80 web.vm.test"

[[dns.record]]
name = "web.vm.test"
type = "TXT"
value = "role=frontend"
"#;

pub fn guests_and_host(lab: &mut Lab) {
    let outside = lab.nsd_outside(3);
    let rc = lab.resolv_conf("resolv.conf", &[outside], "");
    let hosts = lab.write(
        "hosts",
        "192.0.2.200 buildhost\n192.0.2.201 printer.example.com\n",
    );
    let config = CONFIG.replace("HOSTS", &hosts.display().to_string());
    let virtdns = lab.virtdns_with(1, &rc, &config, &["--listen", "[::1]:53"]);
    let virtdns6: std::net::SocketAddr = "[::1]:53".parse().unwrap();
    let guest = lab.resolv_conf("guest.resolv.conf", &[virtdns], "search vm.test\n");

    let cases: &[super::Expected] = &[
        ("web.vm.test", "A", "NOERROR", &["A 192.168.122.10"]),
        (
            "WWW.vm.test",
            "A",
            "NOERROR",
            &["CNAME web.vm.test.", "A 192.168.122.10"],
        ),
        (
            "_http._tcp.vm.test",
            "SRV",
            "NOERROR",
            &["SRV 0 5 80 web.vm.test."],
        ),
        ("web.vm.test", "TXT", "NOERROR", &["TXT \"role=frontend\""]),
        ("web.vm.test", "AAAA", "NOERROR", &[]),
        ("nothere.vm.test", "A", "NXDOMAIN", &[]),
        ("anything.lab.test", "A", "NXDOMAIN", &[]),
        (
            "10.122.168.192.in-addr.arpa",
            "PTR",
            "NOERROR",
            &["PTR web.vm.test."],
        ),
        ("buildhost.vm.test", "A", "NOERROR", &["A 192.0.2.200"]),
        ("printer.example.com", "A", "NOERROR", &["A 192.0.2.201"]),
        ("www.example.com", "A", "NOERROR", &["A 192.0.2.80"]),
    ];
    super::expect_answers(virtdns, crate::clients::Edns::Cookie, cases);
    // The same over IPv6, UDP and TCP.
    assert_eq!(
        dig(virtdns6).query("web.vm.test", "A").answers,
        vec!["A 192.168.122.10"]
    );
    assert_eq!(
        dig(virtdns6)
            .opt("+tcp")
            .query("www.example.com", "A")
            .answers,
        vec!["A 192.0.2.80"]
    );
    let nx = dig(virtdns).query("nothere.vm.test", "A");
    assert!(nx.has_flag("aa"), "local domain answers are authoritative");

    // glibc on a guest: short names through the search list, hosts names, outside names.
    assert_eq!(getent(&guest, "web")[..1], ["192.168.122.10"]);
    assert_eq!(getent(&guest, "buildhost")[..1], ["192.0.2.200"]);
    assert_eq!(getent(&guest, "www.example.com")[..1], ["192.0.2.80"]);
    assert!(getent(&guest, "nothere").is_empty());

    // The hosts file is reloaded when it changes.
    std::fs::write(&hosts, "192.0.2.202 buildhost\n").unwrap();
    crate::lab::wait_until(
        std::time::Duration::from_secs(2),
        "hosts file reloaded",
        || dig(virtdns).query("buildhost.vm.test", "A").answers == ["A 192.0.2.202"],
    );
}
