//! Allocation rules of the pool, without any I/O.

use super::*;

const NOW: u64 = 1_000_000;

fn subnet() -> Subnet {
    "198.18.0.0/24".parse().unwrap()
}

fn pool(statics: &[StaticHost], max: usize) -> Pool {
    let range = Range {
        start: "198.18.0.10".parse().unwrap(),
        end: "198.18.0.13".parse().unwrap(),
        subnet: None,
    };
    Pool::new(
        vec![(range, subnet())],
        statics,
        "198.18.0.1".parse().unwrap(),
        max,
    )
}

fn client(n: u8) -> (ClientId, Mac) {
    let mac = Mac([2, 0, 0, 0, 0, n]);
    (client_id_from_mac(mac), mac)
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, last)
}

fn bind(p: &mut Pool, n: u8, addr: Ipv4Addr, name: Option<&str>) {
    let (id, mac) = client(n);
    p.bind(Lease {
        addr,
        client: id,
        mac,
        name: name.map(str::to_owned),
        expires: NOW + 600,
    });
}

#[test]
fn offers_distinct_addresses_and_holds_them() {
    let mut p = pool(&[], 100);
    let (a, am) = client(1);
    let (b, bm) = client(2);
    let first = p.offer(&a, am, None, subnet(), NOW).unwrap();
    assert_eq!(
        p.offer(&a, am, None, subnet(), NOW),
        Some(first),
        "same client, same offer"
    );
    let second = p.offer(&b, bm, None, subnet(), NOW).unwrap();
    assert_ne!(first, second);
}

#[test]
fn requested_address_is_honoured_only_when_free() {
    let mut p = pool(&[], 100);
    bind(&mut p, 1, ip(12), None);
    let (b, bm) = client(2);
    assert_ne!(p.offer(&b, bm, Some(ip(12)), subnet(), NOW), Some(ip(12)));
    let (c, cm) = client(3);
    assert_eq!(p.offer(&c, cm, Some(ip(13)), subnet(), NOW), Some(ip(13)));
    let (d, dm) = client(4);
    assert_ne!(
        p.offer(&d, dm, Some(ip(200)), subnet(), NOW),
        Some(ip(200)),
        "outside the range"
    );
}

#[test]
fn returning_client_gets_its_address_even_when_the_pool_is_exhausted() {
    let mut p = pool(&[], 100);
    bind(&mut p, 1, ip(11), None);
    for n in 10..20 {
        let (id, mac) = client(n);
        p.offer(&id, mac, None, subnet(), NOW);
    }
    let (late, late_mac) = client(99);
    assert_eq!(
        p.offer(&late, late_mac, None, subnet(), NOW),
        None,
        "exhausted"
    );
    let (a, am) = client(1);
    assert_eq!(p.offer(&a, am, None, subnet(), NOW), Some(ip(11)));
    // Offers lapse; then addresses come back.
    assert!(
        p.offer(&late, late_mac, None, subnet(), NOW + OFFER_HOLD_SECS + 1)
            .is_some()
    );
}

#[test]
fn static_addresses_are_reserved_for_their_mac() {
    let fixed = StaticHost {
        mac: Mac([2, 0, 0, 0, 0, 7]),
        address: Some(ip(10)),
        name: Some("fixed".parse().unwrap()),
    };
    let mut p = pool(std::slice::from_ref(&fixed), 100);
    let (other, om) = client(1);
    assert_ne!(
        p.offer(&other, om, Some(ip(10)), subnet(), NOW),
        Some(ip(10))
    );
    let (me, mm) = client(7);
    assert_eq!(p.offer(&me, mm, None, subnet(), NOW), Some(ip(10)));
    assert_eq!(
        p.names(NOW),
        vec![("fixed".to_string(), ip(10))],
        "published without a lease"
    );
}

#[test]
fn max_leases_caps_new_offers() {
    let mut p = pool(&[], 1);
    let (a, am) = client(1);
    let (b, bm) = client(2);
    assert!(p.offer(&a, am, None, subnet(), NOW).is_some());
    assert_eq!(p.offer(&b, bm, None, subnet(), NOW), None);
}

#[test]
fn release_decline_and_expiry() {
    let mut p = pool(&[], 100);
    bind(&mut p, 1, ip(10), Some("one"));
    bind(&mut p, 2, ip(11), Some("two"));
    bind(&mut p, 3, ip(12), None);
    assert_eq!(p.names(NOW).len(), 2);
    let (one, _) = client(1);
    assert!(
        p.release(&client(2).0, ip(10)).is_none(),
        "only the holder releases"
    );
    assert_eq!(p.release(&one, ip(10)).unwrap().addr, ip(10));
    let (three, _) = client(3);
    assert!(p.decline(&three, ip(12), NOW).is_some());
    let (four, four_mac) = client(4);
    assert_ne!(
        p.offer(&four, four_mac, Some(ip(12)), subnet(), NOW),
        Some(ip(12)),
        "quarantined"
    );
    let expired = p.expire(NOW + 601);
    assert_eq!(
        expired.iter().map(|l| l.addr).collect::<Vec<_>>(),
        vec![ip(11)]
    );
    assert!(p.names(NOW + 601).is_empty());
    assert_eq!(p.name_holder("two", NOW), None);
}

#[test]
fn binding_never_takes_another_clients_lease() {
    let mut p = pool(&[], 100);
    // A is offered .10 and never asks for it; the offer lapses and B binds .10.
    let (a, am) = client(1);
    assert_eq!(p.offer(&a, am, Some(ip(10)), subnet(), NOW), Some(ip(10)));
    let later = NOW + OFFER_HOLD_SECS + 1;
    bind(&mut p, 2, ip(10), None);
    // A then asks for another address (INIT-REBOOT): B's lease must survive.
    let replaced = p.bind(Lease {
        addr: ip(12),
        client: a.clone(),
        mac: am,
        name: None,
        expires: later + 600,
    });
    assert!(replaced.is_none(), "A held nothing bound");
    assert_eq!(p.held_by(&client(2).0, later), Some(ip(10)), "B keeps .10");
    let (c, cm) = client(3);
    assert_ne!(p.offer(&c, cm, Some(ip(10)), subnet(), later), Some(ip(10)));
}

#[test]
fn only_the_holder_can_decline() {
    let mut p = pool(&[], 100);
    bind(&mut p, 1, ip(10), None);
    assert_eq!(p.decline(&client(2).0, ip(10), NOW), None);
    assert_eq!(p.held_by(&client(1).0, NOW), Some(ip(10)));
}

#[test]
fn restore_takes_back_only_this_networks_addresses() {
    let fixed = StaticHost {
        mac: Mac([2, 0, 0, 0, 0, 9]),
        address: Some(ip(50)),
        name: None,
    };
    let mut p = pool(&[fixed], 16);
    let lease = |addr, n| Lease {
        addr,
        client: client(n).0,
        mac: client(n).1,
        name: None,
        expires: NOW + 60,
    };
    let other_network = Lease {
        addr: Ipv4Addr::new(192, 168, 122, 10),
        ..lease(ip(10), 3)
    };
    let left_out = p.restore(vec![lease(ip(10), 1), lease(ip(50), 9), other_network]);
    assert_eq!(left_out, 1);
    assert_eq!(p.held_by(&client(1).0, NOW), Some(ip(10)));
    assert_eq!(p.held_by(&client(9).0, NOW), Some(ip(50)));
    assert_eq!(p.held_by(&client(3).0, NOW), None);
}

#[test]
fn usage_counts_each_range_s_addresses_by_state() {
    // Range .10-.13; .11 is a static host's (not free, though it holds no lease).
    let fixed = StaticHost {
        mac: Mac([2, 0, 0, 0, 0, 7]),
        address: Some(ip(11)),
        name: None,
    };
    let mut p = pool(std::slice::from_ref(&fixed), 100);
    let usage = |p: &Pool, now| {
        let u = p.usage(now)[0];
        (u.bound, u.offered, u.declined, u.free)
    };
    assert_eq!(usage(&p, NOW), (0, 0, 0, 3));
    bind(&mut p, 1, ip(10), None);
    let (b, bm) = client(2);
    assert_eq!(p.offer(&b, bm, None, subnet(), NOW), Some(ip(12)));
    assert_eq!(usage(&p, NOW), (1, 1, 0, 1));
    // The static host takes its address: bound, and still not counted twice.
    bind(&mut p, 7, ip(11), None);
    assert_eq!(usage(&p, NOW), (2, 1, 0, 1));
    let (c, _) = client(1);
    assert!(p.decline(&c, ip(10), NOW).is_some());
    assert_eq!(usage(&p, NOW), (1, 1, 1, 1));
    // Later, offers and leases have lapsed: everything but the static address is free.
    let later = NOW + DECLINE_HOLD_SECS + 1;
    assert_eq!(usage(&p, later), (0, 0, 0, 3));
    assert_eq!(p.usage(NOW)[0].range.start, ip(10));
}
