//! What an upstream query carries beyond its random source port and ID, so that a forger who
//! cannot see it must guess more, and the check of every reply against it:
//!
//! - **DNS cookies** (RFC 7873, with RFC 9018's server cookies): every query with EDNS carries
//!   a COOKIE option with our 8-byte client cookie for that server (SipHash-2-4 of the
//!   server's address under a secret drawn at start) and the server cookie it last gave us. A
//!   reply whose COOKIE names another client cookie is dropped, and the wait goes on. Once a
//!   server has returned our cookie, a UDP reply from it without one is dropped too (RFC 7873
//!   5.3); a server that never returns one (dnsmasq, NSD and Unbound as Debian ships them) is
//!   asked exactly as before. BADCOOKIE is retried once with the server cookie it carries,
//!   then over TCP. The guest's own COOKIE is never forwarded (`wire::upstream_query`).
//! - **0x20** (draft-vixie-dnsext-dns0x20): the question name goes out over UDP with each
//!   letter's case drawn at random, and a reply must spell it exactly so; one in another case
//!   is dropped, and the wait goes on. The reply passed on is respelled as the client wrote
//!   the name (`wire::respell`).
//! - **Settled over TCP, never guessed**: a server may not keep case, or may stop returning
//!   cookies (replaced, reconfigured). Its replies then look like forgeries, so a UDP attempt
//!   that got only replies failing the case or cookie check is asked again over TCP, which an
//!   off-path forger cannot answer. If the TCP reply fails the same way, that check is turned
//!   off for that server (`DOWNGRADE_HOLD`, with the evidence, shown by `check` and
//!   `explain`) and the TCP reply is the answer; if it passes, what was dropped were forgeries.
//!   A reply that passes the port and ID checks (what a forger who learned both can send) can
//!   therefore never turn a check off. Only a server without TCP gets one re-send over UDP
//!   without the failed check, for that query alone.
//!
//! This module owns the per-server state (`Guard`, held by `Upstream`), the building of the
//! upstream query (`Guard::prepare`), the check of each datagram (`Expect::check`, applied by
//! `port_pool` to everything that reaches a query's port, and by the scripted exchanger), and
//! the exchange over the `Exchanger` seam with the retries above (`ask`).

use crate::dns::transport::{Exchange, ExchangeError, Exchanger, Protocol};
use crate::dns::upstream::Upstream;
use crate::dns::wire::{self, HEADER_LEN, Query, ReplyInfo, ReplyMismatch, WireName};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use thiserror::Error;

/// How long a check turned off for a server (it was shown over TCP not to keep case, or to
/// have stopped returning cookies) stays off before it is tried again.
pub(crate) const DOWNGRADE_HOLD: Duration = Duration::from_secs(3600);
/// Longest server cookie (RFC 7873 4).
const SERVER_COOKIE_MAX: usize = 32;

// ---- the client cookie ------------------------------------------------------------------------

/// SipHash-2-4 (Aumasson and Bernstein; RFC 9018 uses it for server cookies) of `data` under
/// `key`, by the `siphasher` crate.
pub(crate) fn siphash24(key: &[u8; 16], data: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = siphasher::sip::SipHasher24::new_with_key(key);
    h.write(data);
    h.finish()
}

/// The secret client cookies are made from: drawn once per process.
fn secret() -> &'static [u8; 16] {
    static SECRET: OnceLock<[u8; 16]> = OnceLock::new();
    SECRET.get_or_init(rand::random)
}

/// Our client cookie for `server` (RFC 7873 4.1, B.1): a keyed hash of its address, the same
/// for every query to it while the process lives, different for every server, and nothing a
/// forger can compute.
pub(crate) fn client_cookie(server: SocketAddr) -> [u8; 8] {
    let mut data = [0u8; 18];
    let len = match server.ip() {
        std::net::IpAddr::V4(ip) => {
            data[..4].copy_from_slice(&ip.octets());
            4
        }
        std::net::IpAddr::V6(ip) => {
            data[..16].copy_from_slice(&ip.octets());
            16
        }
    };
    data[len..len + 2].copy_from_slice(&server.port().to_be_bytes());
    siphash24(secret(), &data[..len + 2]).to_be_bytes()
}

// ---- what a reply must match ------------------------------------------------------------------

/// What a reply to one upstream query must match, beyond coming from the server's address and
/// to the query's port.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    /// The question (name lower-cased, type, class, where it ends).
    pub q: Query,
    pub(crate) id: u16,
    /// The name as it went out (in random case under 0x20).
    pub(crate) name: WireName,
    /// The name must come back spelled exactly as it went out.
    pub(crate) case: bool,
    /// The client cookie the query carried.
    pub(crate) cookie: Option<[u8; 8]>,
    /// A reply whose COOKIE names another client cookie, or is malformed, is dropped.
    pub(crate) cookie_checked: bool,
    /// A reply without a COOKIE is dropped (the server has returned ours before).
    pub(crate) cookie_required: bool,
    /// The name went out with capitals and small letters both: a reply that keeps it shows
    /// that the server keeps case.
    pub(crate) proves_case: bool,
}

impl Expect {
    /// RFC 5452's checks alone: the ID, and the question in any case.
    #[cfg(test)]
    pub(crate) fn plain(q: &Query, id: u16) -> Expect {
        Expect {
            q: *q,
            id,
            name: q.name,
            case: false,
            cookie: None,
            cookie_checked: false,
            cookie_required: false,
            proves_case: false,
        }
    }

    /// Whether `reply` answers the query: ID and question (`wire::read_reply`), then the
    /// cookie, then the case.
    pub fn check(&self, reply: &[u8]) -> Result<ReplyInfo, Rejection> {
        let info = wire::read_reply(reply, &self.q, self.id)?;
        if let (Some(ours), true) = (self.cookie, self.cookie_checked) {
            match info
                .opt
                .and_then(|o| wire::opt_option(reply, &o, wire::OPTION_COOKIE))
            {
                Some(c) if valid_cookie_len(c.len()) && c[..8] == ours => {}
                Some(_) => return Err(Rejection::WrongCookie),
                None if self.cookie_required => return Err(Rejection::NoCookie),
                None => {}
            }
        }
        // FORMERR and NOTIMP may come without the question: nothing to spell.
        if self.case && wire::qdcount(reply) == 1 && self.spelled(reply) != self.name.as_bytes() {
            return Err(Rejection::Case);
        }
        Ok(info)
    }

    /// The question name of `reply` as written (a reply that passed `read_reply`).
    fn spelled<'a>(&self, reply: &'a [u8]) -> &'a [u8] {
        &reply[HEADER_LEN..self.q.question_end - 4]
    }
}

/// A COOKIE option is a client cookie alone, or one with a server cookie of 8 to 32 bytes.
fn valid_cookie_len(len: usize) -> bool {
    len == 8 || (16..=8 + SERVER_COOKIE_MAX).contains(&len)
}

/// Why a datagram was not taken as the reply to a query.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Rejection {
    /// From another address or port than the server's.
    #[error("it comes from another address or port than the server's")]
    Stranger,
    /// Not an answer to the query (ID, question), or malformed.
    #[error("{0}")]
    Mismatch(#[from] ReplyMismatch),
    /// The question is spelled in another case than it was sent (0x20).
    #[error("the question is spelled in another case than it was sent (0x20)")]
    Case,
    /// Its COOKIE names another client cookie, or is malformed.
    #[error("its COOKIE names another client cookie, or is malformed")]
    WrongCookie,
    /// No COOKIE, from a server that returns ours.
    #[error("no COOKIE, from a server that returns ours")]
    NoCookie,
}

/// The datagrams dropped while one query waited, by why.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// From a stranger, with a wrong ID or question, or malformed.
    pub(crate) other: u16,
    pub(crate) case: u16,
    pub(crate) wrong_cookie: u16,
    pub(crate) no_cookie: u16,
}

impl Dropped {
    /// Counts one datagram dropped for `why`.
    pub fn note(&mut self, why: &Rejection) {
        let count = match why {
            Rejection::Stranger | Rejection::Mismatch(_) => &mut self.other,
            Rejection::Case => &mut self.case,
            Rejection::WrongCookie => &mut self.wrong_cookie,
            Rejection::NoCookie => &mut self.no_cookie,
        };
        *count = count.saturating_add(1);
    }

    pub(crate) fn total(&self) -> u32 {
        [self.other, self.case, self.wrong_cookie, self.no_cookie]
            .iter()
            .map(|&n| u32::from(n))
            .sum()
    }

    /// Replies that were right in everything the server alone could get wrong: the case, or
    /// a cookie it used to return. What TCP settles.
    fn look_alikes(&self) -> bool {
        self.case > 0 || self.no_cookie > 0
    }
}

/// ` (dropped: 2 in another case, 1 without its cookie)`, or nothing if nothing was dropped.
impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.total() == 0 {
            return Ok(());
        }
        let [other, case, wrong_cookie, no_cookie] =
            [self.other, self.case, self.wrong_cookie, self.no_cookie].map(u64::from);
        write!(
            f,
            " (dropped: {})",
            counts([other, case, wrong_cookie, no_cookie])
        )
    }
}

/// Counts of dropped datagrams (other, case, wrong cookie, no cookie) as text.
fn counts([other, case, wrong_cookie, no_cookie]: [u64; 4]) -> String {
    let parts = [
        (case, "in another case"),
        (no_cookie, "without its cookie"),
        (wrong_cookie, "with another client cookie"),
        (other, "from another source, or with another ID or question"),
    ];
    let text: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
    if text.is_empty() {
        "none".into()
    } else {
        text.join(", ")
    }
}

// ---- per-server state -------------------------------------------------------------------------

/// The server cookie a server last gave (RFC 7873 4.2), as bytes.
#[derive(Debug, Clone, Copy, Default)]
struct ServerCookie {
    len: u8,
    bytes: [u8; SERVER_COOKIE_MAX],
}

impl ServerCookie {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// A check turned off for a server until `DOWNGRADE_HOLD` has passed, with the evidence.
#[derive(Debug, Default)]
struct Hold {
    on: AtomicBool,
    since: Mutex<Option<(Instant, String)>>,
}

impl Hold {
    /// Whether the check is off now: a plain load while it is on (every query asks), the
    /// clock read only while it is off.
    fn active(&self) -> bool {
        self.on.load(Ordering::Relaxed) && self.active_at(Instant::now())
    }

    /// Whether the check is off at `now`.
    fn active_at(&self, now: Instant) -> bool {
        if !self.on.load(Ordering::Relaxed) {
            return false;
        }
        let mut since = self.since.lock().unwrap();
        match &*since {
            Some((at, _)) if now.saturating_duration_since(*at) < DOWNGRADE_HOLD => true,
            _ => {
                *since = None;
                self.on.store(false, Ordering::Relaxed);
                false
            }
        }
    }

    fn start(&self, now: Instant, why: String) {
        *self.since.lock().unwrap() = Some((now, why));
        self.on.store(true, Ordering::Relaxed);
    }

    fn describe(&self) -> Option<(Instant, String)> {
        self.since.lock().unwrap().clone()
    }
}

/// What the cookie of an accepted reply showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CookieSeen {
    /// The query carried none (no EDNS).
    NotSent,
    /// Ours came back.
    Echoed,
    Absent,
    /// Another client's, or malformed (over TCP, where it is not checked).
    Foreign,
}

/// What virtdns knows about one server's cookies and case, and the defences' counts.
#[derive(Debug)]
pub(crate) struct Guard {
    client_cookie: [u8; 8],
    server_cookie: Mutex<ServerCookie>,
    /// It returned our cookie: a UDP reply from it without one is dropped.
    returns_cookies: AtomicBool,
    /// It answered over TCP without a cookie after returning them: none required for now.
    cookies_relaxed: Hold,
    /// It answered over TCP in another case: no 0x20 for now.
    case_off: Hold,
    /// A reply kept a mixed-case name exactly.
    case_kept: AtomicBool,
    /// Datagrams dropped: other, case, wrong cookie, no cookie.
    dropped: [AtomicU64; 4],
}

impl Guard {
    pub(crate) fn new(server: SocketAddr) -> Guard {
        Guard {
            client_cookie: client_cookie(server),
            server_cookie: Mutex::default(),
            returns_cookies: AtomicBool::new(false),
            cookies_relaxed: Hold::default(),
            case_off: Hold::default(),
            case_kept: AtomicBool::new(false),
            dropped: Default::default(),
        }
    }

    #[cfg(test)]
    pub(crate) fn client_cookie(&self) -> [u8; 8] {
        self.client_cookie
    }

    /// Whether queries to it go out in random case.
    pub(crate) fn case_on(&self) -> bool {
        !self.case_off.active()
    }

    /// Whether queries to it go out in random case at `now`.
    #[cfg(test)]
    pub(crate) fn case_on_at(&self, now: Instant) -> bool {
        !self.case_off.active_at(now)
    }

    /// Whether a UDP reply from it must carry our cookie.
    pub(crate) fn requires_cookies(&self) -> bool {
        self.returns_cookies.load(Ordering::Relaxed) && !self.cookies_relaxed.active()
    }

    /// The upstream query for the client's question `q` (in `client`) over `protocol`: a
    /// random ID, our OPT with the COOKIE (if `with_edns`), the name in random case if `mix`;
    /// and what its reply must match. Unless `may_require`, no cookie is required of the
    /// reply (a re-send after TCP could not settle the cookie).
    pub(crate) fn prepare(
        &self,
        client: &[u8],
        q: &Query,
        protocol: Protocol,
        with_edns: bool,
        mix: bool,
        may_require: bool,
    ) -> (Vec<u8>, Expect) {
        let udp = protocol == Protocol::Udp;
        let id: u16 = rand::random();
        let mut cookie = [0u8; 8 + SERVER_COOKIE_MAX];
        let mut cookie_len = 0;
        if with_edns {
            cookie[..8].copy_from_slice(&self.client_cookie);
            let server = *self.server_cookie.lock().unwrap();
            cookie[8..8 + server.as_bytes().len()].copy_from_slice(server.as_bytes());
            cookie_len = 8 + server.as_bytes().len();
        }
        let mut query = wire::upstream_query_with(client, q, id, with_edns, &cookie[..cookie_len]);
        let name = HEADER_LEN..q.question_end - 4;
        let (letters, upper) = if mix {
            wire::randomize_case(&mut query[name.clone()], rand::random)
        } else {
            (0, 0)
        };
        let expect = Expect {
            q: *q,
            id,
            name: WireName::verbatim(&query[name]).expect("a name read from a query"),
            case: udp && mix,
            cookie: with_edns.then_some(self.client_cookie),
            cookie_checked: udp,
            cookie_required: udp && with_edns && may_require && self.requires_cookies(),
            proves_case: upper > 0 && upper < letters,
        };
        (query, expect)
    }

    /// Learns from the cookie of an accepted reply: the server cookie to send back, and that
    /// the server returns cookies.
    pub(crate) fn learn_cookie(
        &self,
        reply: &[u8],
        info: &ReplyInfo,
        expect: &Expect,
    ) -> CookieSeen {
        let Some(ours) = expect.cookie else {
            return CookieSeen::NotSent;
        };
        let option = info
            .opt
            .and_then(|o| wire::opt_option(reply, &o, wire::OPTION_COOKIE));
        match option {
            None => CookieSeen::Absent,
            Some(c) if valid_cookie_len(c.len()) && c[..8] == ours => {
                let server = &c[8..];
                let mut kept = self.server_cookie.lock().unwrap();
                if !server.is_empty() && kept.as_bytes() != server {
                    kept.len = server.len() as u8;
                    kept.bytes[..server.len()].copy_from_slice(server);
                }
                drop(kept);
                if !self.returns_cookies.load(Ordering::Relaxed) {
                    self.returns_cookies.store(true, Ordering::Relaxed);
                }
                CookieSeen::Echoed
            }
            Some(_) => CookieSeen::Foreign,
        }
    }

    /// Counts what a query's wait dropped.
    fn count(&self, d: &Dropped) {
        for (counter, n) in self
            .dropped
            .iter()
            .zip([d.other, d.case, d.wrong_cookie, d.no_cookie])
        {
            if n > 0 {
                counter.fetch_add(u64::from(n), Ordering::Relaxed);
            }
        }
    }

    /// Every datagram dropped so far, by why.
    pub(crate) fn dropped(&self) -> [u64; 4] {
        self.dropped.each_ref().map(|c| c.load(Ordering::Relaxed))
    }

    /// A reply kept the random case of its name.
    fn note_case_kept(&self, expect: &Expect) {
        if expect.proves_case && !self.case_kept.load(Ordering::Relaxed) {
            self.case_kept.store(true, Ordering::Relaxed);
        }
    }

    /// A UDP attempt got only replies failing the case or cookie check (`dropped`); `reply`
    /// came over TCP for the same question, sent as `expect` says. Where it fails the same
    /// way, the server is like that and the check is turned off for it; where it passes, what
    /// UDP brought were forgeries.
    fn settle(
        &self,
        server: SocketAddr,
        dropped: &Dropped,
        expect: &Expect,
        reply: &[u8],
        cookie: CookieSeen,
    ) {
        let now = Instant::now();
        if dropped.case > 0 && wire::qdcount(reply) == 1 {
            let got = expect.spelled(reply);
            if got != expect.name.as_bytes() {
                let why = format!(
                    "asked {}, it answered {} over UDP and over TCP",
                    spelling(expect.name.as_bytes()),
                    spelling(got)
                );
                tracing::warn!(%server, %why, "upstream does not keep the case of names: 0x20 off for it");
                self.case_off.start(now, why);
            } else {
                self.note_case_kept(expect);
                tracing::warn!(%server, dropped = dropped.case, "replies in another case were forged: the server keeps case over TCP");
            }
        }
        if dropped.no_cookie > 0 {
            match cookie {
                CookieSeen::Echoed => {
                    tracing::warn!(%server, dropped = dropped.no_cookie, "replies without its cookie were forged: the server returns it over TCP")
                }
                _ => {
                    let why = "it answered without a cookie over UDP and over TCP".to_string();
                    tracing::warn!(%server, %why, "upstream stopped returning cookies: none required of it for now");
                    self.returns_cookies.store(false, Ordering::Relaxed);
                    self.cookies_relaxed.start(now, why);
                }
            }
        }
    }
}

/// A wire name as text, case kept.
fn spelling(wire: &[u8]) -> String {
    WireName::verbatim(wire).map_or_else(String::new, |n| format!("{n:?}"))
}

/// `cookies: returned, required over UDP; 0x20: on, case kept` and the drops, for the
/// per-server line of `check` and `explain`.
impl fmt::Display for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let now = Instant::now();
        let held = |hold: &Hold| {
            hold.describe().map(|(at, why)| {
                let age = now.saturating_duration_since(at);
                format!(
                    "{why}, {:.0} s ago; tried again in {:.0} s",
                    age.as_secs_f64(),
                    DOWNGRADE_HOLD.saturating_sub(age).as_secs_f64()
                )
            })
        };
        f.write_str("cookies: ")?;
        match held(&self.cookies_relaxed) {
            Some(why) if self.cookies_relaxed.active_at(now) => write!(f, "not required ({why})")?,
            _ if self.returns_cookies.load(Ordering::Relaxed) => {
                f.write_str("returned, required over UDP")?
            }
            _ => f.write_str("none returned")?,
        }
        f.write_str("; 0x20: ")?;
        match held(&self.case_off) {
            Some(why) if self.case_off.active_at(now) => write!(f, "off ({why})")?,
            _ if self.case_kept.load(Ordering::Relaxed) => f.write_str("on, case kept")?,
            _ => f.write_str("on, case not seen kept yet")?,
        }
        write!(f, "; replies dropped: {}", counts(self.dropped()))
    }
}

// ---- one question to one server ---------------------------------------------------------------

/// Asks `server` the client's question `q` (in `client`) over `protocol`, waiting up to
/// `timeout` per exchange, with cookies and 0x20 as this server allows (`Asking`). The reply
/// is respelled as the client wrote its name.
pub(crate) async fn ask<X: Exchanger>(
    x: &X,
    server: &Upstream,
    client: &[u8],
    q: &Query,
    protocol: Protocol,
    with_edns: bool,
    timeout: Duration,
) -> Result<Exchange, ExchangeError> {
    let asking = Asking::new(protocol, with_edns);
    ask_on(x, server, client, q, asking, timeout).await
}

/// `ask`, going on from where `asking` stands.
pub(crate) async fn ask_on<X: Exchanger>(
    x: &X,
    server: &Upstream,
    client: &[u8],
    q: &Query,
    mut asking: Asking,
    timeout: Duration,
) -> Result<Exchange, ExchangeError> {
    loop {
        let (query, expect, mix) = asking.prepare(server, client, q);
        let result = x
            .exchange(server.addr, query, &expect, asking.protocol, timeout)
            .await;
        if let Some(done) = asking.conclude(server, client, q, &expect, mix, result) {
            return done;
        }
    }
}

/// Where one question to one server stands between its exchanges, with the retries the
/// checks call for: BADCOOKIE is retried once with the new server cookie, then over TCP; a
/// UDP attempt that got only look-alikes (right but for the case or a missing cookie) is
/// settled over TCP, or re-sent once over UDP without that check when TCP cannot settle it.
/// Sans-I/O: `ask_on` drives it over the `Exchanger`; a first UDP exchange may also be
/// started outside any task and its end concluded by whoever is told of it (`dns::forward`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asking {
    protocol: Protocol,
    with_edns: bool,
    /// Set while a TCP exchange settles what a UDP attempt's look-alikes showed.
    settling: Option<Dropped>,
    /// The checks left out of one last UDP re-send, when TCP could not settle them.
    relaxed: Option<Dropped>,
    bad_cookies: u8,
}

impl Asking {
    pub(crate) fn new(protocol: Protocol, with_edns: bool) -> Asking {
        Asking {
            protocol,
            with_edns,
            settling: None,
            relaxed: None,
            bad_cookies: 0,
        }
    }

    /// The next exchange's query, what its reply must match, and whether its name went out
    /// in mixed case.
    pub(crate) fn prepare(
        &self,
        server: &Upstream,
        client: &[u8],
        q: &Query,
    ) -> (Vec<u8>, Expect, bool) {
        let guard = &server.guard;
        let mix = match self.protocol {
            Protocol::Udp => self.relaxed.is_none_or(|d| d.case == 0) && guard.case_on(),
            Protocol::Tcp => self.settling.is_some_and(|d| d.case > 0),
        };
        let may_require = self.relaxed.is_none_or(|d| d.no_cookie == 0);
        let (query, expect) =
            guard.prepare(client, q, self.protocol, self.with_edns, mix, may_require);
        (query, expect, mix)
    }

    /// Takes the result of the exchange `prepare` made (`expect`, `mix`): the question's
    /// result, or None when it is to be asked again (see `protocol` for how).
    pub(crate) fn conclude(
        &mut self,
        server: &Upstream,
        client: &[u8],
        q: &Query,
        expect: &Expect,
        mix: bool,
        result: Result<Exchange, ExchangeError>,
    ) -> Option<Result<Exchange, ExchangeError>> {
        let guard = &server.guard;
        match &result {
            Ok(ex) => guard.count(&ex.dropped),
            Err(ExchangeError::Timeout(_, dropped)) => guard.count(dropped),
            Err(_) => {}
        }
        let mut ex = match result {
            Ok(ex) => ex,
            Err(ExchangeError::Timeout(_, dropped))
                if self.protocol == Protocol::Udp
                    && self.settling.is_none()
                    && self.relaxed.is_none()
                    && dropped.look_alikes() =>
            {
                if server.is_tcp_down() {
                    tracing::warn!(server = %server.addr, "only replies failing the case or cookie check{dropped}, and its TCP is down: asking once more over UDP without that check");
                    self.relaxed = Some(dropped);
                } else {
                    tracing::info!(server = %server.addr, "only replies failing the case or cookie check{dropped}: asking over TCP, which settles it");
                    self.settling = Some(dropped);
                    self.protocol = Protocol::Tcp;
                }
                return None;
            }
            Err(e) if self.settling.is_some() => {
                let dropped = self.settling.take().expect("checked");
                tracing::warn!(server = %server.addr, error = %e, "TCP cannot settle replies that failed the case or cookie check: asking once more over UDP without that check");
                self.relaxed = Some(dropped);
                self.protocol = Protocol::Udp;
                return None;
            }
            Err(e) => return Some(Err(e)),
        };
        let cookie = guard.learn_cookie(&ex.reply, &ex.info, expect);
        if let Some(dropped) = self.settling.take() {
            guard.settle(server.addr, &dropped, expect, &ex.reply, cookie);
        }
        if cookie == CookieSeen::Echoed
            && wire::extended_rcode(&ex.reply, &ex.info) == wire::BADCOOKIE
            && self.bad_cookies < 2
        {
            // Once more with the server cookie it just gave, then over TCP (RFC 7873 5.3).
            self.bad_cookies += 1;
            if self.bad_cookies == 2 {
                self.protocol = Protocol::Tcp;
            }
            tracing::debug!(server = %server.addr, "BADCOOKIE: asking again with its new server cookie");
            return None;
        }
        if expect.case {
            guard.note_case_kept(expect);
        }
        if mix {
            let sent = expect.name.as_bytes();
            let theirs = &client[HEADER_LEN..q.question_end - 4];
            // Only a reply that read as whole can be here; a respelling stops short on none.
            let _ = wire::respell(&mut ex.reply, q.question_end, sent, theirs);
        }
        Some(Ok(ex))
    }
}

#[cfg(test)]
mod tests;
