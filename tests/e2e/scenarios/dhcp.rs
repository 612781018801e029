//! DHCPv4 on a bridge with guest namespaces: real dhclient, udhcpc and dhcpcd get leases and
//! the network's DNS, find each other by name, and the host finds them too.

use crate::clients::{dig, getent};
use crate::guests::{Client, Guest, Network};
use crate::lab::{Lab, run, wait_until};
use crate::peers::virtdns_bin;
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

/// virtdns serving DNS on the bridge and on 127.N.0.1, DHCP on the bridge, forwarding to NSD.
fn start(lab: &mut Lab, net: &Network, extra: &str) -> SocketAddr {
    let outside = lab.nsd_outside(3);
    lab.resolv_conf("resolv.conf", &[outside], "");
    restart(lab, net, extra)
}

/// Starts (or starts again) virtdns with the scenario's config and lease database.
fn restart(lab: &mut Lab, net: &Network, extra: &str) -> SocketAddr {
    restart_with_dns(lab, net, "", extra)
}

/// `restart`, with `dns` added to the [dns] section.
fn restart_with_dns(lab: &mut Lab, net: &Network, dns: &str, extra: &str) -> SocketAddr {
    let n = net.host.octets()[2];
    let config = format!(
        r#"
[dns]
domain = "vm.test"
{dns}

[dhcp]
interface = "{bridge}"
lease_db = "{db}"
lease_time_secs = 600

[[dhcp.range]]
start = "198.18.{n}.100"
end = "198.18.{n}.199"

[[dhcp.host]]
mac = "52:54:00:12:{n:02x}:09"
address = "198.18.{n}.9"
name = "fixed"
{extra}
"#,
        bridge = net.bridge,
        db = lab.path("leases.sqlite").display(),
    );
    let on_bridge = format!("{}:53", net.host);
    let rc = lab.path("resolv.conf");
    lab.virtdns_with(1, &rc, &config, &["--listen", &on_bridge])
}

fn leases_json(lab: &Lab) -> String {
    run(Command::new(virtdns_bin())
        .args(["leases", "--json", "--config"])
        .arg(lab.path("virtdns1.toml")))
}

pub fn three_clients_find_each_other(lab: &mut Lab) {
    let net = lab.network();
    let virtdns = start(lab, &net, "");
    let mut guests: Vec<(Guest, &str)> = Vec::new();
    for (i, (client, name)) in [
        (Client::Dhclient, "alpha"),
        (Client::Udhcpc, "bravo"),
        (Client::Dhcpcd, "charlie"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut g = lab.guest(&net, i as u8 + 1, name);
        lab.start_client(&mut g, client, name, &[]);
        guests.push((g, name));
    }
    let mut addrs = Vec::new();
    for (g, name) in &guests {
        let seen = g.wait_lease();
        assert_eq!(
            seen.dns.split_whitespace().next(),
            Some(net.host.to_string().as_str()),
            "{name}: DNS server"
        );
        assert!(
            seen.search.contains("vm.test"),
            "{name}: search list {:?}",
            seen.search
        );
        let o = seen.ip.octets();
        assert!(
            o[..3] == net.host.octets()[..3] && (100..=199).contains(&o[3]),
            "{name}: {}",
            seen.ip
        );
        addrs.push(seen.ip);
    }
    assert_eq!(
        addrs.iter().collect::<HashSet<_>>().len(),
        3,
        "distinct addresses {addrs:?}"
    );

    // Guests find each other by short name and FQDN, and outside names through the forwarder.
    for (g, me) in &guests {
        for ((_, other), addr) in guests.iter().zip(&addrs) {
            assert_eq!(
                g.getent(other),
                vec![addr.to_string()],
                "{me} resolves {other}"
            );
            assert_eq!(
                g.getent(&format!("{other}.vm.test")),
                vec![addr.to_string()],
                "{me}: {other}.vm.test"
            );
        }
        assert_eq!(
            g.getent("www.example.com")[..1],
            ["192.0.2.80"],
            "{me} resolves outside names"
        );
    }

    // The host finds every guest by name and by address.
    let host = lab.resolv_conf("host.resolv.conf", &[virtdns], "search vm.test\n");
    for ((_, name), addr) in guests.iter().zip(&addrs) {
        assert_eq!(
            getent(&host, name),
            vec![addr.to_string()],
            "host resolves {name}"
        );
        let ptr = dig(virtdns).opt("-x").query(&addr.to_string(), "PTR");
        assert_eq!(
            ptr.answers,
            vec![format!("PTR {name}.vm.test.")],
            "PTR of {addr}"
        );
    }

    // `virtdns leases` lists them with their names.
    let json = leases_json(lab);
    for ((_, name), addr) in guests.iter().zip(&addrs) {
        assert!(
            json.contains(&format!("\"address\":\"{addr}\""))
                && json.contains(&format!("\"name\":\"{name}\"")),
            "{json}"
        );
    }
}

pub fn renew_release_static_and_taken(lab: &mut Lab) {
    let net = lab.network();
    let virtdns = start(lab, &net, "");
    let n = net.host.octets()[2];

    // The static host: its address and name, published before it even asks.
    assert_eq!(
        dig(virtdns).query("fixed.vm.test", "A").answers,
        vec![format!("A 198.18.{n}.9")]
    );
    let mut fixed = lab.guest(&net, 9, "fixed");
    lab.start_client(&mut fixed, Client::Udhcpc, "whatever", &[]);
    assert_eq!(fixed.wait_lease().ip, Ipv4Addr::new(198, 18, n, 9));
    assert_eq!(
        dig(virtdns).query("fixed.vm.test", "A").answers,
        vec![format!("A 198.18.{n}.9")]
    );

    // Renew keeps the address.
    let mut delta = lab.guest(&net, 1, "delta");
    lab.start_client(&mut delta, Client::Udhcpc, "delta", &[]);
    let first = delta.wait_lease();
    assert_eq!(
        dig(virtdns).query("delta.vm.test", "A").answers,
        vec![format!("A {}", first.ip)]
    );
    signal(lab, &delta, "USR1");
    wait_until(Duration::from_secs(10), "delta renews", || {
        delta.events().iter().any(|e| e.starts_with("renew"))
    });
    assert_eq!(
        delta.seen().unwrap().ip,
        first.ip,
        "renew keeps the address"
    );

    // A second client asking for the taken address gets another one.
    let mut echo = lab.guest(&net, 2, "echo");
    lab.start_client(
        &mut echo,
        Client::Udhcpc,
        "echo",
        &["-r", &first.ip.to_string()],
    );
    let other = echo.wait_lease();
    assert_ne!(
        other.ip, first.ip,
        "a taken address is not handed out twice"
    );

    // Release removes the name.
    signal(lab, &delta, "USR2");
    wait_until(Duration::from_secs(10), "delta's name disappears", || {
        dig(virtdns).query("delta.vm.test", "A").status == "NXDOMAIN"
    });
    assert!(
        !leases_json(lab).contains(&format!("\"{}\"", first.ip)),
        "released lease is gone from the store"
    );
}

fn signal(lab: &mut Lab, guest: &Guest, sig: &str) {
    let pid = lab
        .proc(guest.client.as_deref().expect("client started"))
        .pid();
    run(Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string()));
}

/// Many clients at once, virtdns killed with SIGKILL in the middle and started again: every
/// client that saw an ACK keeps its address and name, and no address is given twice.
pub fn crash_loses_no_acknowledged_lease(lab: &mut Lab) {
    let net = lab.network();
    let virtdns = start(lab, &net, "");
    let mut guests = Vec::new();
    for i in 0..12u8 {
        let name = format!("vm{i}");
        let mut g = lab.guest(&net, 20 + i, &name);
        lab.start_client(&mut g, Client::Udhcpc, &name, &[]);
        guests.push(g);
    }
    wait_until(Duration::from_secs(20), "some clients bound", || {
        guests.iter().filter(|g| g.seen().is_some()).count() >= 4
    });
    lab.proc("virtdns-1").kill(); // SIGKILL
    let acked: Vec<(usize, Ipv4Addr)> = guests
        .iter()
        .enumerate()
        .filter_map(|(i, g)| g.seen().map(|s| (i, s.ip)))
        .collect();
    println!(
        "    killed virtdns with {} of 12 clients bound",
        acked.len()
    );

    restart(lab, &net, "");
    for g in &guests {
        g.wait_lease();
    }
    // Those acknowledged before the crash renew and keep their address.
    for (i, ip) in &acked {
        let g = &guests[*i];
        let renewals = g.events().iter().filter(|e| e.starts_with("renew")).count();
        signal(lab, g, "USR1");
        wait_until(Duration::from_secs(10), "renewed after restart", || {
            g.events().iter().filter(|e| e.starts_with("renew")).count() > renewals
        });
        assert_eq!(
            g.seen().unwrap().ip,
            *ip,
            "{} keeps its address across the crash",
            g.name
        );
        assert_eq!(
            dig(virtdns)
                .query(&format!("{}.vm.test", g.name), "A")
                .answers,
            vec![format!("A {ip}")]
        );
    }
    let all: Vec<Ipv4Addr> = guests.iter().map(|g| g.seen().unwrap().ip).collect();
    assert_eq!(
        all.iter().collect::<HashSet<_>>().len(),
        all.len(),
        "no address given twice: {all:?}"
    );
    let json = leases_json(lab);
    for ip in &all {
        assert!(
            json.contains(&format!("\"address\":\"{ip}\"")),
            "{ip} is in the store: {json}"
        );
    }
}

/// Malformed packets and a DISCOVER flood from inside the network, and a DISCOVER from outside
/// the interface: virtdns keeps running, logs the junk rate-limited, ignores the outsider, and a
/// returning client still renews its address.
pub fn bad_input_and_flood(lab: &mut Lab) {
    let net = lab.network();
    start(lab, &net, "");
    let n = net.host.octets()[2];
    let mut golf = lab.guest(&net, 1, "golf");
    lab.start_client(&mut golf, Client::Udhcpc, "golf", &[]);
    let first = golf.wait_lease();

    let noisy = lab.guest(&net, 2, "noisy");
    run(&mut noisy.cmd(&[
        "ip",
        "addr",
        "add",
        &format!("198.18.{n}.250/24"),
        "dev",
        "eth0",
    ]));
    let server = format!("{}:67", net.host);
    let me = std::env::current_exe().unwrap();
    let me = me.to_str().unwrap();
    println!(
        "    {}",
        run(&mut noisy.cmd(&[me, "--guest-helper", "garbage", &server])).trim()
    );
    println!(
        "    {}",
        run(&mut noisy.cmd(&[me, "--guest-helper", "flood", &server, "3000"])).trim()
    );
    // From the host namespace the packet arrives on lo, not on the bridge: ignored.
    run(Command::new(me).args([
        "--guest-helper",
        "expect-silence",
        &format!("{}:67", lab.ip(1)),
    ]));

    // The returning client renews and keeps its address though the pool is exhausted.
    signal(lab, &golf, "USR1");
    wait_until(Duration::from_secs(10), "golf renews", || {
        golf.events().iter().any(|e| e.starts_with("renew"))
    });
    assert_eq!(golf.seen().unwrap().ip, first.ip);
    assert!(lab.proc("virtdns-1").is_running(), "virtdns survives");
    let log = lab.proc("virtdns-1").log_text();
    let warnings = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("packet"))
        .count();
    assert!(
        (1..=10).contains(&warnings),
        "bad packets logged, rate-limited: {warnings} lines"
    );
}

/// RFC 5358: by default virtdns answers loopback and the networks of the interfaces it listens
/// on; `allow` narrows that. A guest outside the allowed networks gets REFUSED.
pub fn only_allowed_networks_are_answered(lab: &mut Lab) {
    let net = lab.network();
    let n = net.host.octets()[2];
    start(lab, &net, "");
    let guest = lab.guest(&net, 3, "india");
    run(&mut guest.cmd(&[
        "ip",
        "addr",
        "add",
        &format!("198.18.{n}.7/24"),
        "dev",
        "eth0",
    ]));
    let on_bridge = SocketAddr::from((net.host, 53));
    let from_guest = || {
        dig(on_bridge)
            .through(&guest.prefix())
            .query("fixed.vm.test", "A")
    };
    assert_eq!(
        from_guest().answers,
        vec![format!("A 198.18.{n}.9")],
        "the bridge's network is answered"
    );

    lab.proc("virtdns-1").kill();
    let narrowed = restart_with_dns(lab, &net, &format!("allow = [\"198.18.{n}.128/25\"]"), "");
    assert_eq!(
        from_guest().status,
        "REFUSED",
        "198.18.{n}.7 is outside 198.18.{n}.128/25"
    );
    assert_eq!(
        dig(narrowed).query("fixed.vm.test", "A").status,
        "NOERROR",
        "loopback always is"
    );
}

/// Issue 9: a renewal and a RELEASE sent back to back, hundreds of times: the database holds
/// exactly what was decided last (no released lease), also after a restart.
pub fn renew_release_back_to_back(lab: &mut Lab) {
    let net = lab.network();
    start(lab, &net, "");
    let n = net.host.octets()[2];
    let relay = format!("198.18.{n}.250");
    let helper = lab.guest(&net, 2, "relay");
    run(&mut helper.cmd(&["ip", "addr", "add", &format!("{relay}/24"), "dev", "eth0"]));
    let me = std::env::current_exe().unwrap();
    let server = format!("{}:67", net.host);
    let pairs = 300;
    println!(
        "    {}",
        run(&mut helper.cmd(&[
            me.to_str().unwrap(),
            "--guest-helper",
            "renew-release",
            &server,
            &pairs.to_string(),
            &relay,
        ]))
        .trim()
    );
    // The last RELEASE is durable within a moment; nothing of these clients may stay.
    let stored = |lab: &Lab| leases_json(lab).matches("\"mac\":\"02:ee:").count();
    wait_until(
        Duration::from_secs(5),
        "released leases gone from the store",
        || stored(lab) == 0,
    );
    let log = lab.proc("virtdns-1").log_text();
    let releases = log.matches("DHCPRELEASE(").count();
    assert_eq!(releases, pairs, "every RELEASE logged once");
    restart(lab, &net, "");
    assert_eq!(stored(lab), 0, "after a restart too");
}
