//! libvirt's own stack, as virtdns finds it on a host: a real libvirtd (network driver only,
//! see `libvirtd`) with its dnsmasq, the lease status file, `virsh net-dhcp-leases`, the
//! libvirt NSS module and network hooks. These pin the reference virtdns is compared to.

use crate::clients::dig;
use crate::guests::{Client, Guest};
use crate::lab::{Lab, run, wait_until};
use crate::libvirtd::{LibvirtNet, wait_dhcp_lease};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

/// Waits for a `bound` event after the first `after` events; returns its address.
pub fn wait_bound_after(guest: &Guest, after: usize) -> Ipv4Addr {
    wait_until(
        Duration::from_secs(20),
        &format!("{} leases again", guest.name),
        || {
            guest.events()[after.min(guest.events().len())..]
                .iter()
                .any(|e| e.starts_with("bound "))
        },
    );
    guest.seen().expect("a lease").ip
}

fn assert_in_range(net: &LibvirtNet, ip: Ipv4Addr) {
    let o = ip.octets();
    assert!(
        o[..3] == net.host.octets()[..3] && (2..=254).contains(&o[3]),
        "{ip} outside {}.2-254",
        net.prefix()
    );
}

/// The lease as `virsh net-dhcp-leases` shows it: (MAC, address/prefix, hostname) of the row
/// for `ip`.
pub fn lease_row(listing: &str, ip: Ipv4Addr) -> (String, String, String) {
    let row = listing
        .lines()
        .find(|l| l.contains(&format!(" {ip}/")))
        .unwrap_or_else(|| panic!("no lease for {ip} in:\n{listing}"));
    // Expiry time (date and time), MAC, protocol, IP/prefix, hostname, client ID.
    let f: Vec<&str> = row.split_whitespace().collect();
    (f[2].to_string(), f[4].to_string(), f[5].to_string())
}

pub fn stock_network_leases_and_nss(lab: &mut Lab) {
    let t0 = Instant::now();
    let mut libvirtd = lab.libvirtd();
    let net = LibvirtNet::for_lab(lab);
    libvirtd.define_and_start(&net, &net.stock_xml("vmtest"));
    let started = t0.elapsed();
    let first_index = net.ifindex().expect("bridge exists after net-start");
    let live =
        std::fs::read_to_string(libvirtd.path(&format!("run/libvirt/network/{}.xml", net.name)))
            .expect("live network XML");
    assert!(
        live.contains(&format!(
            "<bridge name='{}' stp='on' delay='0'/>",
            net.bridge
        )),
        "libvirt's defaults in the live XML: {live}"
    );
    // The kernel raises a forward delay of 0 to its 2 s minimum once STP is on: a new port
    // (a guest plugged in) forwards only after listening + learning, about 4 s.
    let details = run(Command::new("ip").args(["-d", "link", "show", "dev", &net.bridge]));
    assert!(
        details.contains("stp_state 1") && details.contains("forward_delay 200"),
        "{details}"
    );

    let mut guest = lab.libvirt_guest(&net, 1, "guest1");
    lab.start_client(&mut guest, Client::Udhcpc, "guest1", &[]);
    let seen = guest.wait_lease();
    let leased = t0.elapsed();
    assert_in_range(&net, seen.ip);
    assert_eq!(seen.dns, net.host.to_string(), "DNS server handed out");
    let bound = guest
        .events()
        .into_iter()
        .find(|e| e.starts_with("bound "))
        .unwrap();
    assert!(
        bound.ends_with("domain=vmtest"),
        "domain handed out: {bound}"
    );

    // Every reader of the lease: virsh, the status file, the NSS module, libvirt's DNS.
    let listing = wait_dhcp_lease(&libvirtd, &net, seen.ip);
    assert_eq!(
        lease_row(&listing, seen.ip),
        (
            guest.mac.clone(),
            format!("{}/24", seen.ip),
            "guest1".to_string()
        ),
        "net-dhcp-leases row:\n{listing}"
    );
    let status = std::fs::read_to_string(libvirtd.status_file(&net)).expect("status file");
    for field in [
        format!("\"ip-address\": \"{}\"", seen.ip),
        format!("\"mac-address\": \"{}\"", guest.mac),
        "\"hostname\": \"guest1\"".to_string(),
    ] {
        assert!(status.contains(&field), "{field} in {status}");
    }
    wait_until(
        Duration::from_secs(5),
        "host resolves guest1 through libvirt NSS",
        || libvirtd.getent_hosts("guest1") == [seen.ip.to_string()],
    );
    assert_eq!(libvirtd.getent_hosts("nosuchguest"), Vec::<String>::new());
    let on_bridge = SocketAddr::new(net.host.into(), 53);
    assert_eq!(
        dig(on_bridge).query("guest1.vmtest", "A").answers,
        vec![format!("A {}", seen.ip)],
        "libvirt's dnsmasq answers guest1.vmtest"
    );

    // net-destroy + net-start: a new bridge (new ifindex); the guest, plugged in again,
    // leases again from the new dnsmasq.
    let t1 = Instant::now();
    libvirtd.restart_network(&net);
    let second_index = net.ifindex().expect("bridge exists after net-start again");
    assert_ne!(first_index, second_index, "net-start makes a new bridge");
    libvirtd.reattach(&net, 1);
    let before = guest.events().len();
    let client = guest.client.clone().unwrap();
    lab.proc(&client).kill();
    lab.start_client(&mut guest, Client::Udhcpc, "guest1", &[]);
    let again = wait_bound_after(&guest, before);
    let leased_again = t1.elapsed();
    assert_in_range(&net, again);
    assert_eq!(
        again, seen.ip,
        "libvirt's new dnsmasq reloads the lease from the status file (leaseshelper init)"
    );
    let listing = wait_dhcp_lease(&libvirtd, &net, again);
    assert_eq!(lease_row(&listing, again).2, "guest1", "{listing}");
    assert_eq!(libvirtd.getent_hosts("guest1"), vec![again.to_string()]);
    println!(
        "    libvirtd answered in {:.2} s, network up at {:.2} s, leased at {:.2} s; \
         restart + new lease {:.2} s; bridge ifindex {first_index} -> {second_index}",
        libvirtd.startup.as_secs_f64(),
        started.as_secs_f64(),
        leased.as_secs_f64(),
        leased_again.as_secs_f64()
    );
}

/// The hook libvirt runs: appends its arguments and the bridge's IPv4 address at that moment
/// (from inside the hook) to `log`, and keeps the XML it got on stdin.
fn recording_hook(log: &std::path::Path, bridge: &str) -> String {
    let log = log.display();
    format!(
        "#!/bin/sh\n\
         addr=$(ip -o -4 addr show dev {bridge} 2>/dev/null | awk '{{print $4}}')\n\
         cat > \"{log}.$2-$3.xml\"\n\
         echo \"$* addr=${{addr:-none}}\" >> \"{log}\"\n"
    )
}

pub fn hook_is_called(lab: &mut Lab) {
    let net = LibvirtNet::for_lab(lab);
    let log = lab.path("hook.log");
    let hook = recording_hook(&log, &net.bridge);
    let mut libvirtd = lab.libvirtd_with_hooks(&[("10-record", &hook)]);
    let events = || -> Vec<String> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        events(),
        Vec::<String>::new(),
        "no hook call before any network"
    );
    libvirtd.define_and_start(&net, &net.stock_xml("vmtest"));
    let n = &net.name;
    let host = format!("{}/24", net.host);
    let start = vec![
        format!("{n} start begin - addr=none"),
        format!("{n} started begin - addr={host}"),
    ];
    assert_eq!(events(), start, "hooks on net-define + net-start");
    let xml = std::fs::read_to_string(format!("{}.started-begin.xml", log.display())).unwrap();
    assert!(
        xml.contains(&format!("<name>{n}</name>"))
            && xml.contains(&format!("name='{}'", net.bridge)),
        "the network XML on the hook's stdin: {xml}"
    );

    libvirtd.virsh(&["net-destroy", n]);
    let mut expected = start.clone();
    expected.push(format!("{n} stopped end - addr=none"));
    assert_eq!(events(), expected, "hooks on net-destroy");

    libvirtd.virsh(&["net-start", n]);
    expected.extend(start.clone());
    assert_eq!(events(), expected, "hooks on net-start again");

    // A live change to the DHCP hosts.
    let p = net.prefix();
    let entry = format!("<host mac='52:54:00:aa:bb:01' name='fixed' ip='{p}.9'/>");
    libvirtd.virsh(&[
        "net-update",
        n,
        "add",
        "ip-dhcp-host",
        &entry,
        "--live",
        "--config",
    ]);
    expected.push(format!("{n} updated begin - addr={host}"));
    assert_eq!(events(), expected, "hooks on net-update");

    // libvirtd stopped and started again while the network runs: no hook call at all, and
    // the network (bridge, dnsmasq) lives on untouched.
    let bridge = net.ifindex();
    let pid_file = libvirtd.path(&format!("run/libvirt/network/{n}.pid"));
    let dnsmasq = std::fs::read_to_string(&pid_file).unwrap();
    libvirtd.stop_daemon();
    assert_eq!(events(), expected, "hooks on libvirtd stop");
    libvirtd.start_daemon(lab);
    assert_eq!(events(), expected, "hooks on libvirtd start");
    assert!(
        libvirtd
            .virsh(&["net-info", n])
            .lines()
            .any(|l| l.starts_with("Active:") && l.ends_with("yes")),
        "the network is still active after libvirtd restarts"
    );
    assert_eq!(net.ifindex(), bridge, "same bridge after libvirtd restarts");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap(),
        dnsmasq,
        "same dnsmasq after libvirtd restarts"
    );
}
