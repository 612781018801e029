//! Lease churn with names, for bench/publish: as a DHCP relay on loopback it runs DORA
//! exchanges at a fixed offered rate, each client asking for a host name of its own (option
//! 12), and after every ACK asks the zone's primary for that name until it resolves, to
//! measure how long a name takes from ACK to resolvable there. perfdhcp cannot send a
//! different host name per client, which is what publishing needs.
//!
//!   churn SERVER:PORT --rate R --clients N --prefix P [--primary IP --zone Z] [--subnet A]
//!         [--bind ADDR:PORT]   (the relay's port, where replies arrive; Kea answers a relay
//!                               on its client port, -P)
//!
//! Prints one line of `key=value` figures: offered, acked, ack_per_s, drop_pct,
//! ack_mean_ms, ack_p99_ms, and with --primary: resolved, names_per_s (names made
//! resolvable per second, first ACK to last name), lag_p50_ms, lag_p99_ms, lag_max_ms. Polls for a name back off from 1 ms to 20 ms (the lag is exact to that).

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::Mutex;

/// How long an exchange may take before it counts as dropped.
const DROP_AFTER: Duration = Duration::from_secs(1);
/// How long a name may take to resolve before it counts as never.
const LAG_LIMIT: Duration = Duration::from_secs(20);

struct Args {
    server: SocketAddr,
    rate: u32,
    clients: u32,
    prefix: String,
    primary: Option<SocketAddr>,
    zone: String,
    subnet: Ipv4Addr,
    /// The relay's own address and port, where replies come back.
    bind: SocketAddr,
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let server = it
        .next()
        .expect("SERVER:PORT")
        .parse()
        .expect("server address");
    let mut a = Args {
        server,
        rate: 500,
        clients: 2000,
        prefix: "g".into(),
        primary: None,
        zone: "vm.example".into(),
        subnet: Ipv4Addr::new(198, 18, 0, 0),
        bind: "127.0.0.1:0".parse().unwrap(),
    };
    while let Some(flag) = it.next() {
        let value = it.next().expect("a value after each flag");
        match flag.as_str() {
            "--rate" => a.rate = value.parse().expect("rate"),
            "--clients" => a.clients = value.parse().expect("clients"),
            "--prefix" => a.prefix = value,
            "--primary" => a.primary = Some(format!("{value}:53").parse().expect("primary")),
            "--zone" => a.zone = value,
            "--subnet" => a.subnet = value.parse().expect("subnet"),
            "--bind" => a.bind = value.parse().expect("bind address"),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

#[derive(Default)]
struct Client {
    sent: Option<Instant>,
    requested: Option<Instant>,
    acked: Option<Instant>,
    resolved: Option<Instant>,
}

fn mac(i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x02, 0xc4, b[0], b[1], b[2], b[3]]
}

fn message(kind: MessageType, i: u32, args: &Args, name: &str) -> Message {
    let relay = Ipv4Addr::LOCALHOST;
    let mut m = Message::new(
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        relay,
        &mac(i),
    );
    m.set_xid(i);
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m.opts_mut().insert(DhcpOption::Hostname(name.into()));
    m.opts_mut()
        .insert(DhcpOption::SubnetSelection(args.subnet));
    m
}

fn encode(m: &Message) -> Vec<u8> {
    let mut buf = Vec::new();
    m.encode(&mut Encoder::new(&mut buf)).expect("encode");
    buf
}

/// A query for `name` A, as bytes, with ID `id`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(name.len() + 18);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[i - 1]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Arc::new(args());
    let socket = Arc::new(UdpSocket::bind(args.bind).await.expect("relay socket"));
    let clients: Arc<Mutex<HashMap<u32, Client>>> = Arc::default();
    let name = |i: u32| format!("{}{i}", args.prefix);

    // Replies: OFFER → REQUEST, ACK → note the time and start polling the primary.
    let receiver = {
        let (socket, clients, args) = (socket.clone(), clients.clone(), args.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok(n) = socket.recv(&mut buf).await else {
                    return;
                };
                let Ok(m) = Message::decode(&mut Decoder::new(&buf[..n])) else {
                    continue;
                };
                let i = m.xid();
                let now = Instant::now();
                match m.opts().msg_type() {
                    Some(MessageType::Offer) => {
                        let mut r = message(
                            MessageType::Request,
                            i,
                            &args,
                            &format!("{}{i}", args.prefix),
                        );
                        r.opts_mut()
                            .insert(DhcpOption::RequestedIpAddress(m.yiaddr()));
                        if let Some(DhcpOption::ServerIdentifier(id)) =
                            m.opts().get(OptionCode::ServerIdentifier)
                        {
                            r.opts_mut().insert(DhcpOption::ServerIdentifier(*id));
                        }
                        clients.lock().await.entry(i).or_default().requested = Some(now);
                        let _ = socket.send_to(&encode(&r), args.server).await;
                    }
                    Some(MessageType::Ack) => {
                        clients.lock().await.entry(i).or_default().acked = Some(now);
                        if let Some(primary) = args.primary {
                            let fqdn = format!("{}{i}.{}", args.prefix, args.zone);
                            tokio::spawn(poll(primary, fqdn, i, clients.clone()));
                        }
                    }
                    _ => {}
                }
            }
        })
    };

    // Open loop: one DISCOVER every 1/rate s.
    let start = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    for i in 0..args.clients {
        tokio::time::sleep_until((start + gap * i).into()).await;
        clients.lock().await.entry(i).or_default().sent = Some(Instant::now());
        let _ = socket
            .send_to(
                &encode(&message(MessageType::Discover, i, &args, &name(i))),
                args.server,
            )
            .await;
    }
    let sending = start.elapsed();
    tokio::time::sleep(DROP_AFTER).await;
    if args.primary.is_some() {
        let deadline = Instant::now() + LAG_LIMIT;
        while Instant::now() < deadline {
            let pending = clients
                .lock()
                .await
                .values()
                .filter(|c| c.acked.is_some() && c.resolved.is_none())
                .count();
            if pending == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    receiver.abort();

    let clients = clients.lock().await;
    let mut ack_ms: Vec<f64> = Vec::new();
    let mut lag_ms: Vec<f64> = Vec::new();
    let mut acked = 0;
    for c in clients.values() {
        let (Some(sent), Some(acked_at)) = (c.sent, c.acked) else {
            continue;
        };
        if acked_at - sent > DROP_AFTER {
            continue;
        }
        acked += 1;
        if let Some(req) = c.requested {
            ack_ms.push((acked_at - req).as_secs_f64() * 1e3);
        }
        if let Some(resolved) = c.resolved {
            lag_ms.push((resolved - acked_at).as_secs_f64() * 1e3);
        }
    }
    // Names made resolvable per second: from the first ACK to the last name resolving.
    let first_ack = clients.values().filter_map(|c| c.acked).min();
    let last_resolved = clients.values().filter_map(|c| c.resolved).max();
    let names_per_s = match (first_ack, last_resolved) {
        (Some(a), Some(r)) if r > a => lag_ms.len() as f64 / (r - a).as_secs_f64(),
        _ => f64::NAN,
    };
    ack_ms.sort_by(f64::total_cmp);
    lag_ms.sort_by(f64::total_cmp);
    let offered = args.clients;
    print!(
        "offered={offered} acked={acked} ack_per_s={:.0} drop_pct={:.2} ack_mean_ms={:.2} ack_p99_ms={:.2}",
        f64::from(acked) / sending.as_secs_f64(),
        100.0 * f64::from(offered - acked) / f64::from(offered),
        ack_ms.iter().sum::<f64>() / ack_ms.len().max(1) as f64,
        percentile(&ack_ms, 0.99),
    );
    if args.primary.is_some() {
        print!(
            " resolved={} names_per_s={:.0} lag_p50_ms={:.1} lag_p99_ms={:.1} lag_max_ms={:.1}",
            lag_ms.len(),
            names_per_s,
            percentile(&lag_ms, 0.50),
            percentile(&lag_ms, 0.99),
            lag_ms.last().copied().unwrap_or(f64::NAN),
        );
    }
    println!();
}

/// Asks `primary` for `fqdn` until it has an address, backing off from 1 ms to 20 ms.
async fn poll(
    primary: SocketAddr,
    fqdn: String,
    i: u32,
    clients: Arc<Mutex<HashMap<u32, Client>>>,
) {
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0").await else {
        return;
    };
    if socket.connect(primary).await.is_err() {
        return;
    }
    let mut wait = Duration::from_millis(1);
    let deadline = Instant::now() + LAG_LIMIT;
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        let id = rand::random::<u16>();
        if socket.send(&query(id, &fqdn)).await.is_err() {
            return;
        }
        let answered =
            tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut buf)).await;
        if let Ok(Ok(n)) = answered
            && n >= 12
            && buf[..2] == id.to_be_bytes()
            && buf[3] & 0x0f == 0
            && u16::from_be_bytes([buf[6], buf[7]]) > 0
        {
            clients.lock().await.entry(i).or_default().resolved = Some(Instant::now());
            return;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 3 / 2).min(Duration::from_millis(20));
    }
}
