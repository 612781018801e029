//! Publishing guests' names to an organisation's DNS (RFC 2136 + TSIG, RFC 4703 conflicts):
//! three virtdns "hypervisors" on one bridge (DHCP on ports of their own, driven by a relay
//! in a guest namespace) publish into one zone on a real primary, BIND 9 or Knot DNS, with
//! keys made by `tsig-keygen`. What the zone holds is read back by AXFR from the primary.

use crate::guests::{Guest, Network};
use crate::lab::{Lab, run, wait_for_tcp, wait_until};
use crate::peers::virtdns_bin;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const ZONE: &str = "vm.example";
/// How long the zone gets to follow a change.
const CONVERGE: Duration = Duration::from_secs(15);

/// `tsig-keygen -a ALG NAME`, written to a file only its owner may read.
fn keygen(lab: &Lab, file: &str, name: &str, algorithm: &str) -> (PathBuf, String) {
    let text = run(Command::new("tsig-keygen").args(["-a", algorithm, name]));
    let path = lab.write(file, &text);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (path, text)
}

fn secret_of(key_text: &str) -> String {
    let start = key_text.find("secret \"").expect("secret") + 8;
    key_text[start..].split('"').next().unwrap().to_string()
}

fn reverse_zone(net: &Network) -> String {
    let [a, b, c, _] = net.host.octets();
    format!("{c}.{b}.{a}.in-addr.arpa")
}

fn zone_files(lab: &Lab, dir: &str, net: &Network) -> (PathBuf, PathBuf) {
    let head = "$TTL 300\n@ SOA ns hostmaster 1 3600 600 86400 300\n@ NS ns.vm.example.\n";
    let forward = lab.write(
        &format!("{dir}/{ZONE}.zone"),
        &format!("{head}ns A 192.0.2.53\nadmin A 192.0.2.1\n"),
    );
    let reverse = lab.write(&format!("{dir}/{}.zone", reverse_zone(net)), head);
    (forward, reverse)
}

/// BIND 9 as the organisation's primary: updates allowed with key `hv`, AXFR to anyone.
fn bind_primary(lab: &mut Lab, host: u8, net: &Network, key_text: &str) -> SocketAddr {
    let addr = lab.addr(host);
    let dir = lab.path("bind-primary");
    std::fs::create_dir_all(&dir).unwrap();
    let (forward, reverse) = zone_files(lab, "bind-primary", net);
    lab.write(
        "bind-primary/named.conf",
        &format!(
            "options {{\n  directory \"{dir}\";\n  pid-file \"{dir}/named.pid\";\n  \
             listen-on port 53 {{ {ip}; }};\n  listen-on-v6 {{ none; }};\n  recursion no;\n  \
             dnssec-validation no;\n  notify no;\n  allow-transfer {{ any; }};\n}};\n\
             controls {{ }};\n{key_text}\n\
             zone \"{ZONE}\" {{ type primary; file \"{forward}\"; allow-update {{ key \"hv\"; }}; }};\n\
             zone \"{rev}\" {{ type primary; file \"{reverse}\"; allow-update {{ key \"hv\"; }}; }};\n",
            dir = dir.display(),
            ip = addr.ip(),
            forward = forward.display(),
            reverse = reverse.display(),
            rev = reverse_zone(net),
        ),
    );
    start_named(lab, addr);
    addr
}

/// Starts (or starts again, zone data and journal as they are) the BIND primary.
fn start_named(lab: &mut Lab, addr: SocketAddr) {
    let conf = lab.path("bind-primary/named.conf");
    lab.spawn(
        "named-primary",
        Command::new("named").args(["-g", "-c"]).arg(conf),
    );
    wait_for_tcp(addr, "BIND");
    crate::peers::wait_for_zone(addr, ZONE);
}

/// Knot DNS as the organisation's primary, the same policy.
fn knot_primary(lab: &mut Lab, host: u8, net: &Network, key_text: &str) -> SocketAddr {
    let addr = lab.addr(host);
    let dir = lab.path("knot-primary");
    std::fs::create_dir_all(&dir).unwrap();
    zone_files(lab, "knot-primary", net);
    lab.write(
        "knot-primary/knot.conf",
        &format!(
            "server:\n  listen: {ip}@53\n  rundir: \"{dir}\"\n\
             log:\n  - target: stderr\n    any: info\n\
             database:\n  storage: \"{dir}\"\n\
             key:\n  - id: hv\n    algorithm: hmac-sha256\n    secret: {secret}\n\
             acl:\n  - id: update\n    key: hv\n    action: update\n  \
             - id: transfer\n    address: 127.0.0.0/8\n    action: transfer\n\
             template:\n  - id: default\n    storage: \"{dir}\"\n    file: \"%s.zone\"\n    \
             acl: [update, transfer]\n\
             zone:\n  - domain: {ZONE}\n  - domain: {rev}\n",
            ip = addr.ip(),
            dir = dir.display(),
            secret = secret_of(key_text),
            rev = reverse_zone(net),
        ),
    );
    start_knot(lab, addr);
    addr
}

/// Starts (or starts again, zone data and journal as they are) the Knot primary.
fn start_knot(lab: &mut Lab, addr: SocketAddr) {
    let conf = lab.path("knot-primary/knot.conf");
    lab.spawn("knotd-primary", Command::new("knotd").arg("-c").arg(conf));
    wait_for_tcp(addr, "Knot");
    crate::peers::wait_for_zone(addr, ZONE);
}

/// The organisation's primary a scenario runs against.
#[derive(Clone, Copy)]
enum Primary {
    Bind,
    Knot,
}

impl Primary {
    fn start(self, lab: &mut Lab, host: u8, net: &Network, key_text: &str) -> SocketAddr {
        match self {
            Primary::Bind => bind_primary(lab, host, net, key_text),
            Primary::Knot => knot_primary(lab, host, net, key_text),
        }
    }
    fn stop(self, lab: &mut Lab) {
        lab.proc(match self {
            Primary::Bind => "named-primary",
            Primary::Knot => "knotd-primary",
        })
        .kill();
    }
    fn restart(self, lab: &mut Lab, addr: SocketAddr) {
        match self {
            Primary::Bind => start_named(lab, addr),
            Primary::Knot => start_knot(lab, addr),
        }
    }
}

/// Hypervisor `i` (1-based): virtdns with DNS on 127.N.0.i, DHCP on the bridge at port
/// 67 + 1000 (i - 1), its own range, its own lease database, publishing to `primary`.
fn hypervisor(
    lab: &mut Lab,
    net: &Network,
    i: u8,
    primary: SocketAddr,
    key: &Path,
    extra: &str,
) -> u16 {
    let n = net.host.octets()[2];
    let port = 67 + 1000 * u16::from(i - 1);
    let first = 100 + 30 * u16::from(i - 1);
    let rc = lab.resolv_conf(&format!("resolv{i}.conf"), &[primary], "");
    let config = format!(
        r#"
[dns]
domain = "hv{i}.lab"

[dhcp]
interface = "{bridge}"
lease_db = "{db}"
lease_time_secs = 600
server_port = {port}

[[dhcp.range]]
start = "198.18.{n}.{first}"
end = "198.18.{n}.{last}"

[publish]
server = "{primary}"
zone = "{ZONE}"
reverse_zones = ["{rev}"]
ttl_secs = 60
key_file = "{key}"
{extra}
"#,
        bridge = net.bridge,
        db = lab.path(&format!("hv{i}.sqlite")).display(),
        last = first + 29,
        rev = reverse_zone(net),
        key = key.display(),
    );
    lab.virtdns(i, &rc, &config);
    // DNS accepts connections from the moment its sockets are bound, before DHCP has bound
    // its own: ready is when the DHCP port is held.
    let bound = format!("%{}:{port} ", net.bridge);
    wait_until(Duration::from_secs(5), "DHCP bound", || {
        run(Command::new("ss").args(["-uanl"])).contains(&bound)
    });
    port
}

/// The relay guest: a namespace on the bridge at 198.18.N.250 sending as a DHCP relay.
fn relay(lab: &mut Lab, net: &Network) -> (Guest, String) {
    let n = net.host.octets()[2];
    let relay = format!("198.18.{n}.250");
    let guest = lab.guest(net, 2, "relay");
    run(&mut guest.cmd(&["ip", "addr", "add", &format!("{relay}/24"), "dev", "eth0"]));
    (guest, relay)
}

/// Runs this binary's DHCP helper `mode` in the relay guest against the server at `port`,
/// for client group `tag` and its `items`; what it prints.
fn relay_helper(
    relay: &(Guest, String),
    net: &Network,
    port: u16,
    mode: &str,
    tag: u8,
    items: &[String],
) -> String {
    let me = std::env::current_exe().unwrap();
    run(&mut relay.0.cmd(&[
        me.to_str().unwrap(),
        "--guest-helper",
        mode,
        &format!("{}:{port}", net.host),
        &relay.1,
        &format!("{tag}:{}", items.join(",")),
    ]))
}

/// Leases NAMES from the server at `port` as client group `tag`: name → address.
fn lease(
    relay: &(Guest, String),
    net: &Network,
    port: u16,
    tag: u8,
    names: &[&str],
) -> BTreeMap<String, Ipv4Addr> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    relay_helper(relay, net, port, "lease-named", tag, &names)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, a)| (n.to_string(), a.parse().unwrap()))
        .collect()
}

fn release(
    relay: &(Guest, String),
    net: &Network,
    port: u16,
    tag: u8,
    leases: &[(&str, Ipv4Addr)],
) {
    let list: Vec<String> = leases.iter().map(|(n, a)| format!("{n}={a}")).collect();
    relay_helper(relay, net, port, "release", tag, &list);
}

/// Records of `rtype` in `zone` at the primary, by AXFR: owner (relative) → data.
fn records(primary: SocketAddr, zone: &str, rtype: &str) -> BTreeMap<String, BTreeSet<String>> {
    let out = run(Command::new("dig").args([
        &format!("@{}", primary.ip()),
        zone,
        "AXFR",
        "+noall",
        "+answer",
    ]));
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 5 && f[3] == rtype {
            let owner = f[0]
                .trim_end_matches('.')
                .trim_end_matches(zone)
                .trim_end_matches('.');
            map.entry(owner.to_string())
                .or_default()
                .insert(f[4..].join(" "));
        }
    }
    map
}

/// The guests' A records in the zone (the zone's own `ns` and the admin's record left out).
fn guest_addresses(primary: SocketAddr) -> BTreeMap<String, BTreeSet<String>> {
    let mut a = records(primary, ZONE, "A");
    a.remove("ns");
    a
}

fn expect(pairs: &[(&str, Ipv4Addr)]) -> BTreeMap<String, BTreeSet<String>> {
    pairs
        .iter()
        .map(|(n, a)| (n.to_string(), BTreeSet::from([a.to_string()])))
        .collect()
}

fn leases_text(lab: &Lab, i: u8) -> String {
    run(Command::new(virtdns_bin())
        .args(["leases", "--config"])
        .arg(lab.path(&format!("virtdns{i}.toml"))))
}

/// Three hypervisors publish into one zone: names resolve from every host through the primary;
/// a name two hypervisors' guests both want stays with the first; an administrator's record
/// is left alone; PTRs follow; after the primary is stopped during churn and one
/// hypervisor is killed with SIGKILL, the zone converges to exactly the live leases.
pub fn three_hypervisors_into_bind(lab: &mut Lab) {
    three_hypervisors(lab, Primary::Bind);
}

/// The same with Knot DNS as the primary.
pub fn three_hypervisors_into_knot(lab: &mut Lab) {
    three_hypervisors(lab, Primary::Knot);
}

fn three_hypervisors(lab: &mut Lab, kind: Primary) {
    let net = lab.network();
    let (key, key_text) = keygen(lab, "hv.key", "hv", "hmac-sha256");
    let primary = kind.start(lab, 10, &net, &key_text);
    let n = net.host.octets()[2];
    let fixed: Ipv4Addr = format!("198.18.{n}.9").parse().unwrap();
    let statics =
        "[[dhcp.host]]\nmac = \"52:54:00:00:00:09\"\naddress = \"198.18.N.9\"\nname = \"fixed\"\n"
            .replace('N', &n.to_string());
    let ports = [
        hypervisor(lab, &net, 1, primary, &key, &statics),
        hypervisor(lab, &net, 2, primary, &key, ""),
        hypervisor(lab, &net, 3, primary, &key, ""),
    ];
    let relay = relay(lab, &net);
    let one = lease(&relay, &net, ports[0], 1, &["alpha", "bravo"]);
    // The first to reach the primary keeps a name (RFC 4703), and each hypervisor publishes
    // a few milliseconds after its ACK: hypervisor 2's alpha is leased once hypervisor 1's
    // is in the zone, so which one wins is not a race between their publishers.
    let alpha_one = BTreeSet::from([one["alpha"].to_string()]);
    wait_until(CONVERGE, "hypervisor 1's alpha is in the zone", || {
        guest_addresses(primary).get("alpha") == Some(&alpha_one)
    });
    let two = lease(&relay, &net, ports[1], 2, &["charlie", "alpha"]);
    let three = lease(&relay, &net, ports[2], 3, &["delta", "admin"]);
    let want = expect(&[
        ("alpha", one["alpha"]),
        ("bravo", one["bravo"]),
        ("charlie", two["charlie"]),
        ("delta", three["delta"]),
        ("fixed", fixed),
        ("admin", "192.0.2.1".parse().unwrap()),
    ]);
    let took = wait_until(CONVERGE, "the zone holds every hypervisor's guests", || {
        guest_addresses(primary) == want
    });
    println!(
        "    3 hypervisors, 6 names: zone complete {:.2} s after the last ACK",
        took.as_secs_f64()
    );
    // The conflicts are said, where an admin looks.
    wait_until(CONVERGE, "hypervisor 2 shows alpha in conflict", || {
        leases_text(lab, 2)
            .lines()
            .any(|l| l.contains("alpha") && l.contains("conflict"))
    });
    assert!(
        leases_text(lab, 3)
            .lines()
            .any(|l| l.contains("admin") && l.contains("conflict")),
        "{}",
        leases_text(lab, 3)
    );
    // PTRs for what was published, none for the refused.
    let ptr = records(primary, &reverse_zone(&net), "PTR");
    let last = |a: Ipv4Addr| a.octets()[3].to_string();
    assert_eq!(
        ptr[&last(one["alpha"])],
        BTreeSet::from([format!("alpha.{ZONE}.")])
    );
    assert_eq!(
        ptr[&last(fixed)],
        BTreeSet::from([format!("fixed.{ZONE}.")])
    );
    assert!(!ptr.contains_key(&last(two["alpha"])), "{ptr:?}");
    // Every host resolves every hypervisor's guests through the organisation's DNS.
    for i in 1..=3u8 {
        let at = lab.addr(i);
        for (name, addr) in [
            ("charlie", two["charlie"]),
            ("alpha", one["alpha"]),
            ("delta", three["delta"]),
        ] {
            let got = run(Command::new("dig").args([
                &format!("@{}", at.ip()),
                &format!("{name}.{ZONE}"),
                "A",
                "+short",
            ]));
            assert_eq!(got.trim(), addr.to_string(), "host {i} resolving {name}");
        }
    }
    // The primary goes away during churn; hypervisor 1 loses bravo and gains echo, then is
    // killed with SIGKILL before it could publish; both come back.
    kind.stop(lab);
    release(&relay, &net, ports[0], 1, &[("bravo", one["bravo"])]);
    let echo = lease(&relay, &net, ports[0], 1, &["echo"])["echo"];
    let foxtrot = lease(&relay, &net, ports[1], 2, &["foxtrot"])["foxtrot"];
    wait_until(CONVERGE, "hypervisor 1 has echo's lease stored", || {
        leases_text(lab, 1).contains("echo")
    });
    lab.proc("virtdns-1").kill();
    kind.restart(lab, primary);
    hypervisor(lab, &net, 1, primary, &key, &statics);
    let want = expect(&[
        ("alpha", one["alpha"]),
        ("charlie", two["charlie"]),
        ("delta", three["delta"]),
        ("fixed", fixed),
        ("echo", echo),
        ("foxtrot", foxtrot),
        ("admin", "192.0.2.1".parse().unwrap()),
    ]);
    let took = wait_until(
        Duration::from_secs(70),
        "the zone equals the live leases after the outage",
        || guest_addresses(primary) == want,
    );
    println!(
        "    after the outage and a SIGKILL: zone equals the 6 live names + the admin's, {:.1} s after the primary came back",
        took.as_secs_f64()
    );
    // The reverse zone is updated after the forward one (separate updates): wait for it too.
    let reverse = || records(primary, &reverse_zone(&net), "PTR");
    wait_until(CONVERGE, "the reverse zone follows the churn", || {
        let ptr = reverse();
        ptr.contains_key(&last(echo)) && !ptr.contains_key(&last(one["bravo"]))
    });
    let ptr = reverse();
    assert!(
        !ptr.contains_key(&last(one["bravo"])),
        "bravo's PTR is gone: {ptr:?}"
    );
    assert_eq!(ptr[&last(echo)], BTreeSet::from([format!("echo.{ZONE}.")]));
}

/// Knot DNS as the primary: publishing, an administrator's record left alone, a release
/// removing exactly what was added, and a hypervisor with a wrong key changing nothing and
/// saying why.
pub fn knot_primary_and_a_wrong_key(lab: &mut Lab) {
    let net = lab.network();
    let (key, key_text) = keygen(lab, "hv.key", "hv", "hmac-sha256");
    let primary = knot_primary(lab, 11, &net, &key_text);
    let port = hypervisor(lab, &net, 1, primary, &key, "");
    let relay = relay(lab, &net);
    let got = lease(&relay, &net, port, 1, &["alpha", "admin"]);
    let want = expect(&[
        ("alpha", got["alpha"]),
        ("admin", "192.0.2.1".parse().unwrap()),
    ]);
    wait_until(
        CONVERGE,
        "Knot's zone holds alpha, the admin's record unchanged",
        || guest_addresses(primary) == want,
    );
    let dhcid = records(primary, ZONE, "DHCID");
    assert!(
        dhcid.contains_key("alpha") && !dhcid.contains_key("admin"),
        "{dhcid:?}"
    );
    release(&relay, &net, port, 1, &[("alpha", got["alpha"])]);
    wait_until(CONVERGE, "alpha's A, DHCID and PTR removed", || {
        guest_addresses(primary) == expect(&[("admin", "192.0.2.1".parse().unwrap())])
            && records(primary, ZONE, "DHCID").is_empty()
            && records(primary, &reverse_zone(&net), "PTR").is_empty()
    });
    // A second hypervisor whose key has the right name but another secret.
    let (wrong, _) = keygen(lab, "wrong.key", "hv", "hmac-sha256");
    let port2 = hypervisor(lab, &net, 2, primary, &wrong, "");
    lease(&relay, &net, port2, 2, &["mallory"]);
    wait_until(CONVERGE, "the wrong key's refusal is logged", || {
        lab.proc("virtdns-2")
            .log_text()
            .contains("without a valid signature: the server does not accept key 'hv.'")
    });
    assert!(!guest_addresses(primary).contains_key("mallory"));
    let shown = leases_text(lab, 2);
    assert!(
        shown
            .lines()
            .any(|l| l.contains("mallory") && l.contains("adding: ")),
        "the lease says its name is not published yet, and why: {shown}"
    );
}

/// A key file everyone can read: virtdns refuses to start and says why.
pub fn refuses_a_world_readable_key(lab: &mut Lab) {
    let net = lab.network();
    let (key, _) = keygen(lab, "open.key", "hv", "hmac-sha512");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = lab.write(
        "open.toml",
        &format!(
            "[dhcp]\ninterface = \"{}\"\ndomain = \"vm.test\"\n[[dhcp.range]]\nstart = \"198.18.{n}.100\"\nend = \"198.18.{n}.110\"\n\
             [publish]\nserver = \"127.0.0.1\"\nkey_file = \"{}\"\n",
            net.bridge,
            key.display(),
            n = net.host.octets()[2],
        ),
    );
    let out = Command::new(virtdns_bin())
        .args(["run", "--listen", &lab.addr(1).to_string(), "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must not start: {stderr}");
    assert!(
        stderr.contains("is readable by every user (mode 644)"),
        "{stderr}"
    );
}
