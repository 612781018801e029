//! The RFC 4703 rules against a zone modelled in memory: RFC 2136's prerequisites and
//! update operations for the record types publishing uses, applied as a primary would.

use super::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

type Key = (String, RecordType);

/// A primary's zone data, with every update it was sent.
#[derive(Default)]
struct Zone {
    rrsets: Mutex<BTreeMap<Key, BTreeSet<Vec<u8>>>>,
    sent: Mutex<Vec<Message>>,
}

fn data(record: &Record) -> Vec<u8> {
    match &record.data {
        RData::A(a) => a.0.octets().to_vec(),
        RData::PTR(p) => p.0.to_ascii().into_bytes(),
        RData::Unknown { rdata, .. } => rdata.anything.clone(),
        other => panic!("unexpected rdata {other:?}"),
    }
}

fn rtype(record: &Record) -> RecordType {
    match &record.data {
        RData::Update0(t) => *t,
        _ => record.record_type(),
    }
}

impl Zone {
    fn put(&self, name: &str, rtype: RecordType, rdata: Vec<u8>) {
        let mut z = self.rrsets.lock().unwrap();
        z.entry((name.into(), rtype)).or_default().insert(rdata);
    }

    fn get(&self, name: &str, rtype: RecordType) -> BTreeSet<Vec<u8>> {
        let z = self.rrsets.lock().unwrap();
        z.get(&(name.to_string(), rtype))
            .cloned()
            .unwrap_or_default()
    }

    fn apply(&self, m: &Message) -> ResponseCode {
        let mut z = self.rrsets.lock().unwrap();
        for p in &m.answers {
            let name = p.name.to_ascii();
            let in_use = z.keys().any(|(n, _)| *n == name);
            let set = z.get(&(name.clone(), rtype(p)));
            let ok = match (p.dns_class, rtype(p)) {
                (DNSClass::NONE, RecordType::ANY) if in_use => return ResponseCode::YXDomain,
                (DNSClass::NONE, RecordType::ANY) => true,
                (DNSClass::NONE, _) if set.is_some() => return ResponseCode::YXRRSet,
                (DNSClass::NONE, _) => true,
                (DNSClass::IN, _) => set.is_some_and(|s| s.contains(&data(p))),
                other => panic!("unexpected prerequisite {other:?}"),
            };
            if !ok {
                return ResponseCode::NXRRSet;
            }
        }
        for u in &m.authorities {
            let key = (u.name.to_ascii(), rtype(u));
            match u.dns_class {
                DNSClass::IN => {
                    z.entry(key).or_default().insert(data(u));
                }
                DNSClass::ANY => {
                    z.remove(&key);
                }
                DNSClass::NONE => {
                    if let Some(set) = z.get_mut(&key) {
                        set.remove(&data(u));
                        if set.is_empty() {
                            z.remove(&key);
                        }
                    }
                }
                other => panic!("unexpected update class {other:?}"),
            }
        }
        ResponseCode::NoError
    }
}

impl Updater for Zone {
    fn send(
        &self,
        update: Message,
    ) -> impl Future<Output = Result<ResponseCode, UpdateError>> + Send {
        let rcode = self.apply(&update);
        self.sent.lock().unwrap().push(update);
        std::future::ready(Ok(rcode))
    }
}

fn zones() -> Zones {
    Zones {
        forward: Name::from_ascii("vm.example.").unwrap(),
        reverse: vec![Name::from_ascii("18.198.in-addr.arpa.").unwrap()],
        ttl: 300,
    }
}

fn entry(name: &str, client: u8, last: u8) -> Entry {
    let fqdn = format!("{name}.vm.example");
    Entry {
        dhcid: crate::publish::dhcid::dhcid(&[1, 0x52, 0x54, 0, 0, 0, client], &fqdn),
        fqdn,
        addr: Ipv4Addr::new(198, 18, 0, last),
    }
}

fn run<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

const WEB: &str = "web.vm.example.";

#[test]
fn a_free_name_gets_address_dhcid_and_ptr() {
    let zone = Zone::default();
    let web = entry("web", 1, 10);
    assert_eq!(run(add(&zone, &zones(), &web)), Ok(Added::Published));
    assert_eq!(zone.get(WEB, RecordType::A), [vec![198, 18, 0, 10]].into());
    assert_eq!(zone.get(WEB, DHCID), [web.dhcid.clone()].into());
    assert_eq!(
        zone.get("10.0.18.198.in-addr.arpa.", RecordType::PTR),
        [WEB.as_bytes().to_vec()].into()
    );
    assert_eq!(zone.sent.lock().unwrap().len(), 2, "create, then PTR");
}

#[test]
fn a_second_hosts_guest_with_the_same_name_is_refused_and_changes_nothing() {
    let zone = Zone::default();
    let first = entry("web", 1, 10);
    let second = entry("web", 2, 99);
    run(add(&zone, &zones(), &first)).unwrap();
    assert_eq!(run(add(&zone, &zones(), &second)), Ok(Added::Conflict));
    assert_eq!(
        run(add(&zone, &zones(), &second)),
        Ok(Added::Conflict),
        "no flapping"
    );
    assert_eq!(zone.get(WEB, RecordType::A), [vec![198, 18, 0, 10]].into());
    assert_eq!(zone.get(WEB, DHCID), [first.dhcid].into());
    assert!(
        zone.get("99.0.18.198.in-addr.arpa.", RecordType::PTR)
            .is_empty()
    );
}

#[test]
fn an_administrators_record_is_left_alone() {
    let zone = Zone::default();
    zone.put(WEB, RecordType::A, vec![192, 0, 2, 1]);
    assert_eq!(
        run(add(&zone, &zones(), &entry("web", 1, 10))),
        Ok(Added::Conflict)
    );
    assert_eq!(zone.get(WEB, RecordType::A), [vec![192, 0, 2, 1]].into());
    assert!(zone.get(WEB, DHCID).is_empty());
}

#[test]
fn the_same_guest_at_a_new_address_takes_its_name_along() {
    let zone = Zone::default();
    run(add(&zone, &zones(), &entry("web", 1, 10))).unwrap();
    let moved = entry("web", 1, 20);
    assert_eq!(run(add(&zone, &zones(), &moved)), Ok(Added::Published));
    assert_eq!(zone.get(WEB, RecordType::A), [vec![198, 18, 0, 20]].into());
    // Publishing again is idempotent (what a restart does).
    assert_eq!(run(add(&zone, &zones(), &moved)), Ok(Added::Published));
    assert_eq!(zone.get(WEB, RecordType::A), [vec![198, 18, 0, 20]].into());
}

#[test]
fn removal_takes_exactly_what_was_added() {
    let zone = Zone::default();
    let web = entry("web", 1, 10);
    run(add(&zone, &zones(), &web)).unwrap();
    zone.put(WEB, RecordType::TXT, b"admin's note".to_vec());
    run(remove(&zone, &zones(), &web)).unwrap();
    assert!(zone.get(WEB, RecordType::A).is_empty());
    assert!(zone.get(WEB, DHCID).is_empty());
    assert!(
        zone.get("10.0.18.198.in-addr.arpa.", RecordType::PTR)
            .is_empty()
    );
    assert_eq!(zone.get(WEB, RecordType::TXT).len(), 1, "not ours, stays");
    // Removing again changes nothing and is no error.
    run(remove(&zone, &zones(), &web)).unwrap();
}

#[test]
fn removing_an_old_address_keeps_the_guests_new_one_from_another_host() {
    let zone = Zone::default();
    let old = entry("web", 1, 10);
    run(add(&zone, &zones(), &old)).unwrap();
    let new = entry("web", 1, 20); // the same guest, now on another hypervisor
    run(add(&zone, &zones(), &new)).unwrap();
    run(remove(&zone, &zones(), &old)).unwrap();
    assert_eq!(zone.get(WEB, RecordType::A), [vec![198, 18, 0, 20]].into());
    assert_eq!(
        zone.get(WEB, DHCID),
        [new.dhcid].into(),
        "the DHCID stays with it"
    );
}

#[test]
fn removal_of_a_name_another_client_now_holds_touches_nothing() {
    let zone = Zone::default();
    let mine = entry("web", 1, 10);
    let theirs = entry("web", 2, 11);
    run(add(&zone, &zones(), &theirs)).unwrap();
    run(remove(&zone, &zones(), &mine)).unwrap();
    assert_eq!(zone.get(WEB, RecordType::A), [vec![198, 18, 0, 11]].into());
    assert_eq!(zone.get(WEB, DHCID), [theirs.dhcid].into());
}

#[test]
fn an_address_outside_the_reverse_zones_gets_no_ptr() {
    let zone = Zone::default();
    let mut far = entry("far", 3, 1);
    far.addr = Ipv4Addr::new(10, 0, 0, 1);
    assert_eq!(run(add(&zone, &zones(), &far)), Ok(Added::Published));
    assert_eq!(zone.sent.lock().unwrap().len(), 1);
}

#[test]
fn a_refusal_is_an_error_that_names_the_cause() {
    struct Refusing;
    impl Updater for Refusing {
        fn send(
            &self,
            _: Message,
        ) -> impl Future<Output = Result<ResponseCode, UpdateError>> + Send {
            std::future::ready(Ok(ResponseCode::NotAuth))
        }
    }
    let err = run(add(&Refusing, &zones(), &entry("web", 1, 10))).unwrap_err();
    assert!(matches!(err, UpdateError::Rejected(_)), "{err:?}");
    assert!(err.to_string().contains("with this key"), "{err}");
}
