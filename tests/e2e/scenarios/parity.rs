//! Host parity, one scenario per upstream layout: what glibc on the host gets from its
//! resolv.conf, what guests get through dnsmasq 2.90 run as libvirt runs it (`strict-order`),
//! and what they get through virtdns, over the same 14 questions (internal names, short names
//! through the search list, outside names, an internal view of an outside name, NXDOMAIN on
//! both sides, AAAA, MX, SRV). Guests must get exactly the host's answers; where a layout breaks
//! the host, the right answers are spelled out here and guests must get those. dnsmasq's
//! answers are recorded, and asserted only where field-facts.md documents them. Each scenario
//! records its row of README.md's table "What it fixes, shown by the tests";
//! `parity_readme_table`, run last, assembles the table and checks README.md against it
//! (`VIRTDNS_UPDATE_README=1` rewrites it instead).

use crate::clients::{Edns, Glibc, Reply, dig, getent, interface_index, stub_query};
use crate::lab::{Lab, Outcome, outcome, poll_until, run, skip};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// The README table's rows in order: (row, scenario recording it, the layout as the table
/// describes it).
const TABLE: &[(&str, &str, &str)] = &[
    (
        "vpn_full_resolver_first",
        "parity_vpn_full_resolver_first",
        "VPN's full resolver first (its own view of git.example.com: 10.8.3.4), home router's \
         full resolver second",
    ),
    (
        "refused_internal_first",
        "parity_refused_internal_first",
        "internal BIND first (REFUSED outside corp.example), NSD second",
    ),
    (
        "nxdomain_internal_first",
        "parity_nxdomain_internal_first",
        "internal NSD first, NXDOMAIN outside corp.example (a fake root), NSD second: **the host \
         fails**",
    ),
    (
        "servfail_first",
        "parity_servfail_first",
        "Unbound answering SERVFAIL first, NSD with every name second",
    ),
    (
        "notimp_first",
        "parity_notimp_first",
        "a server answering NOTIMP first, NSD with every name second",
    ),
    (
        "dead_first",
        "parity_dead_first",
        "a silent server first, NSD with every name second (`options timeout:1 attempts:1`)",
    ),
    (
        "vpn_down_then_up",
        "parity_vpn_down_then_up",
        "as `vpn_full_resolver_first`, the VPN's resolver started after virtdns",
    ),
    (
        "search_then_domain",
        "parity_search_and_domain",
        "servers of `nxdomain_internal_first`, `search other.example` then `domain corp.example` \
         (glibc uses the last line)",
    ),
    (
        "domain_then_search",
        "parity_search_and_domain",
        "servers of `nxdomain_internal_first`, `domain corp.example` then `search other.example`",
    ),
    (
        "link_local_ipv6_scope",
        "parity_link_local_ipv6_scope",
        "`nameserver fe80::53%vA` (NSD, corp.example only) first, NSD second",
    ),
];

const HEADING: &str = "## What it fixes, shown by the tests";
const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");

/// The rows measured in this run: (row, [layout, host, dnsmasq, virtdns]); the dnsmasq cell is
/// None where dnsmasq could not run (a user namespace).
type Row = (&'static str, [Option<String>; 4]);

static ROWS: Mutex<Vec<Row>> = Mutex::new(Vec::new());

fn record(row: &'static str, host: String, dnsmasq: Option<String>, virtdns: String) {
    let (_, _, layout) = TABLE
        .iter()
        .find(|(r, _, _)| *r == row)
        .expect("row listed in TABLE");
    let cells = [
        Some(format!("`{row}`: {layout}")),
        Some(host),
        dnsmasq,
        Some(virtdns),
    ];
    let shown: Vec<&str> = cells
        .iter()
        .map(|c| c.as_deref().unwrap_or("(dnsmasq not run)"))
        .collect();
    println!("    {}", shown.join(" | "));
    let mut rows = ROWS.lock().unwrap_or_else(|e| e.into_inner());
    rows.retain(|(r, _)| *r != row);
    rows.push((row, cells));
}

// ---------------------------------------------------------------------------------------------
// The questions and their right answers.

#[derive(Clone, Copy, Debug)]
enum Ask {
    /// `getent ahosts NAME`: glibc's addresses (A and AAAA); short names use the search list.
    Addrs(&'static str),
    /// One question as glibc's res_send asks it: the RCODE and the answer records.
    Dns(&'static str, &'static str),
}

impl Ask {
    fn name(&self) -> &'static str {
        match self {
            Ask::Addrs(n) | Ask::Dns(n, _) => n,
        }
    }
    fn label(&self) -> String {
        match self {
            Ask::Addrs(n) => n.to_string(),
            Ask::Dns(n, t) => format!("{n} {t}"),
        }
    }
    /// A name of the internal domain, or a short one (found through the search list).
    fn internal(&self) -> bool {
        let n = self.name();
        n.ends_with("corp.example") || !n.contains('.')
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    /// Sorted distinct addresses; empty when the name does not resolve.
    Addrs(Vec<String>),
    /// RCODE (TIMEOUT: no reply; FAIL: every server failed, glibc gives up) and the sorted
    /// "TYPE rdata" answer records.
    Dns(String, Vec<String>),
}

impl Answer {
    fn of(reply: &Reply) -> Answer {
        let mut records = reply.answers.clone();
        records.sort();
        Answer::Dns(reply.status.clone(), records)
    }
    fn noerror(records: &[&str]) -> Answer {
        let mut r: Vec<String> = records.iter().map(|s| s.to_string()).collect();
        r.sort();
        Answer::Dns("NOERROR".into(), r)
    }
    fn nxdomain() -> Answer {
        Answer::Dns("NXDOMAIN".into(), Vec::new())
    }
    fn addrs(a: &[&str]) -> Answer {
        let mut v: Vec<String> = a.iter().map(|s| s.to_string()).collect();
        v.sort();
        Answer::Addrs(v)
    }
    /// What kind of non-answer this is (NXDOMAIN counts), or None for data.
    fn failure(&self) -> Option<&str> {
        match self {
            Answer::Addrs(a) if a.is_empty() => Some("no address"),
            Answer::Addrs(_) => None,
            Answer::Dns(s, r) if s == "NOERROR" => r.is_empty().then_some("NODATA"),
            Answer::Dns(s, _) if s == "TIMEOUT" => Some("no reply"),
            Answer::Dns(s, _) if s == "FAIL" => Some("no usable reply"),
            Answer::Dns(s, _) => Some(s),
        }
    }
    /// Short text for the table: "192.0.2.44" for an A question, "NXDOMAIN", "no address".
    fn show(&self, ask: &Ask) -> String {
        if let Some(f) = self.failure() {
            return f.to_string();
        }
        match (self, ask) {
            (Answer::Addrs(a), _) => a.join(" "),
            (Answer::Dns(_, records), Ask::Dns(_, rtype)) => records
                .iter()
                .map(|r| match r.split_once(' ') {
                    Some((t, data)) if t == *rtype => data.to_string(),
                    _ => r.clone(),
                })
                .collect::<Vec<_>>()
                .join(", "),
            (Answer::Dns(_, records), _) => records.join(", "),
        }
    }
}

/// What a guest must get for a question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// The host's answer, which is the right one (asserted, as a check of the lab).
    Host,
    /// The layout breaks the host here (asserted); guests must get the right answer.
    Right,
    /// Recorded only: the host fails, and its configuration does not say what is right.
    Open,
}

struct Check {
    ask: Ask,
    right: Answer,
    expect: Expect,
}

const INTRANET: &[&str] = &["198.51.100.10", "2001:db8:1::10"];

/// The 14 questions, with `git` the right address of git.example.com in the layout.
fn checks(git: &'static str) -> Vec<Check> {
    let git_a = format!("A {git}");
    [
        (Ask::Addrs("intranet.corp.example"), Answer::addrs(INTRANET)),
        (Ask::Addrs("intranet"), Answer::addrs(INTRANET)),
        (Ask::Addrs("wiki"), Answer::addrs(INTRANET)),
        (
            Ask::Addrs("www.example.com"),
            Answer::addrs(&["192.0.2.80", "2001:db8::80"]),
        ),
        (Ask::Addrs("git.example.com"), Answer::addrs(&[git])),
        (
            Ask::Dns("intranet.corp.example", "AAAA"),
            Answer::noerror(&["AAAA 2001:db8:1::10"]),
        ),
        (
            Ask::Dns("corp.example", "MX"),
            Answer::noerror(&["MX 10 mx.corp.example."]),
        ),
        (
            Ask::Dns("_ldap._tcp.corp.example", "SRV"),
            Answer::noerror(&["SRV 0 5 389 ldap.corp.example."]),
        ),
        (Ask::Dns("nx.corp.example", "A"), Answer::nxdomain()),
        (Ask::Dns("git.example.com", "A"), Answer::noerror(&[&git_a])),
        (
            Ask::Dns("www.example.com", "AAAA"),
            Answer::noerror(&["AAAA 2001:db8::80"]),
        ),
        (
            Ask::Dns("example.com", "MX"),
            Answer::noerror(&["MX 10 mail.example.com."]),
        ),
        (
            Ask::Dns("_sip._udp.example.com", "SRV"),
            Answer::noerror(&["SRV 10 60 5060 sip.example.com."]),
        ),
        (Ask::Dns("nx.example.com", "A"), Answer::nxdomain()),
    ]
    .into_iter()
    .map(|(ask, right)| Check {
        ask,
        right,
        expect: Expect::Host,
    })
    .collect()
}

/// The checks of a layout whose first server answers NXDOMAIN for every outside name: there the
/// host fails, and the right answer is the outside server's.
fn host_fails_outside(mut checks: Vec<Check>) -> Vec<Check> {
    for c in &mut checks {
        if !c.ask.internal() && c.right != Answer::nxdomain() {
            c.expect = Expect::Right;
        }
    }
    checks
}

// ---------------------------------------------------------------------------------------------
// Measuring the three views.

/// What one client saw: per check, glibc's answer (getent, or a query without EDNS as glibc
/// sends it), and for the DNS questions the answer to one carrying an EDNS cookie (as dig's
/// queries do by default).
struct Seen {
    glibc: Vec<Answer>,
    cookie: Vec<Option<Answer>>,
}

/// A guest-facing server started twice on the same resolv.conf: one instance asked as glibc
/// asks, one asked only with EDNS cookies, so neither's cache answers for the other.
struct Guests {
    plain: SocketAddr,
    cookie: SocketAddr,
    /// A guest's resolv.conf: the plain instance, the host's search/domain lines, and glibc
    /// with a 1 s timeout and one retry.
    resolv_conf: PathBuf,
}

struct Setup {
    host_rc: PathBuf,
    /// None where dnsmasq cannot run (it cannot drop privileges in a user namespace): the
    /// host and virtdns are still compared, and the README table is not checked.
    dnsmasq: Option<Guests>,
    virtdns: Guests,
}

/// An IPv6 address besides ::1 while it lives (on lo: 127.N.0.x serves the same purpose for
/// IPv4), so that glibc's getaddrinfo (AI_ADDRCONFIG) asks AAAA as on a dual-stack host.
struct DualStack(String);

impl DualStack {
    fn new(lab: &Lab) -> DualStack {
        let ipv6_off = std::fs::read_to_string("/proc/sys/net/ipv6/conf/lo/disable_ipv6")
            .map_or(true, |v| v.trim() != "0");
        if ipv6_off {
            skip("IPv6 is disabled in the lab's namespace: the matrix expects a dual-stack host");
        }
        let addr = format!("fd00:53::{}/128", lab.ip(0).octets()[1]);
        run(Command::new("ip").args(["-6", "addr", "add", &addr, "dev", "lo", "nodad"]));
        DualStack(addr)
    }
}

impl Drop for DualStack {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["-6", "addr", "del", &self.0, "dev", "lo"])
            .status();
    }
}

/// Lab hosts for dnsmasq (plain, cookie) and virtdns (plain, cookie).
const HOSTS: [u8; 4] = [4, 10, 1, 11];

/// Starts dnsmasq and virtdns on `host_rc` (plain and cookie instances on `hosts`), and waits
/// (at most 3 s, without failing) until virtdns has settled on its view of the host's servers:
/// www.example.com answered. A guest asking in virtdns's first milliseconds is not what the
/// table compares.
fn serve(lab: &mut Lab, host_rc: &Path, hosts: [u8; 4]) -> Setup {
    let text = std::fs::read_to_string(host_rc).unwrap();
    let search: String = text
        .lines()
        .filter(|l| l.starts_with("search") || l.starts_with("domain"))
        .map(|l| format!("{l}\n"))
        .collect();
    let guests = |lab: &mut Lab, plain: SocketAddr, cookie: SocketAddr, tag: &str| {
        let resolv_conf = lab.write(
            &format!("guest-{tag}-{}.resolv.conf", plain.ip()),
            &format!(
                "nameserver {}\n{search}options timeout:1 attempts:2\n",
                plain.ip()
            ),
        );
        Guests {
            plain,
            cookie,
            resolv_conf,
        }
    };
    let dnsmasq = (!crate::lab::in_user_namespace()).then(|| {
        let (d1, d2) = (
            lab.dnsmasq(hosts[0], host_rc),
            lab.dnsmasq(hosts[1], host_rc),
        );
        guests(lab, d1, d2, "dnsmasq")
    });
    let (v1, v2) = (
        lab.virtdns(hosts[2], host_rc, ""),
        lab.virtdns(hosts[3], host_rc, ""),
    );
    let virtdns = guests(lab, v1, v2, "virtdns");
    let www = ["A 192.0.2.80".to_string()];
    poll_until(Duration::from_secs(3), || {
        [(v1, Edns::None), (v2, Edns::Cookie)]
            .iter()
            .all(|&(s, e)| dig(s).edns(e).query("www.example.com", "A").answers == www)
    });
    Setup {
        host_rc: host_rc.to_path_buf(),
        dnsmasq,
        virtdns,
    }
}

/// Runs `f` on every item at once, one thread each; results in order.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = items.iter().map(|i| s.spawn(move || f(i))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("measuring thread"))
            .collect()
    })
}

/// A guest's query as glibc sends it, with the guest's `timeout:1 attempts:2` (dnsmasq waits
/// for exactly that retry). Returns the reply and whether the client had to wait out a timeout.
fn ask_guest(server: SocketAddr, edns: Edns, name: &str, rtype: &str) -> (Reply, bool) {
    stub_query(server, name, rtype, edns, Duration::from_secs(1), 2)
}

fn host_view(host_rc: &Path, checks: &[Check]) -> Seen {
    let glibc = Glibc::from_resolv_conf(host_rc);
    let answers = par_map(checks, |c| match c.ask {
        Ask::Addrs(n) => Answer::Addrs(getent(host_rc, n)),
        Ask::Dns(n, t) => match glibc.query(n, t).reply {
            Some(r) => Answer::of(&r),
            None => Answer::Dns("FAIL".into(), Vec::new()),
        },
    });
    Seen {
        cookie: vec![None; answers.len()],
        glibc: answers,
    }
}

fn guest_view(guests: &Guests, checks: &[Check]) -> Seen {
    let both = par_map(checks, |c| match c.ask {
        Ask::Addrs(n) => (Answer::Addrs(getent(&guests.resolv_conf, n)), None),
        Ask::Dns(n, t) => (
            Answer::of(&ask_guest(guests.plain, Edns::None, n, t).0),
            Some(Answer::of(&ask_guest(guests.cookie, Edns::Cookie, n, t).0)),
        ),
    });
    let (glibc, cookie) = both.into_iter().unzip();
    Seen { glibc, cookie }
}

/// Three new names asked one after another: which cost the client a timeout.
type Waits = [bool; 3];

/// Asks one new name (type A) as a client does; true when it had to wait out a timeout.
type Asker<'a> = Box<dyn Fn(&str) -> bool + Sync + 'a>;

fn new_name_waits(first: u32, asked: impl Fn(&str) -> bool) -> Waits {
    [0, 1, 2].map(|i| asked(&format!("n{}.example.com", first + i)))
}

/// The three views of a layout at one moment.
struct Views {
    host: Seen,
    dnsmasq: Option<Seen>,
    virtdns: Seen,
    /// Host, dnsmasq, virtdns.
    waits: [Waits; 3],
}

/// Measures the views: first the timing of three new names per client (`probe` numbers them,
/// n<probe>… in example.com; each measurement needs names of its own), then every check, the
/// three clients at once and each client's checks at once.
fn measure(setup: &Setup, checks: &[Check], probe: u32) -> Views {
    let glibc = Glibc::from_resolv_conf(&setup.host_rc);
    let d = setup.dnsmasq.as_ref().map(|g| g.plain);
    let v = setup.virtdns.plain;
    let timing: Vec<Asker> = vec![
        Box::new(|n| glibc.query(n, "A").waited),
        Box::new(move |n| d.is_some_and(|d| ask_guest(d, Edns::None, n, "A").1)),
        Box::new(move |n| ask_guest(v, Edns::None, n, "A").1),
    ];
    let waits = par_map(&timing, |asked| new_name_waits(probe, asked));
    let mut views = par_map(&[0, 1, 2], |i| match (i, &setup.dnsmasq) {
        (0, _) => Some(host_view(&setup.host_rc, checks)),
        (1, Some(dnsmasq)) => Some(guest_view(dnsmasq, checks)),
        (1, None) => None,
        _ => Some(guest_view(&setup.virtdns, checks)),
    });
    let virtdns = views.pop().flatten().unwrap();
    let dnsmasq = views.pop().flatten();
    let host = views.pop().flatten().unwrap();
    Views {
        host,
        dnsmasq,
        virtdns,
        waits: [waits[0], waits[1], waits[2]],
    }
}

// ---------------------------------------------------------------------------------------------
// Verdicts for the table: short, and stable from run to run (no timings, only "a timeout").

/// "N of M (what differs)" pieces for the checks where `got` is not `reference`; None if none.
fn differences(
    checks: &[&Check],
    got: &[&Answer],
    reference: &[&Answer],
) -> Option<(usize, String)> {
    // Failures are grouped by (internal or outside, kind); "no address" joins the group of
    // the same scope with a DNS failure (getent's view of the same failure).
    let mut groups: Vec<(bool, String, Vec<String>)> = Vec::new();
    let mut data = Vec::new();
    let mut count = 0;
    for ((c, g), r) in checks.iter().zip(got).zip(reference) {
        if g == r {
            continue;
        }
        count += 1;
        match g.failure() {
            Some(kind) => match groups
                .iter_mut()
                .find(|(s, k, _)| *s == c.ask.internal() && k == kind)
            {
                Some(group) => group.2.push(c.ask.label()),
                None => groups.push((c.ask.internal(), kind.to_string(), vec![c.ask.label()])),
            },
            // getent's addresses and the A question of one name, wrong the same way: once.
            None => {
                let item = (c.ask.name(), c.ask.label(), g.show(&c.ask));
                if !data.iter().any(|(n, _, s)| *n == item.0 && *s == item.2) {
                    data.push(item);
                }
            }
        }
    }
    if count == 0 {
        return None;
    }
    for scope in [true, false] {
        let dns_kinds: Vec<String> = groups
            .iter()
            .filter(|(s, k, _)| *s == scope && k != "no address")
            .map(|(_, k, _)| k.clone())
            .collect();
        if let [kind] = dns_kinds.as_slice()
            && let Some(pos) = groups
                .iter()
                .position(|(s, k, _)| *s == scope && k == "no address")
        {
            let (_, _, labels) = groups.remove(pos);
            let target = groups
                .iter_mut()
                .find(|(s, k, _)| *s == scope && k == kind)
                .unwrap();
            target.2.extend(labels);
        }
    }
    // The same kind in both scopes reads as one group.
    let mut merged: Vec<(Option<bool>, String, usize, String)> = Vec::new();
    for (scope, kind, labels) in groups {
        match merged.iter_mut().find(|(_, k, _, _)| *k == kind) {
            Some(m) => {
                m.0 = None;
                m.2 += labels.len();
            }
            None => merged.push((Some(scope), kind, labels.len(), labels[0].clone())),
        }
    }
    let mut parts: Vec<String> = merged
        .into_iter()
        .map(|(scope, kind, n, first)| match (scope, n) {
            (_, 1) => format!("{first}: {kind}"),
            (Some(true), _) => format!("internal names {kind}"),
            (Some(false), _) => format!("outside names {kind}"),
            (None, _) => format!("all names {kind}"),
        })
        .collect();
    parts.extend(
        data.into_iter()
            .map(|(_, label, shown)| format!("{label}: {shown}")),
    );
    if parts.len() > 3 {
        parts.truncate(3);
        parts.push("…".into());
    }
    Some((count, parts.join("; ")))
}

fn waits_phrase(w: Waits) -> &'static str {
    match w {
        [false, false, false] => "",
        [true, true, true] => ", each new name after a timeout",
        [true, false, false] => ", the first new name after a timeout",
        _ => ", some new names after a timeout",
    }
}

fn rights(checks: &[Check]) -> Vec<&Answer> {
    checks.iter().map(|c| &c.right).collect()
}

/// The host's cell: its answers against the right ones.
fn host_cell(checks: &[Check], host: &Seen, waits: Waits, verb: &str) -> String {
    let got: Vec<&Answer> = host.glibc.iter().collect();
    let n = checks.len();
    let all: Vec<&Check> = checks.iter().collect();
    let body = match differences(&all, &got, &rights(checks)) {
        None => format!("all {n} answers"),
        Some((k, s)) => format!("{verb} {k} of {n} ({s})"),
    };
    format!("{body}{}", waits_phrase(waits))
}

/// A guest's cell: its answers against the host's (or the right ones, when it has those
/// and the host does not), then what queries carrying an EDNS cookie got, if different.
fn guest_cell(checks: &[Check], guest: &Seen, host: &Seen, waits: Waits) -> String {
    let n = checks.len();
    let got: Vec<&Answer> = guest.glibc.iter().collect();
    let body = if guest.glibc == host.glibc {
        "same as host".to_string()
    } else if got == rights(checks) {
        format!("all {n} answers")
    } else {
        let host_got: Vec<&Answer> = host.glibc.iter().collect();
        let all: Vec<&Check> = checks.iter().collect();
        let (k, s) = differences(&all, &got, &host_got).unwrap();
        format!("differs from host on {k} of {n} ({s})")
    };
    let (mut with, mut cookie, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    for (i, c) in checks.iter().enumerate() {
        if let Some(a) = &guest.cookie[i] {
            with.push(c);
            cookie.push(a);
            plain.push(&guest.glibc[i]);
        }
    }
    let cookie_part = match differences(&with, &cookie, &plain) {
        None => String::new(),
        Some((k, s)) => format!("; with an EDNS cookie, {k} of {} differ ({s})", with.len()),
    };
    format!("{body}{}{cookie_part}", waits_phrase(waits))
}

fn record_views(row: &'static str, checks: &[Check], v: &Views) {
    record(
        row,
        host_cell(checks, &v.host, v.waits[0], "fails on"),
        v.dnsmasq
            .as_ref()
            .map(|d| guest_cell(checks, d, &v.host, v.waits[1])),
        guest_cell(checks, &v.virtdns, &v.host, v.waits[2]),
    );
}

// ---------------------------------------------------------------------------------------------
// Assertions.

/// The lab is what the layout says: the host gets the right answers, except where the layout
/// breaks it, and there it does not.
fn assert_host(checks: &[Check], host: &Seen) {
    let mut wrong = Vec::new();
    for (c, got) in checks.iter().zip(&host.glibc) {
        match c.expect {
            Expect::Host if *got != c.right => wrong.push(format!(
                "{}: host gets {}, the layout should give {}",
                c.ask.label(),
                got.show(&c.ask),
                c.right.show(&c.ask)
            )),
            Expect::Right if *got == c.right => wrong.push(format!(
                "{}: the layout should break the host here, but it gets {}",
                c.ask.label(),
                got.show(&c.ask)
            )),
            _ => {}
        }
    }
    assert!(wrong.is_empty(), "lab broken:\n  {}", wrong.join("\n  "));
}

/// Guests through `what` get the host's answer where the host is right and the right one
/// where the layout breaks the host, asked as glibc asks and with an EDNS cookie.
fn assert_parity(what: &str, checks: &[Check], host: &Seen, guest: &Seen) {
    let mut wrong = Vec::new();
    for (i, c) in checks.iter().enumerate() {
        let want = match c.expect {
            Expect::Host => &host.glibc[i],
            Expect::Right => &c.right,
            Expect::Open => continue,
        };
        let asked = [
            (&guest.glibc[i], ""),
            (
                guest.cookie[i].as_ref().unwrap_or(want),
                " with an EDNS cookie",
            ),
        ];
        for (got, how) in asked {
            if got != want {
                wrong.push(format!(
                    "{}{how}: {}, want {} ({})",
                    c.ask.label(),
                    got.show(&c.ask),
                    want.show(&c.ask),
                    if c.expect == Expect::Host {
                        "the host's"
                    } else {
                        "the right answer; the host fails"
                    }
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "guests through {what} do not get the host's view:\n  {}",
        wrong.join("\n  ")
    );
}

/// dnsmasq's answers (to glibc's queries, or with `cookie` to ones carrying an EDNS cookie)
/// where field-facts.md documents them: `want(check, the host's answer)`, None where it
/// documents nothing.
fn assert_dnsmasq(
    why: &str,
    checks: &[Check],
    v: &Views,
    cookie: bool,
    want: impl Fn(&Check, &Answer) -> Option<Answer>,
) {
    let Some(dnsmasq) = &v.dnsmasq else {
        return;
    };
    for (i, c) in checks.iter().enumerate() {
        let got = match (cookie, &dnsmasq.cookie[i]) {
            (false, _) => &dnsmasq.glibc[i],
            (true, Some(a)) => a,
            (true, None) => continue,
        };
        if let Some(want) = want(c, &v.host.glibc[i]) {
            assert_eq!(
                *got,
                want,
                "dnsmasq 2.90, {}{why}: not what field-facts.md documents",
                c.ask.label()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The layouts.

/// The VPN's resolver: Unbound recursing from the lab root, with corp.example from the VPN's
/// internal BIND and its own view of git.example.com.
const VPN_VIEW: &str =
    "  local-zone: \"git.example.com.\" redirect\n  local-data: \"git.example.com. A 10.8.3.4\"\n";

/// Layout 1's servers: lab root (.6) delegating example.com to the public NSD (.5), the
/// VPN's internal BIND (.7), the home router's Unbound (.3), and the VPN's Unbound (.2), which
/// is started only when `vpn_up`; its configuration is returned. Host resolv.conf: VPN first,
/// router second, `search corp.example`.
fn vpn_layout(lab: &mut Lab, vpn_up: bool) -> (PathBuf, PathBuf) {
    let public = lab.nsd_public(5);
    let root = lab.lab_root(6, public);
    let internal = lab.bind_internal(7);
    let router = lab.unbound_recursor(3, root, "", "");
    let stub = format!(
        "stub-zone:\n  name: \"corp.example\"\n  stub-addr: {}\n",
        internal.ip()
    );
    let vpn_conf = lab.unbound_recursor_conf(2, root, VPN_VIEW, &stub);
    if vpn_up {
        lab.start_unbound(2, &vpn_conf);
    }
    let host = lab.resolv_conf(
        "host.resolv.conf",
        &[lab.addr(2), router],
        "search corp.example\noptions timeout:1 attempts:1\n",
    );
    (vpn_conf, host)
}

pub fn vpn_full_resolver_first(lab: &mut Lab) {
    let _dual_stack = DualStack::new(lab);
    let (_, host_rc) = vpn_layout(lab, true);
    let setup = serve(lab, &host_rc, HOSTS);
    let checks = checks("10.8.3.4");
    let v = measure(&setup, &checks, 100);
    record_views("vpn_full_resolver_first", &checks, &v);
    assert_host(&checks, &v.host);
    assert_parity("virtdns", &checks, &v.host, &v.virtdns);

    // explain names both servers, in the host's order, and says why each was asked or not.
    let (vpn, router) = (lab.addr(2), lab.addr(3));
    let out = run(Command::new(crate::peers::virtdns_bin())
        .args([
            "explain",
            "git.example.com",
            "A",
            "--no-hosts",
            "--resolv-conf",
        ])
        .arg(&host_rc));
    println!(
        "{}",
        out.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    );
    for want in [
        format!("upstream {vpn}: up"),
        "full resolver (probe . NS -> NOERROR [ra]".to_string(),
        format!("servers in order: {vpn}, {router}"),
        format!("asked {vpn} (attempt 1): NOERROR"),
        "1 answer(s)".to_string(),
        format!("not asked: {router} (the answer above is final)"),
        "IN A 10.8.3.4".to_string(),
    ] {
        assert!(out.contains(&want), "explain lacks {want:?}:\n{out}");
    }
}

pub fn refused_internal_first(lab: &mut Lab) {
    let _dual_stack = DualStack::new(lab);
    let (_, _, host_rc) = super::seed_layout(lab);
    let setup = serve(lab, &host_rc, HOSTS);
    let checks = checks("192.0.2.44");
    let v = measure(&setup, &checks, 100);
    record_views("refused_internal_first", &checks, &v);
    assert_host(&checks, &v.host);
    assert_parity("virtdns", &checks, &v.host, &v.virtdns);
    // Plain queries: REFUSED is retried on the next server (fixed in 2.78)...
    assert_dnsmasq(" (REFUSED retried)", &checks, &v, false, |_, h| {
        Some(h.clone())
    });
    // ...the same query carrying an EDNS cookie gets the REFUSED back.
    assert_dnsmasq(
        " (cookie: REFUSED passed back)",
        &checks,
        &v,
        true,
        |c, h| {
            Some(if c.ask.internal() {
                h.clone()
            } else {
                Answer::Dns("REFUSED".into(), Vec::new())
            })
        },
    );
}

pub fn nxdomain_internal_first(lab: &mut Lab) {
    let _dual_stack = DualStack::new(lab);
    let internal = lab.nsd_internal_nxdomain(2);
    let outside = lab.nsd_outside(3);
    let host_rc = lab.resolv_conf(
        "host.resolv.conf",
        &[internal, outside],
        "search corp.example\n",
    );
    let setup = serve(lab, &host_rc, HOSTS);
    let checks = host_fails_outside(checks("192.0.2.44"));
    let v = measure(&setup, &checks, 100);
    record_views("nxdomain_internal_first", &checks, &v);
    assert_host(&checks, &v.host);
    assert_parity("virtdns", &checks, &v.host, &v.virtdns);
}

/// A first server failing as `first` does, then NSD with every name; `options` for the host.
fn failing_first(lab: &mut Lab, first: SocketAddr, options: &str) -> (Vec<Check>, Views) {
    let general = lab.nsd_everything(3);
    let host_rc = lab.resolv_conf(
        "host.resolv.conf",
        &[first, general],
        &format!("search corp.example\n{options}"),
    );
    let setup = serve(lab, &host_rc, HOSTS);
    let checks = checks("192.0.2.44");
    let v = measure(&setup, &checks, 100);
    (checks, v)
}

pub fn servfail_first(lab: &mut Lab) {
    let _dual_stack = DualStack::new(lab);
    let first = lab.unbound_servfail(2);
    let (checks, v) = failing_first(lab, first, "");
    record_views("servfail_first", &checks, &v);
    assert_host(&checks, &v.host);
    assert_parity("virtdns", &checks, &v.host, &v.virtdns);
    // SERVFAIL is retried on the next server (for glibc's queries; one carrying an EDNS
    // cookie gets the SERVFAIL back, as with REFUSED: recorded in the table only).
    let retried = |_: &Check, h: &Answer| Some(h.clone());
    assert_dnsmasq(" (SERVFAIL retried)", &checks, &v, false, retried);
}

pub fn notimp_first(lab: &mut Lab) {
    let _dual_stack = DualStack::new(lab);
    let (first, _fake) = lab.fake(2, crate::peers::Fake::Rcode(4));
    let (checks, v) = failing_first(lab, first, "");
    record_views("notimp_first", &checks, &v);
    assert_host(&checks, &v.host);
    assert_parity("virtdns", &checks, &v.host, &v.virtdns);
    // NOTIMP from the first server goes back to the client.
    let notimp = |c: &Check, _: &Answer| {
        matches!(c.ask, Ask::Dns(..)).then(|| Answer::Dns("NOTIMP".into(), Vec::new()))
    };
    assert_dnsmasq(" (NOTIMP passed back)", &checks, &v, false, notimp);
    assert_dnsmasq(" (cookie: NOTIMP passed back)", &checks, &v, true, notimp);
}

pub fn dead_first(lab: &mut Lab) {
    let _dual_stack = DualStack::new(lab);
    let (first, _silent) = lab.fake(2, crate::peers::Fake::Silent);
    let (checks, v) = failing_first(lab, first, "options timeout:1 attempts:1\n");
    record_views("dead_first", &checks, &v);
    assert_host(&checks, &v.host);
    assert_eq!(
        v.waits[0], [true; 3],
        "the host waits out the silent server"
    );
    assert_parity("virtdns", &checks, &v.host, &v.virtdns);
    assert_eq!(
        v.waits[2], [false; 3],
        "virtdns answers new names within the guest's 1 s timeout"
    );
    // dnsmasq does not time out on its own: every new name costs a client timeout.
    if v.dnsmasq.is_some() {
        assert_eq!(
            v.waits[1], [true; 3],
            "dnsmasq 2.90: field-facts.md documents a client timeout per new name"
        );
    }
}

pub fn vpn_down_then_up(lab: &mut Lab) {
    let _dual_stack = DualStack::new(lab);
    let (vpn_conf, host_rc) = vpn_layout(lab, false);
    let setup = serve(lab, &host_rc, HOSTS);
    // VPN down: the router's view, internal names NXDOMAIN and the public git.example.com.
    let mut down_checks = checks("192.0.2.44");
    for c in &mut down_checks {
        if c.ask.internal() {
            c.right = match c.ask {
                Ask::Addrs(_) => Answer::Addrs(Vec::new()),
                Ask::Dns(..) => Answer::nxdomain(),
            };
        }
    }
    let down = measure(&setup, &down_checks, 100);

    lab.start_unbound(2, &vpn_conf);
    // Both virtdns instances (the one asked as glibc asks, the one asked with cookies).
    let vpn_view = || {
        [
            (setup.virtdns.plain, Edns::None),
            (setup.virtdns.cookie, Edns::Cookie),
        ]
        .iter()
        .all(|&(server, edns)| {
            let ask = |name, rtype| dig(server).edns(edns).query(name, rtype).answers;
            ask("git.example.com", "A") == ["A 10.8.3.4"]
                && ask("intranet.corp.example", "A") == ["A 198.51.100.10"]
        })
    };
    let switched = poll_until(Duration::from_secs(4), vpn_view);
    let checks = checks("10.8.3.4");
    let up = measure(&setup, &checks, 110);

    let up_checks = checks;
    let host = format!(
        "VPN down: {}; up: {}",
        host_cell(&up_checks, &down.host, down.waits[0], "differs on"),
        host_cell(&up_checks, &up.host, up.waits[0], "fails on")
    );
    let dnsmasq = down
        .dnsmasq
        .as_ref()
        .zip(up.dnsmasq.as_ref())
        .map(|(d, u)| {
            format!(
                "VPN down: {}; up: {}",
                guest_cell(&down_checks, d, &down.host, down.waits[1]),
                guest_cell(&up_checks, u, &up.host, up.waits[1])
            )
        });
    let when = match switched {
        Some(t) if t <= Duration::from_secs(2) => " within 2 s of the VPN's start",
        Some(_) => " within 4 s of the VPN's start",
        None => " 4 s after the VPN's start",
    };
    let virtdns = format!(
        "VPN down: {}; up: {}{when}",
        guest_cell(&down_checks, &down.virtdns, &down.host, down.waits[2]),
        guest_cell(&up_checks, &up.virtdns, &up.host, up.waits[2])
    );
    record("vpn_down_then_up", host, dnsmasq, virtdns);
    if let Some(t) = switched {
        println!("    virtdns used the VPN's resolver {t:?} after it started");
    }

    assert_host(&down_checks, &down.host);
    assert_parity("virtdns, VPN down", &down_checks, &down.host, &down.virtdns);
    assert_host(&up_checks, &up.host);
    assert!(
        switched.is_some(),
        "virtdns still answers without the VPN's resolver 4 s after it started"
    );
    assert_parity("virtdns, VPN up", &up_checks, &up.host, &up.virtdns);
}

pub fn search_and_domain(lab: &mut Lab) {
    let _dual_stack = DualStack::new(lab);
    let internal = lab.nsd_internal_nxdomain(2);
    let outside = lab.nsd_outside(3);
    // glibc: the last of `search` and `domain` wins. Domain last: the search list is
    // corp.example, which names the internal server's zone; the host fails outside it.
    let domain_last = lab.resolv_conf(
        "domain-last.resolv.conf",
        &[internal, outside],
        "search other.example\ndomain corp.example\n",
    );
    let setup = serve(lab, &domain_last, HOSTS);
    let checks_a = host_fails_outside(checks("192.0.2.44"));
    let a = measure(&setup, &checks_a, 100);
    record_views("search_then_domain", &checks_a, &a);

    // Search last: short names go to other.example, which nobody serves; nothing in the
    // host's configuration names corp.example, so what is right outside is left open.
    let search_last = lab.resolv_conf(
        "search-last.resolv.conf",
        &[internal, outside],
        "domain corp.example\nsearch other.example\n",
    );
    let setup = serve(lab, &search_last, [9, 12, 8, 5]);
    let mut checks_b = checks("192.0.2.44");
    for c in &mut checks_b {
        if matches!(c.ask, Ask::Addrs(n) if !n.contains('.')) {
            c.right = Answer::Addrs(Vec::new());
        } else if !c.ask.internal() && c.right != Answer::nxdomain() {
            c.expect = Expect::Open;
        }
    }
    let b = measure(&setup, &checks_b, 100);
    record_views("domain_then_search", &checks_b, &b);

    assert_host(&checks_a, &a.host);
    assert_parity("virtdns (domain last)", &checks_a, &a.host, &a.virtdns);
    assert_host(&checks_b, &b.host);
    assert_parity("virtdns (search last)", &checks_b, &b.host, &b.virtdns);
}

/// A veth pair in the lab's namespace, deleted when dropped.
struct Veth(&'static str);

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", self.0]).status();
    }
}

pub fn link_local_ipv6_scope(lab: &mut Lab) {
    let _dual_stack = DualStack::new(lab);
    let added = Command::new("ip")
        .args(["link", "add", "vA", "type", "veth", "peer", "name", "vB"])
        .output()
        .expect("ip");
    if !added.status.success() {
        skip(&format!(
            "cannot create a veth pair here: {}",
            String::from_utf8_lossy(&added.stderr).trim()
        ));
    }
    let _veth = Veth("vA");
    for cmd in [
        "link set vA up",
        "link set vB up",
        "-6 addr add fe80::53/64 dev vB nodad",
        "-6 addr add fe80::1/64 dev vA nodad",
    ] {
        run(Command::new("ip").args(cmd.split(' ')));
    }
    let ll: Ipv6Addr = "fe80::53".parse().unwrap();
    let on_b = SocketAddr::V6(SocketAddrV6::new(ll, 53, 0, interface_index("vB")));
    let internal = lab.nsd_internal_at("ll", "fe80::53%vB", on_b);
    let outside = lab.nsd_outside(3);
    let host_rc = lab.write(
        "host.resolv.conf",
        &format!(
            "nameserver fe80::53%vA\nnameserver {}\nsearch corp.example\n",
            outside.ip()
        ),
    );
    let through_a = SocketAddr::V6(SocketAddrV6::new(ll, 53, 0, interface_index("vA")));
    assert_eq!(
        dig(through_a).query("intranet.corp.example", "A").answers,
        ["A 198.51.100.10"],
        "the link-local server answers through vA ({internal})"
    );
    let setup = serve(lab, &host_rc, HOSTS);
    let checks = checks("192.0.2.44");
    let v = measure(&setup, &checks, 100);
    record_views("link_local_ipv6_scope", &checks, &v);
    assert_host(&checks, &v.host);
    assert_parity("virtdns", &checks, &v.host, &v.virtdns);
}

// ---------------------------------------------------------------------------------------------
// The README table.

/// The table, or None if a row or a cell is missing.
fn table(rows: &[Row]) -> Option<String> {
    let mut t = String::from(
        "| layout | host (glibc) | dnsmasq 2.90 (strict-order) | virtdns |\n|---|---|---|---|\n",
    );
    for (row, _, _) in TABLE {
        let (_, cells) = rows.iter().find(|(r, _)| r == row)?;
        let cells: Option<Vec<&str>> = cells.iter().map(|c| c.as_deref()).collect();
        t.push_str(&format!("| {} |\n", cells?.join(" | ")));
    }
    Some(t)
}

/// README.md with the table under HEADING (its first block of `|` lines) replaced by `table`.
fn with_table(readme: &str, table: &str) -> String {
    let start = readme
        .find(HEADING)
        .unwrap_or_else(|| panic!("README.md has no section {HEADING:?}"));
    let mut out = readme[..start].to_string();
    let mut lines = readme[start..].split_inclusive('\n').peekable();
    while let Some(l) = lines.next_if(|l| !l.starts_with('|')) {
        out.push_str(l);
    }
    assert!(
        lines.peek().is_some(),
        "README.md has no table under {HEADING:?}"
    );
    while lines.next_if(|l| l.starts_with('|')).is_some() {}
    out.push_str(table);
    out.extend(lines);
    out
}

pub fn readme_table(_lab: &mut Lab) {
    // Why rows are missing, with the scenarios concerned.
    let mut missing: Vec<(String, Vec<&str>)> = Vec::new();
    let mut note =
        |why: String, name: &'static str| match missing.iter_mut().find(|(w, _)| *w == why) {
            Some((_, names)) => names.push(name),
            None => missing.push((why, vec![name])),
        };
    let mut failed = Vec::new();
    let scenarios = super::ALL
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| n.starts_with("parity_") && *n != "parity_readme_table");
    for name in scenarios {
        match outcome(name) {
            None => note("filtered out".into(), name),
            Some(Outcome::Skipped(why)) => note(format!("skipped: {why}"), name),
            Some(Outcome::Failed) => failed.push(name),
            Some(Outcome::Passed) => {}
        }
    }
    let rows = ROWS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (row, scenario, _) in TABLE {
        if failed.contains(scenario) && !rows.iter().any(|(r, _)| r == row) {
            note("failed before measuring its row".into(), scenario);
        }
    }
    if !missing.is_empty() {
        let why: Vec<String> = missing
            .iter()
            .map(|(why, names)| format!("{} ({why})", names.join(", ")))
            .collect();
        skip(&format!(
            "the table needs every parity row; missing: {}",
            why.join("; ")
        ));
    }
    let Some(table) = table(&rows) else {
        skip(
            "dnsmasq cannot run in a user namespace, so its column was not measured (the host \
             and virtdns were compared)",
        );
    };
    println!("{table}");
    if !failed.is_empty() {
        println!(
            "    failed, their rows show what was measured: {}",
            failed.join(", ")
        );
    }
    let readme = std::fs::read_to_string(README).expect("README.md");
    if std::env::var("VIRTDNS_UPDATE_README").as_deref() == Ok("1") {
        std::fs::write(README, with_table(&readme, &table)).expect("write README.md");
        println!("    README.md: table rewritten");
        return;
    }
    assert!(
        readme.contains(&table),
        "README.md's table under {HEADING:?} is not the measured one above; \
         `VIRTDNS_UPDATE_README=1 cargo test --test e2e -- parity` rewrites it"
    );
}
