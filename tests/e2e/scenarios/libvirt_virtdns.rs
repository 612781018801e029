//! virtdns with libvirt: the three recipes of README's "With libvirt", each run from its files
//! in tests/e2e/libvirt-recipes/ (written for the network `default` on virbr0,
//! 192.168.122.0/24, exactly as README shows them, and moved to this lab's network) against a
//! real libvirtd, with virtdns started by its network hook (dist/libvirt/network-hook) as users
//! run it; and how virtdns meets a network's life: started before the bridge exists, next to
//! libvirt's own DHCP server, reloaded with a broken config. The hook itself, run by hand, and
//! what libvirt gives hooks are pinned too.

use crate::clients::{Edns, dig, getent};
use crate::guests::{Client, Guest};
use crate::lab::{Lab, poll_until, run, wait_for_tcp, wait_until};
use crate::libvirtd::{LibvirtNet, Libvirtd, NETWORK_HOOK, VirtdnsHook};
use crate::peers::virtdns_bin;
use crate::scenarios::libvirt::{lease_row, wait_bound_after};
use crate::scenarios::{GLIBC_NAMES, SPLIT_ANSWERS, expect_split_answers, seed_layout};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const RECIPES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/libvirt-recipes");
const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");

/// The static host of recipe 1's `[[dhcp.host]]`.
const WEB_MAC: &str = "52:54:00:6b:3c:58";

/// A recipe as this lab runs it: the network XML and virtdns's TOML.
struct Recipe {
    xml: String,
    toml: String,
}

/// Recipe `name` (`NAME.xml` and `NAME.toml` in libvirt-recipes/), checked to be in README as
/// it stands, moved to `net` (name, bridge, subnet; 127.0.0.1 becomes the lab's 127.N.0.1),
/// with the lab's own paths added: libvirt's folders under `[libvirt]`, the host's
/// resolv.conf (and no hosts file) under `[dns]`, the lease database under `[dhcp]`.
fn recipe(
    name: &str,
    lab: &Lab,
    net: &LibvirtNet,
    libvirtd: &Libvirtd,
    resolv_conf: &Path,
) -> Recipe {
    let read = |ext: &str| {
        let text = std::fs::read_to_string(format!("{RECIPES}/{name}.{ext}")).unwrap();
        assert_readme_shows(&text, &format!("libvirt-recipes/{name}.{ext}"));
        text.replace(
            "<name>default</name>",
            &format!("<name>{}</name>", net.name),
        )
        .replace(
            "network = \"default\"",
            &format!("network = \"{}\"", net.name),
        )
        .replace("'virbr0'", &format!("'{}'", net.bridge))
        .replace("192.168.122.", &format!("{}.", net.prefix()))
        .replace("127.0.0.1", &lab.ip(1).to_string())
    };
    let xml = read("xml");
    let mut toml = read("toml");
    if toml.contains("[libvirt]") {
        toml = add_keys(&toml, "libvirt", &libvirtd.libvirt_dirs_toml());
    }
    toml = add_keys(
        &toml,
        "dns",
        &format!(
            "resolv_conf = \"{}\"\nno_hosts = true\n",
            resolv_conf.display()
        ),
    );
    if toml.contains("[dhcp]") {
        let db = lab.path("leases.sqlite");
        toml = add_keys(&toml, "dhcp", &format!("lease_db = \"{}\"\n", db.display()));
    }
    Recipe { xml, toml }
}

/// `keys` (TOML lines) added to `[section]`, which is added at the end when missing.
fn add_keys(toml: &str, section: &str, keys: &str) -> String {
    let header = format!("[{section}]\n");
    match toml.find(&header) {
        Some(at) => {
            let end = at + header.len();
            format!("{}{keys}{}", &toml[..end], &toml[end..])
        }
        None => format!("{toml}\n{header}{keys}"),
    }
}

/// README shows `text` verbatim (in a code block of the libvirt section).
fn assert_readme_shows(text: &str, what: &str) {
    let readme = std::fs::read_to_string(README).unwrap();
    assert!(
        readme.contains(text.trim_end()),
        "README.md does not show {what} as the scenario runs it:\n{text}"
    );
}

/// Waits until every guest has bound a lease (after its first `after` events) and `virsh
/// net-dhcp-leases` lists it, as a row other than `before` shows for that address (libvirt
/// keeps a stale status file across a restart). Returns each guest's address and how long
/// the listing lagged behind the client's `bound` (which follows the server's ACK).
fn leased_and_listed(
    libvirtd: &Libvirtd,
    net: &LibvirtNet,
    guests: &[(&Guest, usize)],
    before: &str,
) -> Vec<(Ipv4Addr, Duration)> {
    let started = Instant::now();
    let mut bound: Vec<Option<(Ipv4Addr, Instant)>> = vec![None; guests.len()];
    let mut listed: Vec<Option<Duration>> = vec![None; guests.len()];
    let mut listing = String::new();
    while listed.iter().any(Option::is_none) {
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "leases: bound {bound:?}, listed {listed:?}; net-dhcp-leases {}:\n{listing}",
            net.name
        );
        for (i, (guest, after)) in guests.iter().enumerate() {
            let events = guest.events();
            if bound[i].is_none()
                && events[(*after).min(events.len())..]
                    .iter()
                    .any(|e| e.starts_with("bound "))
            {
                bound[i] = Some((guest.seen().unwrap().ip, Instant::now()));
            }
        }
        if bound.iter().any(Option::is_some) {
            listing = libvirtd.virsh(&["net-dhcp-leases", &net.name]);
            for i in 0..guests.len() {
                let Some((ip, at)) = bound[i] else { continue };
                let row = |l: &str| {
                    l.lines()
                        .find(|r| r.contains(&format!(" {ip}/")))
                        .map(str::to_owned)
                };
                if listed[i].is_none() && row(&listing).is_some() && row(&listing) != row(before) {
                    listed[i] = Some(at.elapsed());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bound
        .into_iter()
        .zip(listed)
        .map(|(b, l)| (b.unwrap().0, l.unwrap()))
        .collect()
}

fn assert_listed_within_a_second(what: &str, leases: &[(Ipv4Addr, Duration)]) {
    for (ip, lag) in leases {
        assert!(
            *lag <= Duration::from_secs(1),
            "{what}: net-dhcp-leases listed {ip} {lag:?} after the guest bound it"
        );
    }
}

/// Starts udhcpc again in `guest` (after its port was put on a new bridge); returns how many
/// events it had recorded before.
fn restart_client(lab: &mut Lab, guest: &mut Guest, hostname: &str) -> usize {
    let before = guest.events().len();
    let client = guest.client.clone().expect("a client runs");
    lab.proc(&client).kill();
    lab.start_client(guest, Client::Udhcpc, hostname, &[]);
    before
}

/// The `bound` event line of the last lease (with dns=, search=, domain=).
fn last_bound(guest: &Guest) -> String {
    guest
        .events()
        .into_iter()
        .rev()
        .find(|e| e.starts_with("bound "))
        .expect("a bound event")
}

/// Guests resolve each other by short name and in `domain`, and by address (PTR) through
/// `server`: (guest, its host name, its address).
fn guests_find_each_other(guests: &[(&Guest, &str, Ipv4Addr)], domain: &str, server: SocketAddr) {
    for (g, me, _) in guests {
        for (_, other, ip) in guests {
            let fqdn = format!("{other}.{domain}");
            // libvirt's status file is read every 250 ms: a name may take that long.
            let mut got = Vec::new();
            poll_until(Duration::from_secs(2), || {
                got = g.getent(&fqdn);
                got == [ip.to_string()]
            });
            assert_eq!(got, vec![ip.to_string()], "{me} resolves {fqdn}");
            assert_eq!(
                g.getent(other),
                vec![ip.to_string()],
                "{me} resolves {other} through its search list"
            );
            let ptr = dig(server)
                .through(&g.prefix())
                .opt("-x")
                .query(&ip.to_string(), "PTR");
            assert_eq!(
                ptr.answers,
                vec![format!("PTR {fqdn}.")],
                "{me}: PTR of {ip} through {server}"
            );
        }
    }
}

/// A guest resolves every dotted name of GLIBC_NAMES to the IPv4 addresses glibc on the host
/// gets (a guest without IPv6 asks no AAAA: AI_ADDRCONFIG), and gets SPLIT_ANSWERS, AAAA
/// included, from `server` with a query as glibc sends it (no EDNS).
fn guest_has_host_view(guest: &Guest, host_rc: &Path, server: SocketAddr) {
    let v4 = |addrs: Vec<String>| -> Vec<String> {
        addrs.into_iter().filter(|a| !a.contains(':')).collect()
    };
    for name in GLIBC_NAMES.iter().filter(|n| n.contains('.')) {
        assert_eq!(
            v4(guest.getent(name)),
            v4(getent(host_rc, name)),
            "{}: getent ahosts {name}, guest vs host",
            guest.name
        );
    }
    for (name, rtype, status, answers) in SPLIT_ANSWERS {
        let r = dig(server)
            .through(&guest.prefix())
            .edns(Edns::None)
            .query(name, rtype);
        assert_eq!(
            (r.status.as_str(), r.answers.clone()),
            (*status, answers.iter().map(|a| a.to_string()).collect()),
            "{}: {name} {rtype} through {server}",
            guest.name
        );
    }
}

fn assert_range(ip: Ipv4Addr, net: &LibvirtNet, first: u8, last: u8) {
    let o = ip.octets();
    assert!(
        o[..3] == net.host.octets()[..3] && (first..=last).contains(&o[3]),
        "{ip} outside {}.{first}-{last}",
        net.prefix()
    );
}

/// Recipe 1: virtdns serves DNS and DHCP; libvirt keeps the network's `<dns>` records (so
/// `net-update ... dns-host` works) but its dnsmasq serves nothing (`port=0`, no `<dhcp>`).
pub fn recipe_virtdns_dns_and_dhcp(lab: &mut Lab) {
    let t0 = Instant::now();
    let (_, _, host_rc) = seed_layout(lab);
    let net = LibvirtNet::for_lab(lab);
    let mut libvirtd = lab.libvirtd_with_virtdns_hook();
    let hook = libvirtd.virtdns_hook().clone();
    let p = net.prefix();

    // What the brief first asked for cannot be defined: libvirt refuses records in a
    // disabled <dns>, and net-update cannot add them there either.
    let disabled = format!(
        "<network><name>{}</name><bridge name='{}'/><dns enable='no'><host ip='{p}.5'>\
         <hostname>nas</hostname></host></dns><ip address='{p}.1' netmask='255.255.255.0'/>\
         </network>",
        net.name, net.bridge
    );
    let refused = libvirtd.try_virsh(&["net-define", &libvirtd.xml_file(&net, &disabled)]);
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("Extra data in disabled network")),
        "<host> in <dns enable='no'>: {refused:?}"
    );

    let r = recipe("virtdns-dns-and-dhcp", lab, &net, &libvirtd, &host_rc);
    hook.write_config(&net, &r.toml);
    libvirtd.define_and_start(&net, &r.xml);
    let on_bridge = SocketAddr::new(net.host.into(), 53);
    let first_pid = hook
        .pid(&net)
        .unwrap_or_else(|| panic!("the hook started no virtdns:\n{}", hook.log(&net)));
    wait_for_tcp(on_bridge, "virtdns started by the hook");
    let conf = std::fs::read_to_string(libvirtd.path(&format!("lib/dnsmasq/{}.conf", net.name)))
        .expect("libvirt's dnsmasq config");
    assert!(
        conf.lines().any(|l| l == "port=0") && !conf.contains("dhcp-range"),
        "libvirt's dnsmasq serves neither DNS nor DHCP:\n{conf}"
    );
    let up = t0.elapsed();

    let mut guest1 = lab.libvirt_guest(&net, 1, "guest1");
    let mut web = lab.guest_with_mac(&net.network(), 2, "web", Some(WEB_MAC));
    lab.start_client(&mut guest1, Client::Udhcpc, "guest1", &[]);
    lab.start_client(&mut web, Client::Udhcpc, "web", &[]);
    let leases = leased_and_listed(&libvirtd, &net, &[(&guest1, 0), (&web, 0)], "");
    let leased = t0.elapsed();
    assert_listed_within_a_second("first leases", &leases);
    let (ip1, ip_web) = (leases[0].0, leases[1].0);
    assert_range(ip1, &net, 100, 254);
    assert_eq!(ip_web, Ipv4Addr::new(192, 168, net.host.octets()[2], 10));
    for g in [&guest1, &web] {
        let bound = last_bound(g);
        assert!(
            bound.contains(&format!("dns={}", net.host)) && bound.ends_with("domain=vm.test"),
            "{}: virtdns hands out itself and the network's domain: {bound}",
            g.name
        );
    }
    let listing = libvirtd.virsh(&["net-dhcp-leases", &net.name]);
    assert_eq!(
        lease_row(&listing, ip1),
        (guest1.mac.clone(), format!("{ip1}/24"), "guest1".into()),
        "{listing}"
    );
    assert!(
        hook.log(&net)
            .contains(&format!("DHCPACK({}) {ip1} {}", net.bridge, guest1.mac)),
        "dnsmasq-style DHCPACK line:\n{}",
        hook.log(&net)
    );

    // Names: each other, the network's <host>, the host's split view; the host through NSS.
    let named = [(&guest1, "guest1", ip1), (&web, "web", ip_web)];
    guests_find_each_other(&named, "vm.test", on_bridge);
    assert_eq!(guest1.getent("nas"), vec![format!("{p}.5")], "<host> nas");
    guest_has_host_view(&guest1, &host_rc, on_bridge);
    expect_split_answers(on_bridge);
    assert_eq!(libvirtd.getent_hosts("guest1"), vec![ip1.to_string()]);
    assert_eq!(libvirtd.getent_hosts("web"), vec![ip_web.to_string()]);

    // net-destroy + net-start: the hook stops virtdns and starts a new one on the new bridge;
    // the guests, plugged in again, get the same addresses back from the lease database.
    let t1 = Instant::now();
    let log_len = hook.log(&net).len();
    let before = libvirtd.virsh(&["net-dhcp-leases", &net.name]);
    let first_index = net.ifindex();
    libvirtd.restart_network(&net);
    assert_ne!(net.ifindex(), first_index, "a new bridge");
    let second_pid = hook.pid(&net).expect("the hook started virtdns again");
    assert_ne!(second_pid, first_pid, "a new virtdns");
    assert!(
        !Path::new(&format!("/proc/{first_pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{first_pid}/cmdline")).unwrap_or_default()
                == "",
        "the old virtdns has exited"
    );
    hook.wait_log(
        &net,
        log_len,
        &format!("stopped (pid {first_pid})"),
        Duration::ZERO,
    );
    hook.wait_log(&net, log_len, "DHCP serving", Duration::from_secs(5));
    libvirtd.reattach(&net, 1);
    libvirtd.reattach(&net, 2);
    let after1 = restart_client(lab, &mut guest1, "guest1");
    let after_web = restart_client(lab, &mut web, "web");
    let again = leased_and_listed(
        &libvirtd,
        &net,
        &[(&guest1, after1), (&web, after_web)],
        &before,
    );
    let released = t1.elapsed();
    assert_listed_within_a_second("leases after the restart", &again);
    assert_eq!(
        (again[0].0, again[1].0),
        (ip1, ip_web),
        "same addresses after net-destroy + net-start"
    );
    assert_eq!(libvirtd.getent_hosts("guest1"), vec![ip1.to_string()]);
    assert_eq!(
        wait_bound_after(&guest1, after1),
        ip1,
        "guest1 keeps its address"
    );

    // net-update adds a <host>: the hook's `updated begin` sends SIGHUP, virtdns reads the
    // live definition again.
    let log_len = hook.log(&net).len();
    let entry = format!("<host ip='{p}.6'><hostname>backup</hostname></host>");
    libvirtd.virsh(&[
        "net-update",
        &net.name,
        "add",
        "dns-host",
        &entry,
        "--live",
        "--config",
    ]);
    hook.wait_log(&net, log_len, "sent SIGHUP", Duration::ZERO);
    hook.wait_log(
        &net,
        log_len,
        "SIGHUP: configuration reloaded",
        Duration::from_secs(2),
    );
    let took = wait_until(Duration::from_secs(2), "backup.vm.test resolves", || {
        dig(on_bridge).query("backup.vm.test", "A").answers == [format!("A {p}.6")]
    });
    assert_eq!(guest1.getent("backup"), vec![format!("{p}.6")]);
    println!(
        "    virtdns up at {:.2} s, 2 guests leased and listed at {:.2} s (lag {:?}, {:?}); \
         restart + same leases {:.2} s; net-update answered after {:?}",
        up.as_secs_f64(),
        leased.as_secs_f64(),
        leases[0].1,
        leases[1].1,
        released.as_secs_f64(),
        took
    );
}

/// Recipe 2: libvirt's dnsmasq keeps DHCP (and hands out virtdns, on the bridge, as the
/// guests' DNS server); virtdns serves DNS, with the guests' names from libvirt's lease file.
pub fn recipe_libvirt_keeps_dhcp(lab: &mut Lab) {
    let t0 = Instant::now();
    let (_, _, host_rc) = seed_layout(lab);
    let net = LibvirtNet::for_lab(lab);
    let mut libvirtd = lab.libvirtd_with_virtdns_hook();
    let hook = libvirtd.virtdns_hook().clone();
    let r = recipe("libvirt-keeps-dhcp", lab, &net, &libvirtd, &host_rc);
    hook.write_config(&net, &r.toml);
    libvirtd.define_and_start(&net, &r.xml);
    let on_bridge = SocketAddr::new(net.host.into(), 53);
    hook.pid(&net)
        .unwrap_or_else(|| panic!("the hook started no virtdns:\n{}", hook.log(&net)));
    wait_for_tcp(on_bridge, "virtdns started by the hook");
    assert!(
        libvirtd.dnsmasq_pid(&net).is_some(),
        "libvirt's dnsmasq runs"
    );

    let mut guests = Vec::new();
    for (i, name) in [(1, "guest1"), (2, "guest2")] {
        let mut g = lab.libvirt_guest(&net, i, name);
        lab.start_client(&mut g, Client::Udhcpc, name, &[]);
        guests.push(g);
    }
    let leases = leased_and_listed(&libvirtd, &net, &[(&guests[0], 0), (&guests[1], 0)], "");
    let leased = t0.elapsed();
    let mut named = Vec::new();
    for (g, (ip, _)) in guests.iter().zip(&leases) {
        assert_range(*ip, &net, 2, 254);
        let bound = last_bound(g);
        assert!(
            bound.contains(&format!("dns={} ", net.host)),
            "{}: dnsmasq hands out the bridge (virtdns) as DNS server: {bound}",
            g.name
        );
        named.push((g, g.name.as_str(), *ip));
    }
    assert!(
        !hook.log(&net).contains("DHCPACK"),
        "virtdns served no DHCP:\n{}",
        hook.log(&net)
    );
    let named: Vec<(&Guest, &str, Ipv4Addr)> = named;
    guests_find_each_other(&named, "vm.test", on_bridge);
    guest_has_host_view(&guests[0], &host_rc, on_bridge);
    println!(
        "    2 guests leased from libvirt's dnsmasq at {:.2} s; names through virtdns at {:.2} s; \
         bound line: {}",
        leased.as_secs_f64(),
        t0.elapsed().as_secs_f64(),
        last_bound(&guests[0])
    );
}

/// Recipe 3: libvirt's dnsmasq keeps everything and forwards to virtdns on loopback, its only
/// upstream. libvirt's `<forwarder>` cannot say so: it has no port.
pub fn recipe_dnsmasq_forwards_to_virtdns(lab: &mut Lab) {
    let t0 = Instant::now();
    let (_, _, host_rc) = seed_layout(lab);
    let net = LibvirtNet::for_lab(lab);
    let mut libvirtd = lab.libvirtd_with_virtdns_hook();
    let hook = libvirtd.virtdns_hook().clone();

    // <forwarder port=...>: net-define drops the port without a word (the forwarder is then
    // port 53), net-define --validate rejects it.
    let with_port = format!(
        "<network><name>{}</name><bridge name='{}'/><dns><forwarder addr='127.0.0.1' \
         port='5300'/></dns><ip address='{}.1' netmask='255.255.255.0'/></network>",
        net.name,
        net.bridge,
        net.prefix()
    );
    let file = libvirtd.xml_file(&net, &with_port);
    let validated = libvirtd.try_virsh(&["net-define", "--validate", &file]);
    assert!(
        validated
            .as_ref()
            .is_err_and(|e| e.contains("Invalid attribute port for element forwarder")),
        "net-define --validate with <forwarder port=>: {validated:?}"
    );
    libvirtd.virsh(&["net-define", &file]);
    let defined = libvirtd.virsh(&["net-dumpxml", &net.name]);
    libvirtd.virsh(&["net-undefine", &net.name]);
    assert!(
        defined.contains("<forwarder addr='127.0.0.1'/>") && !defined.contains("port="),
        "net-define keeps the forwarder without its port:\n{defined}"
    );

    let r = recipe(
        "dnsmasq-forwards-to-virtdns",
        lab,
        &net,
        &libvirtd,
        &host_rc,
    );
    hook.write_config(&net, &r.toml);
    libvirtd.define_and_start(&net, &r.xml);
    let virtdns = SocketAddr::new(lab.ip(1).into(), 5300);
    wait_for_tcp(virtdns, "virtdns started by the hook");
    let conf = std::fs::read_to_string(libvirtd.path(&format!("lib/dnsmasq/{}.conf", net.name)))
        .expect("libvirt's dnsmasq config");
    let servers: Vec<&str> = conf
        .lines()
        .filter(|l| l.starts_with("server=") || *l == "no-resolv")
        .collect();
    assert_eq!(
        servers,
        ["no-resolv", &format!("server={}#5300", lab.ip(1))],
        "virtdns is dnsmasq's only upstream:\n{conf}"
    );

    let mut guest = lab.libvirt_guest(&net, 1, "guest1");
    lab.start_client(&mut guest, Client::Udhcpc, "guest1", &[]);
    let seen = guest.wait_lease();
    assert_eq!(seen.dns, net.host.to_string(), "dnsmasq is the DNS server");
    let on_bridge = SocketAddr::new(net.host.into(), 53);
    guest_has_host_view(&guest, &host_rc, on_bridge);
    // libvirt's dnsmasq still answers the guests' names itself.
    assert_eq!(
        dig(on_bridge).query("guest1.vm.test", "A").answers,
        vec![format!("A {}", seen.ip)]
    );
    println!(
        "    guest leased and resolved the host's view through dnsmasq -> virtdns at {:.2} s",
        t0.elapsed().as_secs_f64()
    );
}

/// virtdns started (directly) for a network that is defined but not started: it runs, DNS
/// bound with IP_FREEBIND, DHCP waiting; then follows the bridge as libvirt makes it, destroys
/// it and makes it again.
pub fn virtdns_before_bridge(lab: &mut Lab) {
    let outside = lab.nsd_outside(3);
    let rc = lab.resolv_conf("resolv.conf", &[outside], "");
    let net = LibvirtNet::for_lab(lab);
    let mut libvirtd = lab.libvirtd();
    let r = recipe("virtdns-dns-and-dhcp", lab, &net, &libvirtd, &rc);
    libvirtd.define(&net, &r.xml);
    assert_eq!(net.ifindex(), None, "no bridge before net-start");
    let conf = lab.write("virtdns.toml", &r.toml);
    let virtdns = lab
        .spawn(
            "virtdns",
            Command::new(virtdns_bin())
                .args(["run", "--config"])
                .arg(&conf),
        )
        .log
        .clone();
    let log = || std::fs::read_to_string(&virtdns).unwrap_or_default();
    wait_until(
        Duration::from_secs(5),
        "virtdns says DHCP waits for the bridge",
        || log().contains("DHCP waits for the interface"),
    );
    assert!(lab.proc("virtdns").is_running(), "virtdns runs");
    let pid = lab.proc("virtdns").pid();
    assert_eq!(
        log().matches("DHCP waits for the interface").count(),
        1,
        "said once:\n{}",
        log()
    );

    let t0 = Instant::now();
    libvirtd.virsh(&["net-start", &net.name]);
    let bound_dhcp = wait_until(
        Duration::from_secs(1),
        "DHCP serving within a second of net-start",
        || log().contains("DHCP serving"),
    );
    let mut guest = lab.libvirt_guest(&net, 1, "guest1");
    lab.start_client(&mut guest, Client::Udhcpc, "guest1", &[]);
    let leased = guest.wait_lease();
    let first = t0.elapsed();
    assert!(
        first < Duration::from_secs(10),
        "leased {first:?} after net-start"
    );
    assert_range(leased.ip, &net, 100, 254);
    let on_bridge = SocketAddr::new(net.host.into(), 53);
    assert_eq!(
        dig(on_bridge).query("nas.vm.test", "A").answers,
        vec![format!("A {}.5", net.prefix())],
        "DNS on the bridge address bound before it existed"
    );

    // net-destroy + net-start, virtdns running throughout.
    let t1 = Instant::now();
    let mark = log().len();
    libvirtd.restart_network(&net);
    let rebound = wait_until(
        Duration::from_secs(1),
        "DHCP bound again within a second of net-start",
        || {
            let since = log()[mark..].to_string();
            since.contains("interface changed: DHCP binds again") || since.contains("DHCP serving")
        },
    );
    libvirtd.reattach(&net, 1);
    let after = restart_client(lab, &mut guest, "guest1");
    let again = wait_bound_after(&guest, after);
    let second = t1.elapsed();
    assert_eq!(again, leased.ip, "same address from the same virtdns");
    let since = log()[mark..].to_string();
    assert!(
        since.contains("interface changed: DHCP binds again")
            || (since.contains("interface gone: DHCP waits for it to come back")
                && since.contains("DHCP serving")),
        "virtdns says it bound DHCP again:\n{since}"
    );
    assert!(lab.proc("virtdns").is_running());
    assert_eq!(lab.proc("virtdns").pid(), pid);
    let how = if since.contains("interface changed") {
        "interface changed"
    } else {
        "interface gone, then serving"
    };
    println!(
        "    DHCP bound {bound_dhcp:?} after net-start, leased at {:.2} s; after net-destroy + \
         net-start bound again in {rebound:?} ({how}), same lease at {:.2} s",
        first.as_secs_f64(),
        second.as_secs_f64()
    );
}

/// libvirt's dnsmasq serves DHCP on the bridge; virtdns, given `[dhcp]` there too, refuses
/// and names it, whether the hook starts it or it is run by hand.
pub fn refuses_second_dhcp_server(lab: &mut Lab) {
    let outside = lab.nsd_outside(3);
    let rc = lab.resolv_conf("resolv.conf", &[outside], "");
    let net = LibvirtNet::for_lab(lab);
    let mut libvirtd = lab.libvirtd_with_virtdns_hook();
    let hook = libvirtd.virtdns_hook().clone();
    let r = recipe("libvirt-keeps-dhcp", lab, &net, &libvirtd, &rc);
    let toml = format!(
        "{}\n[dhcp]\nlease_db = \"{}\"\n\n[[dhcp.range]]\nstart = \"{p}.100\"\nend = \"{p}.199\"\n",
        r.toml,
        lab.path("leases.sqlite").display(),
        p = net.prefix()
    );
    let conf = hook.write_config(&net, &toml);
    libvirtd.define_and_start(&net, &r.xml);
    let dnsmasq = libvirtd.dnsmasq_pid(&net).expect("libvirt's dnsmasq");
    let expected = format!(
        "another DHCP server already serves {} (port 67): dnsmasq (pid {dnsmasq})",
        net.bridge
    );
    // Through the hook: virtdns exits; its log says why.
    let line = hook.wait_log(&net, 0, &expected, Duration::from_secs(5));
    wait_until(Duration::from_secs(5), "virtdns exits", || {
        hook.pid(&net).is_none()
    });
    // By hand: the same, with a non-zero exit status.
    let status = lab
        .spawn(
            "virtdns",
            Command::new(virtdns_bin())
                .args(["run", "--config"])
                .arg(&conf),
        )
        .wait_exit(Duration::from_secs(5))
        .expect("virtdns exits");
    assert!(!status.success(), "exit status {status}");
    let text = lab.proc("virtdns").log_text();
    assert!(text.contains(&expected), "{text}");
    println!("    {status}: {}", line.trim());
}

/// SIGHUP (through the hook, on net-update) with a broken TOML: logged, the running
/// configuration stays (DNS and DHCP go on, old names answered, the update not applied);
/// once the TOML is mended, the next SIGHUP applies everything.
pub fn sighup_bad_config_keeps_running(lab: &mut Lab) {
    let outside = lab.nsd_outside(3);
    let rc = lab.resolv_conf("resolv.conf", &[outside], "");
    let net = LibvirtNet::for_lab(lab);
    let mut libvirtd = lab.libvirtd_with_virtdns_hook();
    let hook = libvirtd.virtdns_hook().clone();
    let r = recipe("virtdns-dns-and-dhcp", lab, &net, &libvirtd, &rc);
    let p = net.prefix();
    let good = format!(
        "{}\n[[dns.record]]\nname = \"static.vm.test\"\ntype = \"A\"\nvalue = \"{p}.7\"\n",
        r.toml
    );
    hook.write_config(&net, &good);
    libvirtd.define_and_start(&net, &r.xml);
    let on_bridge = SocketAddr::new(net.host.into(), 53);
    wait_for_tcp(on_bridge, "virtdns started by the hook");
    let pid = hook.pid(&net).expect("virtdns runs");
    let mut guest = lab.libvirt_guest(&net, 1, "guest1");
    lab.start_client(&mut guest, Client::Udhcpc, "guest1", &[]);
    let ip = guest.wait_lease().ip;
    let answers = |name: &str| dig(on_bridge).query(name, "A").answers;
    let old = [
        ("guest1.vm.test", format!("A {ip}")),
        ("nas.vm.test", format!("A {p}.5")),
        ("static.vm.test", format!("A {p}.7")),
        ("www.example.com", "A 192.0.2.80".to_string()),
    ];
    for (name, answer) in &old {
        assert_eq!(answers(name), vec![answer.clone()], "{name} before");
    }

    // Break the TOML, then net-update: the hook sends SIGHUP.
    hook.write_config(&net, &good.replace("[dhcp]", "[dhcp\nbroken"));
    let mark = hook.log(&net).len();
    let entry = format!("<host ip='{p}.6'><hostname>backup</hostname></host>");
    libvirtd.virsh(&[
        "net-update",
        &net.name,
        "add",
        "dns-host",
        &entry,
        "--live",
        "--config",
    ]);
    let refused = hook.wait_log(
        &net,
        mark,
        "reload refused, the running configuration stays",
        Duration::from_secs(2),
    );
    assert!(
        refused.contains(&hook.config_path(&net).display().to_string()),
        "the error names the file: {refused}"
    );
    assert!(
        !hook.log(&net)[mark..].contains("SIGHUP: configuration reloaded"),
        "{}",
        hook.log(&net)
    );
    assert_eq!(hook.pid(&net), Some(pid), "the same virtdns runs");
    for (name, answer) in &old {
        assert_eq!(
            answers(name),
            vec![answer.clone()],
            "{name} after the bad reload"
        );
    }
    assert_eq!(
        dig(on_bridge).query("backup.vm.test", "A").status,
        "NXDOMAIN",
        "the update waits for a config that loads"
    );
    // DHCP goes on: a renewal is answered.
    let before = guest.events().len();
    let client = guest.client.clone().unwrap();
    run(Command::new("kill").args(["-USR1", &lab.proc(&client).pid().to_string()]));
    wait_until(Duration::from_secs(5), "renewal answered", || {
        guest.events()[before..]
            .iter()
            .any(|e| e.starts_with("renew "))
    });

    // Mended: the next SIGHUP (by hand, through the pid file) applies the TOML and the
    // network's new <host>.
    hook.write_config(&net, &good);
    let mark = hook.log(&net).len();
    run(Command::new("kill").args(["-HUP", &pid.to_string()]));
    hook.wait_log(
        &net,
        mark,
        "SIGHUP: configuration reloaded",
        Duration::from_secs(2),
    );
    wait_until(Duration::from_secs(2), "backup.vm.test answered", || {
        answers("backup.vm.test") == [format!("A {p}.6")]
    });
    println!("    {}", refused.trim());
}

/// What libvirt gives a hook: libvirtd's environment does not reach it; at `started begin`
/// the live definition (/run/libvirt/network/NET.xml) is not written yet, at `updated begin`
/// it already holds the update.
pub fn hook_environment(lab: &mut Lab) {
    let net = LibvirtNet::for_lab(lab);
    let log = lab.path("hook.log");
    let hook = format!(
        "#!/bin/sh\n\
         live=$(grep -c '<hostname>' /run/libvirt/network/$1.xml 2>/dev/null || echo none)\n\
         echo \"$2 $3 VIRTDNS_CONF_DIR=${{VIRTDNS_CONF_DIR:-unset}} live=$live\" >> '{}'\n",
        log.display()
    );
    let mut libvirtd = lab.libvirtd_with(
        &[("10-env", &hook)],
        &[("VIRTDNS_CONF_DIR", "/from/libvirtd/environment")],
    );
    libvirtd.define_and_start(&net, &net.stock_xml("vm.test"));
    let entry = format!(
        "<host ip='{}.6'><hostname>backup</hostname></host>",
        net.prefix()
    );
    libvirtd.virsh(&["net-update", &net.name, "add", "dns-host", &entry, "--live"]);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "start begin VIRTDNS_CONF_DIR=unset live=none",
            "started begin VIRTDNS_CONF_DIR=unset live=none",
            "updated begin VIRTDNS_CONF_DIR=unset live=1",
        ],
        "what hooks see"
    );
}

/// The hook run by hand as libvirt runs it: networks without a config are left alone; start
/// is idempotent; updated sends SIGHUP; stopped stops; with systemd it only asks systemctl.
/// And shellcheck finds nothing in it.
pub fn hook_script(lab: &mut Lab) {
    let hook = VirtdnsHook::in_lab(lab);
    lab.attach_log("hook", hook.log_dir.clone());
    let net = LibvirtNet::for_lab(lab);
    let call = |net: &LibvirtNet, op: &str, subop: &str, env: &[(&str, String)]| {
        let mut cmd = Command::new(NETWORK_HOOK);
        cmd.args([net.name.as_str(), op, subop, "-"])
            .envs(hook.env())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("VIRTDNS_INIT", "direct")
            .stdin(std::fs::File::open(NETWORK_HOOK).unwrap());
        let out = cmd.output().expect("run the hook");
        assert!(
            out.status.success(),
            "hook {op} {subop}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "the hook prints nothing");
    };
    // Not managed: nothing happens, nothing is written.
    for (op, subop) in [
        ("started", "begin"),
        ("updated", "begin"),
        ("stopped", "end"),
    ] {
        call(&net, op, subop, &[]);
    }
    assert_eq!(std::fs::read_dir(&hook.run_dir).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(&hook.log_dir).unwrap().count(), 0);

    let rc = lab.resolv_conf("resolv.conf", &[lab.addr(3)], "");
    let listen = SocketAddr::new(lab.ip(1).into(), 5300);
    hook.write_config(
        &net,
        &format!(
            "[dns]\nlisten = [\"{listen}\"]\nresolv_conf = \"{}\"\nno_hosts = true\n",
            rc.display()
        ),
    );
    let started = Instant::now();
    call(&net, "started", "begin", &[]);
    let returned = started.elapsed();
    let pid = hook.pid(&net).expect("virtdns started");
    wait_for_tcp(listen, "virtdns started by the hook");
    call(&net, "started", "begin", &[]);
    assert_eq!(hook.pid(&net), Some(pid), "a second start starts nothing");
    hook.wait_log(
        &net,
        0,
        &format!("already running (pid {pid})"),
        Duration::ZERO,
    );
    let sid = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let sid: Vec<&str> = sid.rsplit(')').next().unwrap().split_whitespace().collect();
    assert_eq!(
        sid[3],
        pid.to_string(),
        "virtdns leads a session of its own"
    );
    call(&net, "updated", "begin", &[]);
    hook.wait_log(
        &net,
        0,
        "SIGHUP: configuration reloaded",
        Duration::from_secs(2),
    );
    call(&net, "stopped", "end", &[]);
    assert_eq!(hook.pid(&net), None, "virtdns stopped");
    assert!(!hook.run_dir.join(format!("{}.pid", net.name)).exists());
    hook.wait_log(&net, 0, &format!("stopped (pid {pid})"), Duration::ZERO);
    call(&net, "stopped", "end", &[]);
    call(&net, "updated", "begin", &[]);
    hook.wait_log(&net, 0, "not running: nothing to reload", Duration::ZERO);
    // Whatever goes wrong at `started begin` is logged, never returned to libvirt (see
    // hook_cannot_start); `start begin` is where the hook fails.
    let missing = [("VIRTDNS_BIN", lab.path("missing").display().to_string())];
    call(&net, "started", "begin", &missing);
    hook.wait_log(
        &net,
        0,
        "started begin: cannot start virtdns: ",
        Duration::ZERO,
    );
    assert_eq!(hook.pid(&net), None);

    // With systemd: systemctl --no-block, with the unit name escaped.
    let bin = lab.path("fake-bin");
    let calls = lab.path("systemctl.calls");
    std::fs::create_dir_all(&bin).unwrap();
    let systemctl = bin.join("systemctl");
    std::fs::write(
        &systemctl,
        format!("#!/bin/sh\necho \"$*\" >> '{}'\n", calls.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dashed = LibvirtNet {
        name: "lab-net".into(),
        ..net.clone()
    };
    hook.write_config(&dashed, "");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let systemd = [("PATH", path), ("VIRTDNS_INIT", "systemd".to_string())];
    for (op, subop) in [
        ("start", "begin"),
        ("started", "begin"),
        ("updated", "begin"),
        ("stopped", "end"),
    ] {
        let mut cmd = Command::new(NETWORK_HOOK);
        cmd.args([dashed.name.as_str(), op, subop, "-"])
            .envs(hook.env())
            .envs(systemd.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(std::process::Stdio::null());
        assert!(cmd.status().unwrap().success());
    }
    let unit = if Path::new("/usr/bin/systemd-escape").exists() {
        "virtdns@lab\\x2dnet.service"
    } else {
        "virtdns@lab-net.service"
    };
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap(),
        format!(
            "cat -- {unit}\n--no-block start {unit}\n--no-block reload {unit}\n\
             --no-block stop {unit}\n"
        ),
        "systemctl calls: at start begin, whether the unit exists"
    );

    match Command::new("shellcheck")
        .args(["-s", "sh", NETWORK_HOOK])
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "shellcheck {NETWORK_HOOK}:\n{}",
            String::from_utf8_lossy(&out.stdout)
        ),
        Err(_) => println!("    shellcheck not installed: not run (scripts/install-test-deps)"),
    }
    println!(
        "    the hook returned {:.0} ms after starting virtdns",
        returned.as_secs_f64() * 1000.0
    );
}

/// A network whose virtdns cannot be started does not start, and nothing is left behind: the
/// hook fails at `start begin`, before libvirt makes anything. Failing at `started begin`
/// instead (as a hook of our own does here) leaves libvirt 9.0 in a state it cannot start the
/// network from: inactive, yet with its bridge, firewall rules and dnsmasq still there.
pub fn hook_cannot_start(lab: &mut Lab) {
    let net = LibvirtNet::for_lab(lab);
    let hook = VirtdnsHook::in_lab(lab);
    let missing = lab.path("no-such-virtdns");
    let wrapper = hook
        .wrapper()
        .replace(virtdns_bin(), &missing.display().to_string());
    let flag = lab.path("fail-at-started");
    let failing = format!(
        "#!/bin/sh\ncat > /dev/null\n\
         if [ \"$2 $3\" = 'started begin' ] && [ -e '{}' ]; then\n\
         echo 'failing at started on purpose' >&2; exit 1\nfi\n",
        flag.display()
    );
    let mut libvirtd =
        lab.libvirtd_with_hooks(&[("virtdns", &wrapper), ("20-fail-at-started", &failing)]);
    let active = |libvirtd: &Libvirtd| {
        libvirtd
            .virsh(&["net-info", &net.name])
            .lines()
            .any(|l| l.starts_with("Active:") && l.ends_with("yes"))
    };

    hook.write_config(&net, "");
    libvirtd.define(&net, &net.stock_xml("vm.test"));
    let started = libvirtd.try_virsh(&["net-start", &net.name]);
    let expected = format!(
        "cannot start virtdns for {}: {} is not executable",
        net.name,
        missing.display()
    );
    assert!(
        started.as_ref().is_err_and(|e| e.contains(&expected)),
        "net-start with virtdns missing: {started:?}"
    );
    assert!(!active(&libvirtd));
    assert_eq!(net.ifindex(), None, "no bridge left behind");
    assert_eq!(libvirtd.dnsmasq_pid(&net), None, "no dnsmasq left behind");

    // A hook that fails at `started begin` instead.
    std::fs::remove_file(hook.config_path(&net)).unwrap();
    std::fs::write(&flag, "").unwrap();
    let failed = libvirtd.try_virsh(&["net-start", &net.name]);
    assert!(
        failed
            .as_ref()
            .is_err_and(|e| e.contains("failing at started on purpose")),
        "{failed:?}"
    );
    assert!(!active(&libvirtd), "libvirt says the network is not active");
    assert!(
        net.ifindex().is_some(),
        "libvirt 9.0 leaves the bridge behind"
    );
    let dnsmasq = libvirtd.dnsmasq_pid(&net).filter(|pid| {
        std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e.ends_with("dnsmasq"))
    });
    assert!(dnsmasq.is_some(), "libvirt 9.0 leaves its dnsmasq running");
    std::fs::remove_file(&flag).unwrap();
    let again = libvirtd.try_virsh(&["net-start", &net.name]);
    assert!(
        again.as_ref().is_err_and(|e| e.contains(&format!(
            "Network is already in use by interface {}",
            net.bridge
        ))),
        "{again:?}"
    );
    // Only removing them by hand lets it start again.
    run(Command::new("kill").arg(dnsmasq.unwrap().to_string()));
    run(Command::new("ip").args(["link", "del", &net.bridge]));
    libvirtd.virsh(&["net-start", &net.name]);
    assert!(active(&libvirtd));
    let message = started.unwrap_err();
    println!(
        "    net-start: ...{}",
        message.split("exit status 1: ").last().unwrap_or("").trim()
    );
}
