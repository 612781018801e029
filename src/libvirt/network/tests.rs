//! Network XML in, a `NetworkDef` or the exact error a user sees out.

use super::*;
use crate::libvirt::testutil::TempDir;

fn parse_ok(xml: &str) -> NetworkDef {
    match parse(xml, Path::new("default.xml")) {
        Ok(def) => def,
        Err(e) => panic!("{e}"),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// libvirt's default network as `/etc/libvirt/qemu/networks/default.xml` holds it.
const DEFAULT_PERSISTENT: &str = r#"<!--
WARNING: THIS IS AN AUTO-GENERATED FILE. CHANGES TO IT ARE LIKELY TO BE
OVERWRITTEN AND LOST. Changes to this xml configuration should be made using:
  virsh net-edit default
or other application using the libvirt API.
-->

<network>
  <name>default</name>
  <uuid>3e3fce45-4f53-4fa7-bb32-11f34168b82b</uuid>
  <forward mode='nat'/>
  <bridge name='virbr0' stp='on' delay='0'/>
  <mac address='52:54:00:5e:35:9c'/>
  <ip address='192.168.122.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='192.168.122.2' end='192.168.122.254'/>
    </dhcp>
  </ip>
</network>
"#;

/// The same network running: `/run/libvirt/network/default.xml`, as
/// `virNetworkObjFormat` writes it.
const DEFAULT_LIVE: &str = r#"<networkstatus>
  <class_id bitmap='0-2'/>
  <floor sum='0'/>
  <network connections='2'>
    <name>default</name>
    <uuid>3e3fce45-4f53-4fa7-bb32-11f34168b82b</uuid>
    <forward mode='nat'>
      <nat>
        <port start='1024' end='65535'/>
      </nat>
    </forward>
    <bridge name='virbr0' stp='on' delay='0'/>
    <mac address='52:54:00:5e:35:9c'/>
    <ip address='192.168.122.1' netmask='255.255.255.0'>
      <dhcp>
        <range start='192.168.122.2' end='192.168.122.254'/>
      </dhcp>
    </ip>
  </network>
</networkstatus>
"#;

fn default_network() -> NetworkDef {
    NetworkDef {
        name: "default".into(),
        bridge: Some("virbr0".into()),
        forward_mode: Some("nat".into()),
        domain: None,
        dns: Dns::default(),
        ips: vec![IpDef {
            address: ip("192.168.122.1"),
            prefix: 24,
            dhcp: Some(Dhcp {
                ranges: vec![DhcpRange {
                    start: ip("192.168.122.2"),
                    end: ip("192.168.122.254"),
                    lease: None,
                }],
                hosts: vec![],
            }),
        }],
    }
}

#[test]
fn persistent_default_network() {
    assert_eq!(parse_ok(DEFAULT_PERSISTENT), default_network());
}

#[test]
fn live_file_wrapped_in_networkstatus() {
    assert_eq!(parse_ok(DEFAULT_LIVE), default_network());
}

/// Every part virtdns reads, from formatnetwork.rst's addressing example and more.
#[test]
fn everything_virtdns_reads() {
    let def = parse_ok(
        r#"<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>
  <name>lab</name>
  <forward/>
  <bridge name='virbr7'/>
  <domain name='example.com' localOnly='yes'/>
  <dns forwardPlainNames='no'>
    <txt name="example" value="example value"/>
    <forwarder addr="8.8.8.8"/>
    <forwarder domain='example.com' addr="8.8.4.4"/>
    <forwarder domain='www.example.com'/>
    <srv service='name' protocol='tcp' domain='test-domain-name' target='.'
      port='1024' priority='10' weight='10'/>
    <srv service='ldap' protocol='udp'/>
    <host ip='192.168.122.2'>
      <hostname>myhost</hostname>
      <hostname>myhostalias</hostname>
    </host>
  </dns>
  <ip address="192.168.122.1" prefix="24" localPtr="yes">
    <tftp root='/srv/tftp'/>
    <dhcp>
      <range start="192.168.122.100" end="192.168.122.254">
        <lease expiry='1' unit='hours'/>
      </range>
      <host mac="00:16:3E:77:E2:ED" name="foo.example.com" ip="192.168.122.10">
        <lease expiry='30'/>
      </host>
      <host mac="00:16:3e:3e:a9:1a" name="bar.example.com" ip="192.168.122.11"/>
      <host name="paul" ip="192.168.122.12">
        <lease expiry='0'/>
      </host>
      <bootp file='pxelinux.0'/>
    </dhcp>
  </ip>
  <ip family="ipv6" address="2001:db8:ca2:2::1" prefix="64">
    <dhcp>
      <range start="2001:db8:ca2:2:1::10" end="2001:db8:ca2:2:1::ff"/>
      <host id='0:4:7e:7d:f0:7d:a8:bc:c5:d2:13:32:11:ed:16:ea:84:63' name='lucas' ip='2001:db8:ca2:2:3::4'/>
    </dhcp>
  </ip>
  <route address="192.168.222.0" prefix="24" gateway="192.168.122.2"/>
  <dnsmasq:options>
    <dnsmasq:option value="foo=bar"/>
  </dnsmasq:options>
</network>"#,
    );
    assert_eq!(def.name, "lab");
    assert_eq!(def.bridge.as_deref(), Some("virbr7"));
    assert_eq!(
        def.forward_mode.as_deref(),
        Some("nat"),
        "<forward/> is NAT"
    );
    assert_eq!(
        def.domain,
        Some(Domain {
            name: "example.com".into(),
            local_only: true,
            register: false,
        })
    );
    let dns = &def.dns;
    assert_eq!(dns.enable, None);
    assert_eq!(dns.forward_plain_names, Some(false));
    assert_eq!(
        dns.forwarders,
        vec![
            Forwarder {
                domain: None,
                addr: Some(ip("8.8.8.8")),
            },
            Forwarder {
                domain: Some("example.com".into()),
                addr: Some(ip("8.8.4.4")),
            },
            Forwarder {
                domain: Some("www.example.com".into()),
                addr: None,
            },
        ]
    );
    assert_eq!(
        dns.txts,
        vec![Txt {
            name: "example".into(),
            value: "example value".into(),
        }]
    );
    assert_eq!(
        dns.srvs,
        vec![
            Srv {
                service: "name".into(),
                protocol: "tcp".into(),
                domain: Some("test-domain-name".into()),
                target: Some(".".into()),
                port: Some(1024),
                priority: Some(10),
                weight: Some(10),
            },
            Srv {
                service: "ldap".into(),
                protocol: "udp".into(),
                domain: None,
                target: None,
                port: None,
                priority: None,
                weight: None,
            },
        ]
    );
    assert_eq!(
        dns.hosts,
        vec![DnsHost {
            ip: ip("192.168.122.2"),
            hostnames: vec!["myhost".into(), "myhostalias".into()],
        }]
    );

    assert_eq!(def.ips.len(), 2);
    let v4 = &def.ips[0];
    assert!(!v4.is_ipv6());
    assert_eq!(v4.ipv4(), Some(Ipv4Addr::new(192, 168, 122, 1)));
    assert_eq!(v4.prefix, 24);
    let dhcp = v4.dhcp.as_ref().expect("IPv4 <dhcp>");
    assert_eq!(
        dhcp.ranges,
        vec![DhcpRange {
            start: ip("192.168.122.100"),
            end: ip("192.168.122.254"),
            lease: Some(LeaseTime::Seconds(3600)),
        }]
    );
    assert_eq!(
        dhcp.hosts,
        vec![
            DhcpHost {
                mac: Some([0x00, 0x16, 0x3e, 0x77, 0xe2, 0xed]),
                id: None,
                name: Some("foo.example.com".into()),
                ip: Some(ip("192.168.122.10")),
                lease: Some(LeaseTime::Seconds(30 * 60)),
            },
            DhcpHost {
                mac: Some([0x00, 0x16, 0x3e, 0x3e, 0xa9, 0x1a]),
                id: None,
                name: Some("bar.example.com".into()),
                ip: Some(ip("192.168.122.11")),
                lease: None,
            },
            DhcpHost {
                mac: None,
                id: None,
                name: Some("paul".into()),
                ip: Some(ip("192.168.122.12")),
                lease: Some(LeaseTime::Infinite),
            },
        ]
    );

    let v6 = &def.ips[1];
    assert!(v6.is_ipv6(), "IPv6 entries are kept and flagged");
    assert_eq!(v6.ipv4(), None);
    assert_eq!(v6.prefix, 64);
    let dhcp6 = v6.dhcp.as_ref().expect("IPv6 <dhcp>");
    assert_eq!(dhcp6.ranges[0].start, ip("2001:db8:ca2:2:1::10"));
    assert_eq!(
        dhcp6.hosts[0].id.as_deref(),
        Some("0:4:7e:7d:f0:7d:a8:bc:c5:d2:13:32:11:ed:16:ea:84:63")
    );
}

#[test]
fn isolated_network_and_dns_off() {
    let def =
        parse_ok("<network><name>iso</name><dns enable='no'/><domain name='iso.test'/></network>");
    assert_eq!(def.forward_mode, None, "no <forward>: isolated");
    assert_eq!(def.dns.enable, Some(false));
    assert_eq!(def.bridge, None);
    assert!(def.ips.is_empty());
    let domain = def.domain.expect("<domain>");
    assert!(!domain.local_only, "localOnly defaults to no");
}

/// Without netmask or prefix libvirt uses the classful prefix (IPv4) or /64 (IPv6).
#[test]
fn prefix_from_prefix_netmask_or_libvirt_default() {
    let cases: &[(&str, u8)] = &[
        ("address='10.1.2.1' prefix='16'", 16),
        ("address='10.1.2.1' netmask='255.255.255.128'", 25),
        ("address='10.1.2.1' netmask='0.0.0.0'", 0),
        ("address='10.1.2.1'", 8),
        ("address='172.16.0.1'", 16),
        ("address='192.168.100.1'", 24),
        ("address='192.168.100.1' prefix='0'", 24),
        ("family='ipv6' address='fd00::1'", 64),
        ("family='ipv6' address='fd00::1' prefix='48'", 48),
    ];
    for (attrs, prefix) in cases {
        let def = parse_ok(&format!("<network><name>n</name><ip {attrs}/></network>"));
        assert_eq!(def.ips[0].prefix, *prefix, "{attrs}");
    }
}

#[test]
fn lease_units() {
    let cases: &[(&str, LeaseTime)] = &[
        ("expiry='90' unit='seconds'", LeaseTime::Seconds(90)),
        ("expiry='5'", LeaseTime::Seconds(300)),
        ("expiry='2' unit='hours'", LeaseTime::Seconds(7200)),
        ("expiry='0' unit='hours'", LeaseTime::Infinite),
    ];
    for (attrs, lease) in cases {
        let def = parse_ok(&format!(
            "<network><name>n</name><ip address='10.0.0.1' prefix='24'><dhcp>\
             <range start='10.0.0.2' end='10.0.0.9'><lease {attrs}/></range></dhcp></ip></network>"
        ));
        let ranges = &def.ips[0].dhcp.as_ref().expect("dhcp").ranges;
        assert_eq!(ranges[0].lease, Some(*lease), "{attrs}");
    }
}

/// Elements of other namespaces are an application's or dnsmasq's, never libvirt's own.
#[test]
fn unknown_and_foreign_elements_are_ignored() {
    let def = parse_ok(
        r#"<network xmlns:app='http://example.org/app'>
  <name>n</name>
  <metadata><app:ip address='not an address'/></metadata>
  <app:ip address='not an address either'/>
  <portgroup name='engineering' default='yes'/>
  <mtu size='9000'/>
  <ip address='10.0.0.1' prefix='24' someday='maybe'><future/></ip>
</network>"#,
    );
    assert_eq!(def.ips.len(), 1);
    assert_eq!(def.ips[0].address, ip("10.0.0.1"));
}

#[test]
fn errors_name_file_line_and_problem() {
    let net = |body: &str| format!("<network>\n<name>n</name>\n{body}\n</network>");
    let cases: Vec<(String, &str)> = vec![
        ("<network>".into(), "default.xml:1: not well-formed XML:"),
        (
            "<domain name='x'/>".into(),
            "default.xml:1: the root element is <domain>, not <network> or <networkstatus>",
        ),
        (
            "<networkstatus>\n<floor sum='0'/>\n</networkstatus>".into(),
            "default.xml:1: <networkstatus> holds no <network>",
        ),
        (
            "<network>\n<bridge name='virbr0'/>\n</network>".into(),
            "default.xml:1: <network> has no <name>",
        ),
        (
            net("<ip address='224.0.0.1'/>"),
            "default.xml:3: <ip address='224.0.0.1'> has neither netmask nor prefix, and no classful default",
        ),
        (
            net("<ip netmask='255.255.255.0'/>"),
            "default.xml:3: <ip> has no address attribute",
        ),
        (
            net("<ip address='192.168.1.300' prefix='24'/>"),
            "default.xml:3: <ip address='192.168.1.300'> is not an IP address",
        ),
        (
            net("<ip address='10.0.0.1' netmask='255.0.255.0'/>"),
            "default.xml:3: <ip netmask='255.0.255.0'> is not a netmask",
        ),
        (
            net("<ip address='10.0.0.1' netmask='255.0.0.0' prefix='8'/>"),
            "default.xml:3: <ip> has both netmask and prefix",
        ),
        (
            net("<ip address='10.0.0.1' prefix='33'/>"),
            "default.xml:3: <ip prefix='33'>: expected a number from 0 to 32",
        ),
        (
            net("<ip family='ipv6' address='fd00::1' netmask='255.255.255.0'/>"),
            "default.xml:3: <ip netmask=> is for IPv4; IPv6 takes prefix",
        ),
        (
            net("<ip address='fd00::1' prefix='64'/>"),
            "default.xml:3: <ip address='fd00::1'> does not match its family ipv4 (the default)",
        ),
        (
            net("<ip family='ipv5' address='10.0.0.1'/>"),
            "default.xml:3: <ip family='ipv5'>: expected ipv4 or ipv6",
        ),
        (
            net("<dns forwardPlainNames='true'/>"),
            "default.xml:3: <dns forwardPlainNames='true'>: expected yes or no",
        ),
        (
            net("<dns>\n<forwarder/>\n</dns>"),
            "default.xml:4: <forwarder> needs a domain, an addr, or both",
        ),
        (
            net("<dns>\n<forwarder addr='dns.example'/>\n</dns>"),
            "default.xml:4: <forwarder addr='dns.example'> is not an IP address",
        ),
        (
            net("<dns>\n<host ip='10.0.0.5'/>\n</dns>"),
            "default.xml:4: <host ip='10.0.0.5'> has no <hostname>",
        ),
        (
            net("<dns><txt name='t'/></dns>"),
            "default.xml:3: <txt> has no value attribute",
        ),
        (
            net("<dns><srv service='ldap' protocol='tcp' port='70000'/></dns>"),
            "default.xml:3: <srv port='70000'>: expected a number from 0 to 65535",
        ),
        (
            net("<domain localOnly='yes'/>"),
            "default.xml:3: <domain> has no name attribute",
        ),
        (
            net(
                "<ip address='10.0.0.1' prefix='24'><dhcp>\n<range start='10.0.0.2' end='fd00::9'/>\n</dhcp></ip>",
            ),
            "default.xml:4: <range> address fd00::9 is not of the family of <ip address='10.0.0.1'>",
        ),
        (
            net(
                "<ip address='10.0.0.1' prefix='24'><dhcp>\n<host mac='52:54:00:zz:00:01' ip='10.0.0.3'/>\n</dhcp></ip>",
            ),
            "default.xml:4: <host mac='52:54:00:zz:00:01'> is not a MAC address",
        ),
        (
            net("<ip address='10.0.0.1' prefix='24'><dhcp>\n<host ip='10.0.0.3'/>\n</dhcp></ip>"),
            "default.xml:4: <host> needs a mac, an id or a name",
        ),
        (
            net(
                "<ip address='10.0.0.1' prefix='24'><dhcp><range start='10.0.0.2' end='10.0.0.9'>\n<lease expiry='3' unit='days'/>\n</range></dhcp></ip>",
            ),
            "default.xml:4: <lease unit='days'>: expected seconds, minutes or hours",
        ),
        (
            net(
                "<ip address='10.0.0.1' prefix='24'><dhcp><range start='10.0.0.2' end='10.0.0.9'>\n<lease expiry='18446744073709551615' unit='hours'/>\n</range></dhcp></ip>",
            ),
            "default.xml:4: <lease expiry='18446744073709551615'> is too large",
        ),
    ];
    for (xml, expected) in cases {
        let err = match parse(&xml, Path::new("default.xml")) {
            Ok(def) => panic!("{xml}: parsed as {def:?}"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.starts_with(expected),
            "{xml}\n  got:      {err}\n  expected: {expected}"
        );
    }
}

fn paths(dir: &TempDir) -> LibvirtPaths {
    let paths = LibvirtPaths {
        run_dir: dir.path().join("run"),
        etc_dir: dir.path().join("etc"),
        status_dir: dir.path().join("status"),
    };
    std::fs::create_dir_all(&paths.run_dir).expect("run dir");
    std::fs::create_dir_all(&paths.etc_dir).expect("etc dir");
    paths
}

#[test]
fn load_prefers_the_live_definition() {
    let dir = TempDir::new("load-live");
    let paths = paths(&dir);
    let persistent = DEFAULT_PERSISTENT.replace("virbr0", "virbr9");
    std::fs::write(paths.persistent_definition("default"), persistent).expect("write");
    std::fs::write(paths.live_definition("default"), DEFAULT_LIVE).expect("write");
    let loaded = load(&paths, "default").expect("load");
    assert!(loaded.live);
    assert_eq!(loaded.path, dir.path().join("run/default.xml"));
    assert_eq!(loaded.def.bridge.as_deref(), Some("virbr0"));
}

#[test]
fn load_falls_back_to_the_persistent_definition() {
    let dir = TempDir::new("load-etc");
    let paths = paths(&dir);
    std::fs::write(paths.persistent_definition("default"), DEFAULT_PERSISTENT).expect("write");
    let loaded = load(&paths, "default").expect("load");
    assert!(!loaded.live);
    assert_eq!(loaded.path, dir.path().join("etc/default.xml"));
    assert_eq!(loaded.def, default_network());
}

#[test]
fn load_errors() {
    let dir = TempDir::new("load-errors");
    let paths = paths(&dir);
    let d = dir.path().display();

    let err = load(&paths, "missing").expect_err("not defined");
    assert_eq!(
        err.to_string(),
        format!(
            "network missing is not defined: neither {d}/run/missing.xml nor {d}/etc/missing.xml exists"
        )
    );

    for bad in ["", "../default", "a/b", ".hidden"] {
        let err = load(&paths, bad).expect_err("bad name");
        assert_eq!(err.to_string(), format!("'{bad}' is not a network name"));
    }

    std::fs::write(paths.persistent_definition("other"), DEFAULT_PERSISTENT).expect("write");
    let err = load(&paths, "other").expect_err("name mismatch");
    assert_eq!(
        err.to_string(),
        format!("{d}/etc/other.xml:1: defines network 'default', not 'other'")
    );

    std::fs::write(
        paths.live_definition("broken"),
        "<network><name>broken</name><ip/></network>",
    )
    .expect("write");
    let err = load(&paths, "broken").expect_err("invalid");
    assert_eq!(
        err.to_string(),
        format!("{d}/run/broken.xml:1: <ip> has no address attribute")
    );
}
