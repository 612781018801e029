//! Hostile and broken clients: random, truncated and oversized packets over UDP and TCP, slow
//! and silent TCP clients. virtdns must keep answering valid queries throughout.

use crate::clients::dig;
use crate::clients::raw_query;
use crate::lab::Lab;
use crate::noise::Noise;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

pub fn survives_bad_input(lab: &mut Lab) {
    let outside = lab.nsd_outside(3);
    let rc = lab.resolv_conf("resolv.conf", &[outside], "");
    let virtdns = lab.virtdns(1, &rc, "");
    let mut noise = Noise(0x5eed_1234_abcd_ef01);

    let udp = UdpSocket::bind((lab.ip(9), 0)).unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    // 2000 random datagrams, 0..600 bytes; some start with a plausible header.
    for i in 0..2000 {
        let len = (noise.next() % 600) as usize;
        let mut p = noise.bytes(len);
        if i % 2 == 0 && p.len() > 12 {
            p[2] &= 0x7f; // a query, so it gets past the first check
            p[4..6].copy_from_slice(&[0, 1]);
        }
        let _ = udp.send_to(&p, virtdns);
    }
    // Every truncation of a valid query: FORMERR (or dropped when shorter than a header).
    let q = raw_query(0x4242, "www.example.com", 0);
    for cut in 0..q.len() {
        let _ = udp.send_to(&q[..cut], virtdns);
    }
    // An oversized datagram, and a compression loop in the question.
    let _ = udp.send_to(&noise.bytes(65_000), virtdns);
    let mut looped = q[..12].to_vec();
    looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    udp.send_to(&looped, virtdns).unwrap();
    drain(&udp);

    // A truncated question gets FORMERR with the client's ID.
    udp.send_to(&q[..20], virtdns).unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = udp.recv_from(&mut buf).expect("FORMERR reply");
    assert!(
        n >= 12 && buf[..2] == [0x42, 0x42] && buf[3] & 0x0f == 1,
        "FORMERR: {:?}",
        &buf[..n]
    );

    // An EDNS version we do not speak gets BADVERS (RFC 6891 6.1.3).
    let r = dig(virtdns)
        .opt("+edns=1")
        .opt("+noednsnegotiation")
        .query("www.example.com", "A");
    assert_eq!(r.status, "BADVERS", "{r:?}");

    // TCP: garbage with a length prefix, a length prefix that lies, a silent client, a slow one.
    let mut garbage = TcpStream::connect(virtdns).unwrap();
    let junk = noise.bytes(300);
    garbage
        .write_all(&(junk.len() as u16).to_be_bytes())
        .unwrap();
    garbage.write_all(&junk).unwrap();
    let mut liar = TcpStream::connect(virtdns).unwrap();
    liar.write_all(&[0xff, 0xff, 1, 2, 3]).unwrap();
    let silent: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(virtdns).unwrap())
        .collect();
    let mut slow = TcpStream::connect(virtdns).unwrap();
    slow.write_all(&[0]).unwrap();

    // Through all of that, valid queries are answered over UDP and TCP.
    for edns in crate::clients::ALL_EDNS {
        assert_eq!(
            dig(virtdns)
                .edns(edns)
                .query("www.example.com", "A")
                .answers,
            vec!["A 192.0.2.80"]
        );
    }
    assert_eq!(
        dig(virtdns)
            .opt("+tcp")
            .query("www.example.com", "A")
            .answers,
        vec!["A 192.0.2.80"]
    );
    assert!(
        lab.proc("virtdns-1").is_running(),
        "virtdns is still running"
    );
    drop((garbage, liar, silent, slow));
}

fn drain(udp: &UdpSocket) {
    udp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 65535];
    while udp.recv_from(&mut buf).is_ok() {}
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
}

/// Several queries written at once on one TCP connection are all answered (RFC 7766).
pub fn tcp_pipelining(lab: &mut Lab) {
    let outside = lab.nsd_outside(3);
    let rc = lab.resolv_conf("resolv.conf", &[outside], "");
    let virtdns = lab.virtdns(1, &rc, "");

    let mut stream = TcpStream::connect(virtdns).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut batch = Vec::new();
    for id in 1..=5u16 {
        let q = raw_query(id, "www.example.com", 0);
        batch.extend_from_slice(&(q.len() as u16).to_be_bytes());
        batch.extend_from_slice(&q);
    }
    stream.write_all(&batch).unwrap();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).unwrap();
        let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut reply).unwrap();
        assert_eq!(reply[3] & 0x0f, 0, "NOERROR");
        ids.push(u16::from_be_bytes([reply[0], reply[1]]));
    }
    ids.sort();
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
}
