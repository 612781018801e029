//! Config text in, effective settings or the exact error a user sees out.

use super::*;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, Path::new("virtdns.toml")).map_err(|e| e.to_string())
}

#[test]
fn empty_file_gives_defaults() {
    let c = parse("").unwrap();
    assert!(c.dns.listen.is_empty());
    assert_eq!(c.dns.cache_size, 10_000);
    assert_eq!(
        c.dns.threads, 1,
        "one UDP thread, as Unbound, NSD and dnsmasq run by default"
    );
    assert!(c.dns.forward_plain_names);
    assert_eq!(c.dns.hosts, vec![PathBuf::from("/etc/hosts")]);
}

#[test]
fn full_example_parses() {
    let c = parse(
        r#"
[dns]
listen = ["192.168.122.1", "[fd00::1]:5300"]
domain = "VM.Test."
forward_plain_names = false

[[dns.forwarder]]
domain = "corp.example"
addr = ["192.168.11.2", "192.168.11.3:5300"]

[[dns.forwarder]]
domain = "local-only.test"

[[dns.record]]
name = "_ldap._tcp.vm.test"
type = "SRV"
value = "0 5 389 ldap.vm.test"

[[dns.record]]
name = "txt.vm.test"
type = "txt"
value = ["one", "two"]
"#,
    )
    .unwrap();
    assert_eq!(c.dns.listen[0].0, "192.168.122.1:53".parse().unwrap());
    assert_eq!(c.dns.listen[1].0, "[fd00::1]:5300".parse().unwrap());
    assert_eq!(c.dns.domain.unwrap().0, "vm.test");
    assert_eq!(c.dns.forwarders[0].addrs.len(), 2);
    assert_eq!(c.dns.forwarders[0].addrs[1].0.port(), 5300);
    assert!(c.dns.forwarders[1].addrs.is_empty());
    assert_eq!(
        c.dns.records[0].data,
        RecordData::Srv {
            priority: 0,
            weight: 5,
            port: 389,
            target: "ldap.vm.test".parse().unwrap()
        }
    );
    assert_eq!(
        c.dns.records[1].data,
        RecordData::Txt(vec!["one".into(), "two".into()])
    );
}

#[test]
fn errors_name_file_line_and_problem() {
    let cases: &[(&str, &str)] = &[
        (
            "[dns]\nlisten = [\"nonsense\"]\n",
            "virtdns.toml:2: 'nonsense' is not an address",
        ),
        (
            "[dns]\ncache_size = \"big\"\n",
            "virtdns.toml:2: invalid type",
        ),
        (
            "[dns]\nlisen = []\n",
            "virtdns.toml:2: unknown field `lisen`",
        ),
        (
            "[dns]\n\n[[dns.forwarder]]\n",
            "virtdns.toml:3: a forwarder needs a domain, an addr, or both",
        ),
        (
            "[[dns.record]]\nname = \"a.vm.test\"\ntype = \"A\"\nvalue = \"::1\"\n",
            "virtdns.toml:1: A record value: not an IPv4 address",
        ),
        (
            "[[dns.record]]\nname = \"a.vm.test\"\ntype = \"HINFO\"\nvalue = \"x\"\n",
            "virtdns.toml:1: record type 'HINFO' is not supported",
        ),
        (
            "[dns]\ndomain = \"bad domain\"\n",
            "virtdns.toml:2: 'bad domain' is not a valid domain name",
        ),
        (
            "[dns]\nmin_timeout_ms = 5000\n",
            "virtdns.toml:2: min_timeout_ms (5000) must be above 0",
        ),
        ("[dns\n", "virtdns.toml:1: "),
        (
            "[dns]\ncache_size = 100\nthreads = 0\n",
            "virtdns.toml:3: threads must be 1 to 64, not 0",
        ),
        (
            "[dns]\nlog_queries = \"yes\"\n",
            "virtdns.toml:2: invalid type: string \"yes\", expected a boolean",
        ),
        (
            "[dns]\n\n[metrics]\nlisten = \"localhost:9153\"\n",
            "virtdns.toml:4: [metrics] listen 'localhost:9153' is not an address and port",
        ),
        (
            "[metrics]\nlisten = \"127.0.0.1\"\n",
            "virtdns.toml:2: [metrics] listen '127.0.0.1' is not an address and port",
        ),
        (
            "[metrics]\nlisten = \"127.0.0.1:0\"\n",
            "virtdns.toml:2: [metrics] listen '127.0.0.1:0': the port cannot be 0",
        ),
        (
            "[metrics]\nlisten = 9153\n",
            "virtdns.toml:2: invalid type: integer `9153`, expected a string",
        ),
        (
            "[metrics]\nport = 9153\n",
            "virtdns.toml:2: unknown field `port`",
        ),
    ];
    for (text, want) in cases {
        let got = parse(text).unwrap_err();
        assert!(
            got.starts_with(want),
            "config {text:?}\n  got:  {got}\n  want: {want}…"
        );
    }
}

#[test]
fn metrics_and_the_query_log_are_off_unless_asked_for() {
    let c = parse("").unwrap();
    assert_eq!(c.metrics, None);
    assert!(!c.dns.log_queries);
    let c = parse("[dns]\nlog_queries = true\n[metrics]\n").unwrap();
    assert!(c.dns.log_queries);
    assert_eq!(
        c.metrics.unwrap().listen.0,
        DEFAULT_METRICS_LISTEN.parse().unwrap()
    );
    let c = parse("[metrics]\nlisten = \"[::1]:9100\"\n").unwrap();
    assert_eq!(c.metrics.unwrap().listen.0, "[::1]:9100".parse().unwrap());
}

#[test]
fn dhcp_section_errors_name_the_line() {
    let base = "[dhcp]\ninterface = \"virbr0\"\n";
    let cases: &[(&str, &str)] = &[
        (
            "",
            "virtdns.toml:1: [dhcp] needs at least one [[dhcp.range]]",
        ),
        (
            "[[dhcp.range]]\nstart = \"192.168.122.50\"\nend = \"192.168.122.10\"\n",
            "virtdns.toml:3: range start 192.168.122.50 is after its end",
        ),
        (
            "[[dhcp.range]]\nstart = \"10.0.0.2\"\nend = \"10.0.0.9\"\nsubnet = \"10.1.0.0/16\"\n",
            "virtdns.toml:3: range address 10.0.0.2 is outside its subnet 10.1.0.0/16",
        ),
        (
            "[[dhcp.range]]\nstart = \"10.0.0.2\"\nend = \"10.0.0.9\"\n[[dhcp.range]]\nstart = \"10.0.0.5\"\nend = \"10.0.0.20\"\n",
            "virtdns.toml:1: ranges 10.0.0.2-10.0.0.9 and 10.0.0.5-10.0.0.20 overlap",
        ),
        (
            "[[dhcp.range]]\nstart = \"10.0.0.2\"\nend = \"10.0.0.9\"\n[[dhcp.host]]\nmac = \"52:54:00:zz:00:01\"\nname = \"a\"\n",
            "virtdns.toml:7: '52:54:00:zz:00:01' is not a MAC address",
        ),
    ];
    for (tail, want) in cases {
        let text = format!("{base}{tail}");
        let got = parse(&text).unwrap_err();
        assert!(
            got.starts_with(want),
            "config {text:?}\n  got:  {got}\n  want: {want}…"
        );
    }
}

#[test]
fn dhcp_ranges_are_checked_against_the_interface() {
    let c = parse("[dhcp]\ninterface = \"virbr0\"\n[[dhcp.range]]\nstart = \"192.168.122.2\"\nend = \"192.168.123.9\"\n")
        .unwrap();
    let dhcp = c.dhcp.unwrap();
    let err = dhcp
        .check_against(
            "192.168.122.0/24".parse().unwrap(),
            "192.168.122.1".parse().unwrap(),
        )
        .unwrap_err();
    assert_eq!(
        err,
        "range 192.168.122.2-192.168.123.9 is outside the subnet 192.168.122.0/24 of interface virbr0"
    );
}

#[test]
fn each_network_gets_its_own_lease_database_by_default() {
    let text = |iface: &str| {
        format!(
            "[dhcp]\ninterface = \"{iface}\"\n[[dhcp.range]]\nstart = \"10.0.0.2\"\nend = \"10.0.0.9\"\n"
        )
    };
    let a = parse(&text("virbr0")).unwrap().dhcp.unwrap().lease_db;
    let b = parse(&text("virbr1")).unwrap().dhcp.unwrap().lease_db;
    assert_eq!(a, PathBuf::from("/var/lib/virtdns/virbr0.leases.sqlite"));
    assert_ne!(a, b);
}

/// A scratch folder for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("virtdns-config-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const NETWORK_XML: &str = "<network>\n  <name>lab</name>\n  <bridge name='virbr7'/>\n  \
    <domain name='vm.test'/>\n  <dns enable='no'>\n    <host ip='192.168.77.5'><hostname>nas</hostname></host>\n  \
    </dns>\n  <ip address='192.168.77.1' netmask='255.255.255.0'/>\n</network>\n";

fn with_network(tag: &str, xml: &str, toml: &str) -> (Scratch, Result<Config, String>) {
    let s = Scratch::new(tag);
    std::fs::write(s.0.join("etc/lab.xml"), xml).unwrap();
    let text = format!(
        "[libvirt]\nnetwork = \"lab\"\nrun_dir = \"{d}/run\"\netc_dir = \"{d}/etc\"\nstatus_dir = \"{d}/status\"\n{toml}",
        d = s.0.display()
    );
    let path = s.0.join("lab.toml");
    std::fs::write(&path, text).unwrap();
    let loaded = Config::load(&path).map_err(|e| e.to_string());
    (s, loaded)
}

#[test]
fn a_libvirt_network_fills_dns_and_the_toml_overrides_and_adds() {
    let (s, c) = with_network(
        "fills",
        NETWORK_XML,
        "[dns]\nlocal_ttl = 5\n[[dns.record]]\nname = \"extra.vm.test\"\ntype = \"A\"\nvalue = \"192.168.77.6\"\n\
         [dhcp]\n[[dhcp.range]]\nstart = \"192.168.77.10\"\nend = \"192.168.77.20\"\n",
    );
    let c = c.unwrap();
    assert_eq!(c.dns.listen[0].to_string(), "192.168.77.1:53");
    assert_eq!(c.dns.domain.as_ref().unwrap().0, "vm.test");
    assert_eq!(c.dns.local_ttl, 5, "the TOML overrides");
    let names: Vec<_> = c.dns.records.iter().map(|r| r.name.0.clone()).collect();
    assert!(names.contains(&"nas.vm.test".to_string()), "{names:?}");
    assert!(
        names.contains(&"extra.vm.test".to_string()),
        "the TOML adds: {names:?}"
    );
    let dhcp = c.dhcp.unwrap();
    assert_eq!(dhcp.interface, "virbr7", "the bridge");
    assert_eq!(
        dhcp.lease_db,
        PathBuf::from("/var/lib/virtdns/virbr7.leases.sqlite")
    );
    let net = c.network.unwrap();
    assert_eq!(net.write_status, Some(s.0.join("status/virbr7.status")));
    assert_eq!(net.read_status, None);
}

#[test]
fn when_libvirt_serves_dhcp_guest_names_come_from_its_status_file() {
    let xml = NETWORK_XML.replace(
        "<ip address='192.168.77.1' netmask='255.255.255.0'/>",
        "<ip address='192.168.77.1' netmask='255.255.255.0'><dhcp><range start='192.168.77.2' end='192.168.77.9'/></dhcp></ip>",
    );
    let (s, c) = with_network("reads", &xml, "");
    let net = c.unwrap().network.unwrap();
    assert_eq!(net.read_status, Some(s.0.join("status/virbr7.status")));
    assert_eq!(net.write_status, None);
}

#[test]
fn a_missing_network_or_interface_is_an_error_naming_the_file() {
    let (_s, c) = with_network("missing", "<network><name>other</name></network>", "");
    assert!(c.unwrap_err().contains("lab.toml:2:"));
    let no_iface = "[dhcp]\n[[dhcp.range]]\nstart = \"10.0.0.2\"\nend = \"10.0.0.9\"\n";
    let err = parse(no_iface).unwrap_err();
    assert!(err.contains("[dhcp] needs an interface"), "{err}");
}

#[test]
fn a_reload_names_the_sections_that_wait_for_a_restart() {
    let running = parse("[metrics]\nlisten = \"127.0.0.1:9153\"\n").unwrap();
    let same = parse("[dns]\nlocal_ttl = 5\n\n[metrics]\nlisten = \"127.0.0.1:9153\"\n").unwrap();
    assert!(running.changes_awaiting_restart(&same).is_empty());
    let moved = parse("[metrics]\nlisten = \"127.0.0.1:9154\"\n").unwrap();
    assert_eq!(running.changes_awaiting_restart(&moved), ["[metrics]"]);
    let threaded = parse("[dns]\nthreads = 2\n\n[metrics]\nlisten = \"127.0.0.1:9153\"\n").unwrap();
    assert_eq!(
        running.changes_awaiting_restart(&threaded),
        ["[dns] threads"]
    );
    let publishing = parse(concat!(
        "[metrics]\nlisten = \"127.0.0.1:9153\"\n\n",
        "[dhcp]\ninterface = \"virbr0\"\n[[dhcp.range]]\n",
        "start = \"192.168.122.2\"\nend = \"192.168.122.9\"\n\n",
        "[publish]\nserver = \"192.0.2.1\"\nzone = \"vm.example\"\nkey_file = \"/etc/virtdns/key\"\n",
    ))
    .unwrap();
    let publishing_too = parse(concat!(
        "[metrics]\nlisten = \"127.0.0.1:9153\"\n\n",
        "[dhcp]\ninterface = \"virbr0\"\n[[dhcp.range]]\n",
        "start = \"192.168.122.2\"\nend = \"192.168.122.9\"\n",
    ))
    .unwrap();
    assert_eq!(
        publishing_too.changes_awaiting_restart(&publishing),
        ["[publish]"]
    );
    assert_eq!(
        running.changes_awaiting_restart(&publishing),
        ["[publish]"],
        "a [dhcp] section alone needs no restart"
    );
    assert_eq!(
        publishing.changes_awaiting_restart(&Config::default()),
        ["[publish]", "[metrics]"]
    );
    let elsewhere = parse(concat!(
        "[dns]\nlisten = [\"127.0.0.1:5353\"]\ncache_size = 10\ntcp_idle_timeout_ms = 500\n\n",
        "[metrics]\nlisten = \"127.0.0.1:9153\"\n",
    ))
    .unwrap();
    assert_eq!(
        running.changes_awaiting_restart(&elsewhere),
        [
            "[dns] listen",
            "[dns] cache_size",
            "[dns] tcp_idle_timeout_ms"
        ]
    );
}
