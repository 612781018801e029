//! The walk's verdicts, and the forwarder against scripted upstreams on loopback.

use super::*;
use crate::dns::upstream::UpstreamPool;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;
use tokio::net::UdpSocket;

fn reply(code: u8, answers: u16, aa: bool, ra: bool) -> (Vec<u8>, wire::ReplyInfo) {
    let mut p = vec![0u8; 12];
    p[2] = 0x80 | if aa { 0x04 } else { 0 };
    p[3] = code | if ra { 0x80 } else { 0 };
    p[6..8].copy_from_slice(&answers.to_be_bytes());
    let info = wire::ReplyInfo {
        rcode: code,
        answers,
        ttl_offsets: Vec::new(),
        cache_ttl: None,
        opt: None,
    };
    (p, info)
}

fn verdict_of(r: (Vec<u8>, wire::ReplyInfo)) -> Verdict {
    verdict(&r.0, &r.1)
}

#[test]
fn verdicts_follow_glibc() {
    assert_eq!(
        verdict_of(reply(rcode::REFUSED, 0, false, false)),
        Verdict::Next("REFUSED")
    );
    assert_eq!(
        verdict_of(reply(rcode::SERVFAIL, 0, false, true)),
        Verdict::Next("SERVFAIL")
    );
    assert_eq!(
        verdict_of(reply(rcode::NOTIMP, 0, false, true)),
        Verdict::Next("NOTIMP")
    );
    assert!(matches!(
        verdict_of(reply(rcode::NOERROR, 0, false, false)),
        Verdict::Next(_)
    ));
    assert_eq!(
        verdict_of(reply(rcode::NOERROR, 0, true, false)),
        Verdict::Final
    );
    assert_eq!(
        verdict_of(reply(rcode::NOERROR, 0, false, true)),
        Verdict::Final
    );
    assert_eq!(
        verdict_of(reply(rcode::NOERROR, 1, false, false)),
        Verdict::Final
    );
    assert_eq!(
        verdict_of(reply(rcode::NXDOMAIN, 0, false, false)),
        Verdict::Final
    );
    // A referral with glue is final for glibc.
    let (mut p, info) = reply(rcode::NOERROR, 0, false, false);
    p[10..12].copy_from_slice(&1u16.to_be_bytes());
    assert_eq!(verdict(&p, &info), Verdict::Final);
}

/// A loopback upstream that counts queries and answers each with one A record (TTL 60)
/// after `delay`, or with `code` and no records.
async fn scripted_upstream(delay: Duration, code: u8) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        let socket = Arc::new(socket);
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            let query = buf[..n].to_vec();
            let socket = socket.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let q = wire::parse_query(&query).unwrap();
                let mut r = query[..q.question_end].to_vec();
                r[2] |= 0x80;
                r[3] = 0x80 | code;
                r[10..12].fill(0);
                if code == rcode::NOERROR {
                    r[6..8].copy_from_slice(&1u16.to_be_bytes());
                    r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
                }
                let _ = socket.send_to(&r, peer).await;
            });
        }
    });
    (addr, count)
}

fn forwarder(max_inflight: usize) -> (Arc<Forwarder>, UpstreamPool) {
    let pool = UpstreamPool::new((Duration::from_millis(200), Duration::from_secs(2)));
    (
        Arc::new(Forwarder::new(pool.clone(), 100, max_inflight)),
        pool,
    )
}

fn query(name: &str) -> (Vec<u8>, Query) {
    let bytes = wire::build_query(&wire::name_from_dotted(name).unwrap(), wire::TYPE_A, 1);
    let q = wire::parse_query(&bytes).unwrap();
    (bytes, q)
}

#[tokio::test]
async fn identical_concurrent_questions_share_one_upstream_query() {
    let (addr, count) = scripted_upstream(Duration::from_millis(100), rcode::NOERROR).await;
    let (fwd, pool) = forwarder(100);
    let servers = vec![pool.get(addr)];
    let (bytes, q) = query("same.example");
    let asks = (0..20).map(|_| {
        let (fwd, bytes, servers) = (fwd.clone(), bytes.clone(), servers.clone());
        tokio::spawn(async move {
            fwd.resolve(&bytes, &q, servers, WalkOptions::default())
                .await
        })
    });
    for a in asks.collect::<Vec<_>>() {
        assert_eq!(a.await.unwrap().unwrap().rcode(), rcode::NOERROR);
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "one upstream query for 20 identical questions"
    );
    // And the answer is now cached.
    assert!(fwd.cache().get(&CacheKey::of(&q)).is_some());
}

#[tokio::test]
async fn refused_moves_on_and_the_next_answer_is_final() {
    let (refusing, refused_count) = scripted_upstream(Duration::ZERO, rcode::REFUSED).await;
    let (answering, _) = scripted_upstream(Duration::ZERO, rcode::NOERROR).await;
    let (fwd, pool) = forwarder(100);
    let (bytes, q) = query("walk.example");
    let mut trace = Trace::on();
    let servers = [pool.get(refusing), pool.get(answering)];
    let answer = fwd
        .walk(&bytes, &q, &servers, WalkOptions::default(), &mut trace)
        .await
        .unwrap();
    assert_eq!(answer.rcode(), rcode::NOERROR);
    assert_eq!(refused_count.load(Ordering::SeqCst), 1);
    let text = trace.render();
    assert!(
        text.contains("REFUSED: next server") && text.contains("-> final"),
        "{text}"
    );
}

/// Walks `servers` for `name` A and expects an answer.
async fn walk_to_answer(fwd: &Forwarder, servers: &[Arc<Upstream>], name: &str) {
    let (bytes, q) = query(name);
    fwd.walk(
        &bytes,
        &q,
        servers,
        WalkOptions::default(),
        &mut Trace::off(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn silent_server_is_marked_down_and_skipped() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (answering, _) = scripted_upstream(Duration::ZERO, rcode::NOERROR).await;
    let (fwd, pool) = forwarder(100);
    let servers = [pool.get(silent.local_addr().unwrap()), pool.get(answering)];
    walk_to_answer(&fwd, &servers, "a.example").await;
    assert!(servers[0].is_down());
    let started = std::time::Instant::now();
    walk_to_answer(&fwd, &servers, "b.example").await;
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "down server skipped, not waited for"
    );
}

#[tokio::test]
async fn inflight_bound_answers_servfail_at_once() {
    let (addr, count) = scripted_upstream(Duration::from_millis(300), rcode::NOERROR).await;
    let (fwd, pool) = forwarder(1);
    let servers = vec![pool.get(addr)];
    let (b1, q1) = query("one.example");
    let (b2, q2) = query("two.example");
    let f = fwd.clone();
    let s = servers.clone();
    let first = tokio::spawn(async move { f.resolve(&b1, &q1, s, WalkOptions::default()).await });
    while count.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let started = std::time::Instant::now();
    let second = fwd.resolve(&b2, &q2, servers, WalkOptions::default()).await;
    assert_eq!(second.unwrap_err(), rcode::SERVFAIL);
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "not queued behind the first"
    );
    assert!(first.await.unwrap().is_ok());
}
