//! A network definition in, config text out; the text must parse as virtdns's config and carry
//! the network's values.

use super::*;
use crate::config::{Config, RecordData, StaticRecord};
use crate::libvirt::network::parse;
use std::path::Path;

fn network(xml: &str) -> NetworkDef {
    match parse(xml, Path::new("net.xml")) {
        Ok(def) => def,
        Err(e) => panic!("{e}"),
    }
}

/// Parses the generated text as virtdns does, showing it when it does not parse.
fn config(text: &str) -> Config {
    match Config::parse(text, Path::new("imported.toml")) {
        Ok(c) => c,
        Err(e) => panic!("{e}\n--- generated text ---\n{text}"),
    }
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().expect("test address")
}

fn record(name: &str, data: RecordData) -> StaticRecord {
    StaticRecord {
        name: name.parse().expect("test name"),
        data,
    }
}

/// libvirt's default network, running, exactly as imported.
#[test]
fn default_network_text() {
    let def = network(
        "<network><name>default</name><forward mode='nat'/><bridge name='virbr0'/>\
         <ip address='192.168.122.1' netmask='255.255.255.0'><dhcp>\
         <range start='192.168.122.2' end='192.168.122.254'/></dhcp></ip></network>",
    );
    let text = config_toml(&def, Some(Path::new("/run/libvirt/network/default.xml")));
    assert_eq!(
        text,
        r#"# virtdns config for libvirt network 'default' (`virtdns libvirt import default`)
# read from /run/libvirt/network/default.xml
# Review it before use: each NOTE says where virtdns differs from libvirt's dnsmasq.

[dns]
# NOTE: libvirt's dnsmasq answers DNS on these addresses: give the network <dnsmasq:options xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'><dnsmasq:option value='port=0'/></dnsmasq:options> (virsh net-edit default) so that virtdns can; <dns enable='no'/> does too, but libvirt then refuses <host>, <txt> and <srv> records
listen = ["192.168.122.1"]
forward_plain_names = true

# NOTE: libvirt's dnsmasq serves DHCP on virbr0 while 192.168.122.1 has a <dhcp>: remove it (virsh net-edit default) before virtdns serves this section
[dhcp]
interface = "virbr0"
lease_db = "/var/lib/virtdns/virbr0.leases.sqlite"
lease_time_secs = 3600

[[dhcp.range]]
start = "192.168.122.2"
end = "192.168.122.254"
"#
    );
    let c = config(&text);
    assert_eq!(c.dns.listen[0].0, "192.168.122.1:53".parse().expect("addr"));
    let dhcp = c.dhcp.expect("[dhcp]");
    assert_eq!(dhcp.interface, "virbr0");
    assert_eq!(dhcp.ranges.len(), 1);
    assert_eq!(
        (dhcp.ranges[0].start, dhcp.ranges[0].end),
        (v4("192.168.122.2"), v4("192.168.122.254"))
    );
}

/// Every value virtdns can express comes back out of its config parser.
#[test]
fn generated_config_round_trips() {
    let def = network(
        r#"<network>
  <name>lab</name>
  <forward mode='route'/>
  <bridge name='virbr7'/>
  <domain name='Lab.Test' localOnly='yes'/>
  <dns enable='no' forwardPlainNames='no'>
    <forwarder addr='192.168.1.53'/>
    <forwarder domain='corp.example' addr='10.8.0.1'/>
    <forwarder domain='corp.example' addr='10.8.0.2'/>
    <forwarder domain='corp.example' addr='10.8.0.1'/>
    <forwarder domain='hidden.test'/>
    <forwarder addr='2001:db8::53'/>
    <host ip='10.7.0.5'><hostname>web</hostname><hostname>www.other.test</hostname></host>
    <host ip='fd07::5'><hostname>web</hostname></host>
    <txt name='info.lab.test' value='role=lab,owner=ops'/>
    <txt name='one.lab.test' value='single'/>
    <srv service='ldap' protocol='tcp' target='dir.lab.test' port='389' priority='10' weight='5'/>
    <srv service='kerberos' protocol='udp' domain='corp.example' target='kdc.corp.example'/>
  </dns>
  <ip address='10.7.0.1' prefix='24'>
    <dhcp>
      <range start='10.7.0.100' end='10.7.0.149'><lease expiry='2' unit='hours'/></range>
      <range start='10.7.0.200' end='10.7.0.249'><lease expiry='120' unit='minutes'/></range>
      <host mac='52:54:00:00:07:0a' name='db' ip='10.7.0.10'/>
      <host mac='52:54:00:00:07:0b' ip='10.7.0.11'/>
    </dhcp>
  </ip>
</network>"#,
    );
    let text = config_toml(&def, None);
    let notes: Vec<&str> = text.lines().filter(|l| l.starts_with("# NOTE:")).collect();
    assert_eq!(
        notes,
        vec![
            "# NOTE: with <dns enable='no'/> libvirt's dnsmasq gives DHCP guests no DNS server \
             (option 6): let virtdns serve [dhcp] below, or add <dnsmasq:option \
             value='dhcp-option=option:dns-server,ADDR'/> to the network",
            "# NOTE: libvirt's dnsmasq serves DHCP on virbr7 while 10.7.0.1 has a <dhcp>: \
             remove it (virsh net-edit lab) before virtdns serves this section",
        ],
        "only the hand-over from libvirt's dnsmasq; everything else here is expressible:\n{text}"
    );
    let c = config(&text);

    let dns = &c.dns;
    let listen: Vec<String> = dns.listen.iter().map(|a| a.0.to_string()).collect();
    assert_eq!(listen, vec!["10.7.0.1:53"]);
    assert_eq!(dns.domain.as_ref().map(|d| d.0.as_str()), Some("lab.test"));
    assert!(!dns.forward_plain_names);

    let forwarders: Vec<(Option<&str>, Vec<String>)> = dns
        .forwarders
        .iter()
        .map(|f| {
            (
                f.domain.as_ref().map(|d| d.0.as_str()),
                f.addrs.iter().map(|a| a.0.to_string()).collect(),
            )
        })
        .collect();
    assert_eq!(
        forwarders,
        vec![
            (
                None,
                vec!["192.168.1.53:53".into(), "[2001:db8::53]:53".into()]
            ),
            (
                Some("corp.example"),
                vec!["10.8.0.1:53".into(), "10.8.0.2:53".into()]
            ),
            (Some("hidden.test"), vec![]),
        ]
    );

    assert_eq!(
        dns.records,
        vec![
            record("web.lab.test", RecordData::A(v4("10.7.0.5"))),
            record("www.other.test", RecordData::A(v4("10.7.0.5"))),
            record(
                "web.lab.test",
                RecordData::Aaaa("fd07::5".parse().expect("v6"))
            ),
            record(
                "info.lab.test",
                RecordData::Txt(vec!["role=lab".into(), "owner=ops".into()])
            ),
            record("one.lab.test", RecordData::Txt(vec!["single".into()])),
            record(
                "_ldap._tcp.lab.test",
                RecordData::Srv {
                    priority: 10,
                    weight: 5,
                    port: 389,
                    target: "dir.lab.test".parse().expect("name"),
                }
            ),
            record(
                "_kerberos._udp.corp.example",
                RecordData::Srv {
                    priority: 0,
                    weight: 0,
                    port: 1,
                    target: "kdc.corp.example".parse().expect("name"),
                }
            ),
        ]
    );

    let dhcp = c.dhcp.expect("[dhcp]");
    assert_eq!(dhcp.interface, "virbr7");
    assert_eq!(dhcp.lease_time_secs, 7200);
    assert_eq!(
        dhcp.lease_db,
        std::path::PathBuf::from("/var/lib/virtdns/virbr7.leases.sqlite")
    );
    let ranges: Vec<(Ipv4Addr, Ipv4Addr)> = dhcp.ranges.iter().map(|r| (r.start, r.end)).collect();
    assert_eq!(
        ranges,
        vec![
            (v4("10.7.0.100"), v4("10.7.0.149")),
            (v4("10.7.0.200"), v4("10.7.0.249")),
        ]
    );
    let hosts: Vec<(String, Option<Ipv4Addr>, Option<&str>)> = dhcp
        .hosts
        .iter()
        .map(|h| {
            (
                h.mac.to_string(),
                h.address,
                h.name.as_ref().map(|n| n.0.as_str()),
            )
        })
        .collect();
    assert_eq!(
        hosts,
        vec![
            (
                "52:54:00:00:07:0a".into(),
                Some(v4("10.7.0.10")),
                Some("db")
            ),
            ("52:54:00:00:07:0b".into(), Some(v4("10.7.0.11")), None),
        ]
    );
}

/// What virtdns cannot express is a NOTE where it applies, and the rest still parses.
#[test]
fn what_cannot_be_expressed_is_noted() {
    let def = network(
        r#"<network>
  <name>odd</name>
  <bridge name='virbr8'/>
  <domain name='odd.test'/>
  <dns>
    <forwarder domain='bad domain'/>
    <host ip='10.8.0.5'><hostname>bad name!</hostname></host>
    <srv service='sip' protocol='tcp' target='.'/>
    <srv service='xmpp' protocol='tcp'/>
    <srv service='irc' protocol='tcp' target='irc server'/>
  </dns>
  <ip address='10.8.0.1' prefix='24'>
    <dhcp>
      <range start='10.8.0.100' end='10.8.0.199'><lease expiry='0'/></range>
      <range start='10.8.0.150' end='10.8.0.250'/>
      <range start='10.8.0.99' end='10.8.0.90'/>
      <host name='byname' ip='10.8.0.20'/>
      <host mac='52:54:00:00:08:01' name='noaddr'/>
      <host mac='52:54:00:00:08:02' name='first' ip='10.8.0.21'><lease expiry='10'/></host>
      <host mac='52:54:00:00:08:02' name='again' ip='10.8.0.22'/>
      <host mac='52:54:00:00:08:03' name='same-address' ip='10.8.0.21'/>
      <host mac='52:54:00:00:08:04' name='under score ok?' ip='10.8.0.23'/>
    </dhcp>
  </ip>
  <ip address='10.9.0.1' prefix='24'>
    <dhcp><range start='10.9.0.2' end='10.9.0.9'/></dhcp>
  </ip>
  <ip family='ipv6' address='fd08::1' prefix='64'>
    <dhcp><range start='fd08::100' end='fd08::1ff'/></dhcp>
  </ip>
</network>"#,
    );
    let text = config_toml(&def, None);
    for note in [
        "# NOTE: an isolated network (no <forward>)",
        "# NOTE: virtdns answers names in its domain from local data only, as localOnly='yes' does",
        "# NOTE: <forwarder domain='bad domain'> is not a name virtdns accepts; left out",
        "# NOTE: A record 'bad name!.odd.test' is not a name virtdns accepts; left out",
        "# NOTE: SRV _sip._tcp.odd.test has no target",
        "# NOTE: SRV _xmpp._tcp.odd.test has no target",
        "# NOTE: SRV _irc._tcp.odd.test: target 'irc server' is not a name virtdns accepts",
        "# NOTE: DHCPv6 on fd08::1/64 is not served by virtdns",
        "# NOTE: <dhcp> on 10.9.0.1 left out: libvirt serves DHCP on one IPv4 address only",
        "# NOTE: range 10.8.0.150-10.8.0.250 is reversed or overlaps another; left out",
        "# NOTE: range 10.8.0.99-10.8.0.90 is reversed or overlaps another; left out",
        "# NOTE: per-host lease times are left out",
        "# NOTE: the ranges have different lease times: virtdns has one, the first one given",
        "# NOTE: infinite leases (expiry='0') are not supported: one hour instead",
        "# NOTE: static host 'byname' has no MAC: virtdns knows static hosts by MAC only; left out",
        "# NOTE: static host 52:54:00:00:08:01 has no address",
        "# NOTE: static host 52:54:00:00:08:02 (10.8.0.22) repeats an earlier host's MAC or address",
        "# NOTE: static host 52:54:00:00:08:03 (10.8.0.21) repeats an earlier host's MAC or address",
        "# NOTE: static host 52:54:00:00:08:04: name 'under score ok?' is not a name virtdns accepts",
    ] {
        assert!(text.contains(note), "missing {note:?} in:\n{text}");
    }
    let c = config(&text);
    assert!(c.dns.forwarders.is_empty());
    assert!(c.dns.records.is_empty());
    let dhcp = c.dhcp.expect("[dhcp]");
    assert_eq!(dhcp.lease_time_secs, 3600);
    assert_eq!(dhcp.ranges.len(), 1);
    let hosts: Vec<(String, Option<&str>)> = dhcp
        .hosts
        .iter()
        .map(|h| (h.mac.to_string(), h.name.as_ref().map(|n| n.0.as_str())))
        .collect();
    assert_eq!(
        hosts,
        vec![
            ("52:54:00:00:08:02".into(), Some("first")),
            ("52:54:00:00:08:04".into(), None),
        ]
    );
}

#[test]
fn no_dhcp_without_ipv4_ranges_or_bridge() {
    let cases: &[(&str, &str)] = &[
        (
            "<network><name>n</name><bridge name='br0'/><ip address='10.0.0.1' prefix='24'/></network>",
            "# No IPv4 <dhcp> on this network: virtdns serves no DHCP for it.",
        ),
        (
            "<network><name>n</name><bridge name='br0'/><ip address='10.0.0.1' prefix='24'><dhcp>\
             <host mac='52:54:00:00:00:01' ip='10.0.0.5'/></dhcp></ip></network>",
            "# NOTE: <dhcp> on 10.0.0.1 has no usable <range> (static hosts only)",
        ),
        (
            "<network><name>n</name><ip address='10.0.0.1' prefix='24'><dhcp>\
             <range start='10.0.0.2' end='10.0.0.9'/></dhcp></ip></network>",
            "# NOTE: the definition names no bridge",
        ),
        (
            "<network><name>n</name></network>",
            "# NOTE: the network has no <ip>: no address to listen on",
        ),
    ];
    for (xml, expected) in cases {
        let text = config_toml(&network(xml), None);
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        assert!(config(&text).dhcp.is_none(), "{text}");
    }
}

#[test]
fn dns_off_in_libvirt() {
    let text = config_toml(
        &network(
            "<network><name>n</name><forward/><dns enable='no'/>\
             <ip address='10.0.0.1' prefix='24'/></network>",
        ),
        None,
    );
    assert!(
        text.contains("# libvirt's DNS is off on this network"),
        "{text}"
    );
    assert!(!text.contains("# NOTE:"), "{text}");
    config(&text);

    // With libvirt's DHCP still on, its guests would be told of no DNS server.
    let text = config_toml(
        &network(
            "<network><name>n</name><forward/><bridge name='br0'/><dns enable='no'/>\
             <ip address='10.0.0.1' prefix='24'><dhcp><range start='10.0.0.2' end='10.0.0.9'/>\
             </dhcp></ip></network>",
        ),
        None,
    );
    assert!(
        text.contains(
            "# NOTE: with <dns enable='no'/> libvirt's dnsmasq gives DHCP guests no DNS server"
        ),
        "{text}"
    );
    config(&text);
}

/// Text from the XML ends up in comments; a line break there must not start a line of config.
#[test]
fn xml_text_cannot_escape_a_comment() {
    let def = network(
        "<network><name>n</name><dns>\
         <txt name='x&#10;[dhcp]&#10;interface = \"evil\"' value='v'/>\
         <forwarder domain='y&#13;&#10;listen = [\"0.0.0.0\"]'/></dns></network>",
    );
    let text = config_toml(&def, None);
    assert!(
        text.contains(r#"# NOTE: TXT record 'x\n[dhcp]\ninterface = "evil"' is not a name"#),
        "{text}"
    );
    let c = config(&text);
    assert!(c.dhcp.is_none());
    assert!(c.dns.listen.is_empty());
}
