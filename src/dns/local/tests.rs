//! Local answers: queries in, decoded replies out.

use super::*;
use crate::config::Config;
use crate::dns::wire;
use hickory_proto::op::Message;
use std::path::Path;

fn names() -> LocalNames {
    let config = Config::parse(
        r#"
[dns]
domain = "vm.test"
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
"#,
        Path::new("t.toml"),
    )
    .unwrap();
    let hosts = crate::hosts::parse("192.0.2.7 printer.example.org\n192.0.2.8 nas\n");
    LocalNames::build(
        Some("vm.test"),
        &["lab.test".into()],
        &config.dns.records,
        &hosts,
        0,
    )
}

fn ask(names: &LocalNames, name: &str, qtype: u16) -> Option<Message> {
    let q = wire::build_query(&wire::name_from_dotted(name).unwrap(), qtype, 9);
    let parsed = wire::parse_query(&q).unwrap();
    match names.answer(&q, &parsed, &parsed.name.to_dotted()) {
        LocalVerdict::Answer(bytes, _) => Some(Message::from_vec(&bytes).unwrap()),
        LocalVerdict::NotLocal => None,
    }
}

fn rdatas(m: &Message) -> Vec<String> {
    m.answers.iter().map(|r| r.data.to_string()).collect()
}

#[test]
fn static_records_with_cname_and_ptr() {
    let n = names();
    assert_eq!(
        rdatas(&ask(&n, "web.vm.test", wire::TYPE_A).unwrap()),
        vec!["192.168.122.10"]
    );
    let m = ask(&n, "WWW.vm.test", wire::TYPE_A).unwrap();
    assert_eq!(rdatas(&m), vec!["web.vm.test.", "192.168.122.10"]);
    let m = ask(&n, "10.122.168.192.in-addr.arpa", wire::TYPE_PTR).unwrap();
    assert_eq!(rdatas(&m), vec!["web.vm.test."]);
    assert_eq!(ask(&n, "_http._tcp.vm.test", 33).unwrap().answers.len(), 1);
}

#[test]
fn single_label_names_expand_with_the_local_domain() {
    let n = names();
    let m = ask(&n, "web", wire::TYPE_A).unwrap();
    assert_eq!(m.answers[0].name.to_ascii(), "web.");
    assert_eq!(rdatas(&m), vec!["192.168.122.10"]);
    // hosts-file short names get the local domain too
    assert_eq!(
        rdatas(&ask(&n, "nas.vm.test", wire::TYPE_A).unwrap()),
        vec!["192.0.2.8"]
    );
}

#[test]
fn local_domains_answer_authoritatively_and_never_leak() {
    let n = names();
    let m = ask(&n, "nothere.vm.test", wire::TYPE_A).unwrap();
    assert_eq!(
        m.metadata.response_code,
        hickory_proto::op::ResponseCode::NXDomain
    );
    assert!(m.metadata.authoritative);
    assert_eq!(
        m.authorities[0].record_type(),
        hickory_proto::rr::RecordType::SOA
    );
    let m = ask(&n, "web.vm.test", wire::TYPE_AAAA).unwrap();
    assert_eq!(
        m.metadata.response_code,
        hickory_proto::op::ResponseCode::NoError
    );
    assert!(m.answers.is_empty() && !m.authorities.is_empty());
    let m = ask(&n, "x.lab.test", wire::TYPE_A).unwrap();
    assert_eq!(
        m.metadata.response_code,
        hickory_proto::op::ResponseCode::NXDomain
    );
}

#[test]
fn hosts_names_outside_local_domains() {
    let n = names();
    assert_eq!(
        rdatas(&ask(&n, "printer.example.org", wire::TYPE_A).unwrap()),
        vec!["192.0.2.7"]
    );
    let m = ask(&n, "printer.example.org", wire::TYPE_AAAA).unwrap();
    assert!(m.answers.is_empty(), "NODATA, not forwarded");
    assert!(
        ask(&n, "printer.example.org", 15).is_none(),
        "MX is forwarded"
    );
    assert!(ask(&n, "www.example.org", wire::TYPE_A).is_none());
}
