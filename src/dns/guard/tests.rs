//! Cookies and 0x20 driven through the `Exchanger` seam: scripted servers that return cookies,
//! ask for them (BADCOOKIE) or lower-case names, and a forger who knows each query's port and
//! ID and sends its answer (192.0.2.66) ahead of the server's. Every datagram goes through the
//! query's `Expect` as on the network; no socket is opened and nothing sleeps.

use super::*;
use crate::dns::transport::script::*;
use crate::dns::upstream::UpstreamPool;
use std::sync::Arc;

const TIMEOUT: Duration = Duration::from_millis(400);
/// 33 letters: a forger who does not know the case guesses it with odds 2^-33.
const LONG: &str = "AbcdefghijklmnopqrstuvwxyZ.example";
const SERVER_COOKIE: [u8; 16] = *b"server-cookie-01";

struct Lab {
    script: Script,
    server: Arc<Upstream>,
}

impl Lab {
    /// One server, 10.0.0.1, answering every name with 192.0.2.1.
    fn new(manner: Manner) -> Lab {
        let pool = UpstreamPool::new((Duration::from_millis(200), Duration::from_secs(2)));
        let server = pool.get(SocketAddr::from(([10, 0, 0, 1], 53)));
        let script = Script::default();
        script.set(server.addr, "*", answer(1));
        script.set_manner(server.addr, manner);
        Lab { script, server }
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    async fn ask(&self, name: &str) -> Result<Exchange, ExchangeError> {
        let (bytes, q) = client_query(name, None);
        self.ask_with(&bytes, &q).await
    }

    async fn ask_with(&self, bytes: &[u8], q: &Query) -> Result<Exchange, ExchangeError> {
        ask(
            &self.script,
            &self.server,
            bytes,
            q,
            Protocol::Udp,
            true,
            TIMEOUT,
        )
        .await
    }

    /// The queries sent so far, in order.
    fn sent(&self) -> Vec<(Protocol, Vec<u8>)> {
        self.script.sent_to(self.addr())
    }
}

/// A client query for `name` spelled as given, A, with an OPT carrying `cookie` if given.
fn client_query(name: &str, cookie: Option<&[u8]>) -> (Vec<u8>, Query) {
    let mut p = vec![0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.extend_from_slice(&[0, 0, 1, 0, 1]);
    if let Some(cookie) = cookie {
        wire::push_opt_with(&mut p, false, 0, Some((wire::OPTION_COOKIE, cookie)));
    }
    let q = wire::parse_query(&p).unwrap();
    (p, q)
}

/// The last octet of the reply's A record.
fn octet(ex: &Exchange) -> u8 {
    let m = hickory_proto::op::Message::from_vec(&ex.reply).unwrap();
    match m.answers[0].data {
        hickory_proto::rr::RData::A(a) => a.0.octets()[3],
        ref other => panic!("not an A record: {other:?}"),
    }
}

/// The COOKIE option an upstream query carried.
fn cookie_of(query: &[u8]) -> Option<Vec<u8>> {
    let q = wire::parse_query(query).unwrap();
    let opt = wire::OptSpan {
        start: q.question_end,
        end: query.len(),
        edns: q.edns?,
    };
    wire::opt_option(query, &opt, wire::OPTION_COOKIE).map(<[u8]>::to_vec)
}

/// The question name of a message as spelled.
fn spelled(p: &[u8]) -> Vec<u8> {
    let end = wire::skip_name(p, HEADER_LEN).unwrap();
    p[HEADER_LEN..end].to_vec()
}

fn lowercase(mut name: Vec<u8>) -> Vec<u8> {
    name.make_ascii_lowercase();
    name
}

// ---- cookies ----------------------------------------------------------------------------------

#[test]
fn siphash_gives_the_reference_output_and_cookies_differ_per_server() {
    // The SipHash paper's test vector: key 00..0f, message 00..0e.
    let key: [u8; 16] = std::array::from_fn(|i| i as u8);
    let message: Vec<u8> = (0..15).collect();
    assert_eq!(siphash24(&key, &message), 0xa129_ca61_49be_45e5);
    let a = client_cookie("192.0.2.1:53".parse().unwrap());
    assert_eq!(a, client_cookie("192.0.2.1:53".parse().unwrap()), "stable");
    assert_ne!(a, client_cookie("192.0.2.2:53".parse().unwrap()));
    assert_ne!(a, client_cookie("192.0.2.1:5353".parse().unwrap()));
    assert_ne!(a, client_cookie("[2001:db8::1]:53".parse().unwrap()));
}

#[tokio::test]
async fn our_cookie_goes_out_and_the_servers_comes_back() {
    let lab = Lab::new(Manner {
        cookie: Some(SERVER_COOKIE),
        ..Manner::default()
    });
    assert_eq!(octet(&lab.ask("a.example").await.unwrap()), 1);
    assert_eq!(octet(&lab.ask("b.example").await.unwrap()), 1);
    let sent = lab.sent();
    let ours = lab.server.guard.client_cookie();
    assert_eq!(
        cookie_of(&sent[0].1).unwrap(),
        ours,
        "the client cookie alone"
    );
    let mut echoed = ours.to_vec();
    echoed.extend_from_slice(&SERVER_COOKIE);
    assert_eq!(cookie_of(&sent[1].1).unwrap(), echoed, "then the server's");
    assert!(lab.server.guard.requires_cookies());
    let line = lab.server.to_string();
    assert!(
        line.contains("cookies: returned, required over UDP"),
        "{line}"
    );
}

#[tokio::test]
async fn the_guests_cookie_is_not_forwarded() {
    let lab = Lab::new(Manner::default());
    let guests = [7u8; 24];
    let (bytes, q) = client_query("a.example", Some(&guests));
    lab.ask_with(&bytes, &q).await.unwrap();
    let sent = &lab.sent()[0].1;
    assert_eq!(
        cookie_of(sent).unwrap(),
        lab.server.guard.client_cookie(),
        "ours, not the guest's"
    );
}

#[tokio::test]
async fn a_reply_with_another_client_cookie_is_dropped_and_the_wait_goes_on() {
    for manner in [
        Manner::default(),
        Manner {
            cookie: Some(SERVER_COOKIE),
            ..Manner::default()
        },
    ] {
        let lab = Lab::new(manner);
        lab.script.forge(lab.addr(), &[Forgery::GuessedCookie]);
        let ex = lab.ask(LONG).await.unwrap();
        assert_eq!(octet(&ex), 1, "the server's answer, not the forger's");
        assert_eq!(ex.dropped.wrong_cookie, 1);
    }
}

#[tokio::test]
async fn once_a_server_returns_cookies_a_reply_without_one_is_dropped() {
    let lab = Lab::new(Manner {
        cookie: Some(SERVER_COOKIE),
        ..Manner::default()
    });
    lab.ask("learn.example").await.unwrap();
    // The forger even spells the name as it went out: only the cookie gives it away.
    lab.script.forge(lab.addr(), &[Forgery::RightCase]);
    let ex = lab.ask(LONG).await.unwrap();
    assert_eq!(octet(&ex), 1);
    assert_eq!(ex.dropped.no_cookie, 1);
    assert!(lab.server.to_string().contains("1 without its cookie"));
}

#[tokio::test]
async fn a_server_that_never_returns_cookies_is_asked_as_before() {
    let lab = Lab::new(Manner::default());
    for name in ["a.example", "b.example", "c.example"] {
        let ex = lab.ask(name).await.unwrap();
        assert_eq!((octet(&ex), ex.dropped.total()), (1, 0));
    }
    assert_eq!(lab.sent().len(), 3, "one query each, no retries");
    assert!(!lab.server.guard.requires_cookies());
    assert!(lab.server.to_string().contains("cookies: none returned"));
    // What is left against a forger who knows port and ID: the case, 2^-33 here. One who
    // guessed it would win against a server without cookies.
    lab.script.forge(lab.addr(), &[Forgery::RightCase]);
    assert_eq!(octet(&lab.ask(LONG).await.unwrap()), FORGED);
}

#[tokio::test]
async fn badcookie_is_asked_again_once_with_the_new_server_cookie() {
    let lab = Lab::new(Manner {
        cookie: Some(SERVER_COOKIE),
        badcookie: true,
        ..Manner::default()
    });
    let ex = lab.ask("a.example").await.unwrap();
    assert_eq!(octet(&ex), 1);
    let sent = lab.sent();
    assert_eq!(sent.len(), 2, "BADCOOKIE, then the answer");
    assert_eq!(sent[1].0, Protocol::Udp);
    assert_eq!(&cookie_of(&sent[1].1).unwrap()[8..], SERVER_COOKIE);
    // Known from then on: one query.
    lab.ask("b.example").await.unwrap();
    assert_eq!(lab.sent().len(), 3);
}

// ---- 0x20 -------------------------------------------------------------------------------------

#[tokio::test]
async fn names_go_out_in_random_case_and_come_back_as_the_client_spelled_them() {
    let lab = Lab::new(Manner::default());
    let (bytes, q) = client_query(LONG, None);
    let ex = lab.ask_with(&bytes, &q).await.unwrap();
    let sent = spelled(&lab.sent()[0].1);
    let theirs = spelled(&bytes);
    assert_eq!(lowercase(sent.clone()), lowercase(theirs.clone()));
    assert_ne!(
        sent, theirs,
        "random case (the client's spelling by chance: 2^-33)"
    );
    assert_eq!(
        spelled(&ex.reply),
        theirs,
        "respelled as the client wrote it"
    );
    assert!(lab.server.to_string().contains("0x20: on, case kept"));
    // Letters only: a name without any goes out as it is.
    let (bytes, q) = client_query("1.2.0.192", None);
    lab.ask_with(&bytes, &q).await.unwrap();
    assert_eq!(spelled(&lab.sent()[1].1), spelled(&bytes));
}

#[tokio::test]
async fn a_reply_in_another_case_is_dropped_and_the_wait_goes_on() {
    let lab = Lab::new(Manner::default());
    lab.script.forge(lab.addr(), &[Forgery::Lowercase]);
    for _ in 0..3 {
        let ex = lab.ask(LONG).await.unwrap();
        assert_eq!(octet(&ex), 1, "the server's answer, not the forger's");
        assert_eq!(ex.dropped.case, 1);
    }
    assert!(lab.server.guard.case_on(), "forgeries turn nothing off");
    assert!(lab.server.to_string().contains("3 in another case"));
}

#[tokio::test]
async fn a_server_that_does_not_keep_case_gets_0x20_off_once_tcp_shows_it() {
    let lab = Lab::new(Manner {
        lowercases: true,
        ..Manner::default()
    });
    // Its UDP reply looks like a forgery; TCP, which no off-path forger answers, shows the
    // server itself lower-cases: the TCP reply is the answer and 0x20 goes off for it.
    let ex = lab.ask(LONG).await.unwrap();
    assert_eq!(octet(&ex), 1);
    let sent = lab.sent();
    assert_eq!(
        sent.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        [Protocol::Udp, Protocol::Tcp]
    );
    assert!(!lab.server.guard.case_on());
    let line = lab.server.to_string();
    assert!(line.contains("0x20: off (asked "), "{line}");
    assert!(line.contains("over UDP and over TCP"), "{line}");
    // From then on: the client's spelling, checked in any case, one query.
    let (bytes, q) = client_query(LONG, None);
    let ex = lab.ask_with(&bytes, &q).await.unwrap();
    assert_eq!(octet(&ex), 1);
    let sent = lab.sent();
    assert_eq!(sent.len(), 3);
    assert_eq!(
        (sent[2].0, spelled(&sent[2].1)),
        (Protocol::Udp, spelled(&bytes))
    );
    // Back on after the hold.
    assert!(lab.server.guard.case_on_at(Instant::now() + DOWNGRADE_HOLD));
}

#[tokio::test]
async fn forgeries_in_another_case_while_the_server_is_slow_turn_nothing_off() {
    let lab = Lab::new(Manner::default());
    // The server's UDP reply does not come in time; the forger's do.
    lab.script
        .set(lab.addr(), "*", with(answer(1), |r| r.udp_silent = true));
    lab.script.forge(lab.addr(), &[Forgery::Lowercase]);
    let ex = lab.ask(LONG).await.unwrap();
    assert_eq!(octet(&ex), 1, "TCP's answer");
    assert!(lab.server.guard.case_on(), "TCP kept the case");
}

#[tokio::test]
async fn without_tcp_a_server_that_does_not_keep_case_still_answers() {
    let lab = Lab::new(Manner {
        lowercases: true,
        ..Manner::default()
    });
    lab.script
        .set(lab.addr(), "*", with(answer(1), |r| r.tcp_silent = true));
    let ex = lab.ask(LONG).await.unwrap();
    assert_eq!(octet(&ex), 1);
    let sent = lab.sent();
    assert_eq!(
        sent.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        [Protocol::Udp, Protocol::Tcp, Protocol::Udp]
    );
    let (client, _) = client_query(LONG, None);
    assert_eq!(
        spelled(&sent[2].1),
        spelled(&client),
        "the re-send in the client's spelling"
    );
    assert!(
        lab.server.guard.case_on(),
        "nothing was shown: 0x20 stays on"
    );
    // A server whose TCP is known to be down is not asked over TCP at all.
    lab.server.set_tcp_down();
    assert_eq!(octet(&lab.ask(LONG).await.unwrap()), 1);
    let sent = lab.sent();
    assert_eq!(
        sent[3..].iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        [Protocol::Udp, Protocol::Udp]
    );
}

#[tokio::test]
async fn a_server_that_stops_returning_cookies_is_settled_over_tcp() {
    let lab = Lab::new(Manner {
        cookie: Some(SERVER_COOKIE),
        ..Manner::default()
    });
    lab.ask("learn.example").await.unwrap();
    assert!(lab.server.guard.requires_cookies());

    // Forgeries without the cookie while its UDP reply is late: TCP returns the cookie.
    lab.script
        .set(lab.addr(), "*", with(answer(1), |r| r.udp_silent = true));
    lab.script.forge(lab.addr(), &[Forgery::RightCase]);
    assert_eq!(octet(&lab.ask(LONG).await.unwrap()), 1);
    assert!(lab.server.guard.requires_cookies());

    // Replaced by a server without cookies: its replies look forged until TCP shows it.
    lab.script.forge(lab.addr(), &[]);
    lab.script.set(lab.addr(), "*", answer(2));
    lab.script.set_manner(lab.addr(), Manner::default());
    let before = lab.sent().len();
    assert_eq!(octet(&lab.ask("new.example").await.unwrap()), 2);
    assert_eq!(lab.sent().len(), before + 2, "UDP, then TCP");
    assert!(!lab.server.guard.requires_cookies());
    let line = lab.server.to_string();
    assert!(
        line.contains("cookies: not required (it answered without"),
        "{line}"
    );
    assert_eq!(octet(&lab.ask("next.example").await.unwrap()), 2);
    assert_eq!(lab.sent().len(), before + 3, "one query again");
}

/// Through the walk: a server that lower-cases is not marked down, and its answer is passed
/// on in the client's spelling.
#[tokio::test]
async fn through_the_walk_a_server_that_lowercases_answers_and_stays_up() {
    use crate::dns::forward::Forwarder;
    use crate::dns::router::WalkOptions;
    use crate::dns::trace::Trace;
    let pool = UpstreamPool::new((Duration::from_millis(200), Duration::from_secs(2)));
    let fwd = Arc::new(Forwarder::with_exchanger(
        Script::default(),
        pool.clone(),
        100,
        100,
    ));
    let server = pool.get(SocketAddr::from(([10, 0, 0, 1], 53)));
    fwd.exchanger().set(server.addr, "", FULL);
    fwd.exchanger().set(server.addr, "*", answer(9));
    fwd.exchanger().set_manner(
        server.addr,
        Manner {
            lowercases: true,
            ..Manner::default()
        },
    );
    let servers = [server.clone()];
    fwd.learn_now(&servers).await;
    let (bytes, q) = client_query("Www.Example.Com", None);
    let outcome = fwd
        .walk(
            &bytes,
            &q,
            &servers,
            WalkOptions::default(),
            &mut Trace::off(),
        )
        .await;
    let answer = outcome.unwrap();
    let out = answer.render(&bytes, &q, 512, std::time::Instant::now());
    assert_eq!(spelled(&out), spelled(&bytes));
    assert_eq!(*out.last().unwrap(), 9);
    assert!(!server.is_down());
    assert!(!server.guard.case_on());
}
