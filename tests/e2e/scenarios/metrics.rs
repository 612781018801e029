//! What virtdns says about itself: the metrics endpoint counts exactly the queries clients
//! sent, by transport, answer source and RCODE, and what promtool accepts; the query log
//! prints one line per query with what a person looks for, switches with SIGUSR1, and under a
//! flood says how many lines it left out instead of writing them.

use crate::clients::dig;
use crate::clients::raw_query;
use crate::lab::{Lab, run, wait_until};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const METRICS_PORT: u16 = 9153;

/// Sends `packet` and waits for the reply with its ID; returns its RCODE.
fn ask(socket: &UdpSocket, server: SocketAddr, packet: &[u8]) -> u8 {
    socket.send_to(packet, server).unwrap();
    let mut buf = [0u8; 1500];
    loop {
        let (n, _) = socket.recv_from(&mut buf).expect("a reply");
        if n >= 12 && buf[..2] == packet[..2] {
            return buf[3] & 0x0f;
        }
    }
}

/// GET /metrics: the body.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("metrics");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_string()
}

/// Each sample as `name{labels}` -> value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("a sample");
            (series.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

/// The sum of every sample of `name` (0 when there is none).
fn sum(s: &HashMap<String, f64>, name: &str) -> f64 {
    s.iter()
        .filter(|(k, _)| k.split('{').next() == Some(name))
        .map(|(_, v)| v)
        .sum()
}

/// `promtool check metrics` on `text`: no problem reported.
fn promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "promtool (Debian package prometheus; scripts/install-test-deps) must be installed",
        );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn counts_match_the_queries_sent(lab: &mut Lab) {
    let outside = lab.nsd_outside(3);
    let rc = lab.resolv_conf("resolv.conf", &[outside], "");
    let metrics = SocketAddr::new(lab.ip(1).into(), METRICS_PORT);
    let config = format!(
        "[dns]\nno_hosts = true\n\n[[dns.record]]\nname = \"web.vm.test\"\ntype = \"A\"\n\
         value = \"192.0.2.10\"\n\n[metrics]\nlisten = \"{metrics}\"\n"
    );
    let started = SystemTime::now();
    let virtdns = lab.virtdns(1, &rc, &config);

    // Before any query: nothing counted, and the text passes promtool already.
    let before = scrape(metrics);
    promtool_accepts(&before);
    assert_eq!(sum(&samples(&before), "virtdns_dns_queries_total"), 0.0);

    // UDP through dig: one forwarded answer, then the cache; NXDOMAIN the same way; a
    // local record.
    assert_eq!(dig(virtdns).query("www.example.com", "A").status, "NOERROR");
    for _ in 0..3 {
        assert_eq!(dig(virtdns).query("nx.example.com", "A").status, "NXDOMAIN");
    }
    for _ in 0..2 {
        assert_eq!(dig(virtdns).query("web.vm.test", "A").status, "NOERROR");
    }
    // 200 cache hits from a plain socket, each reply awaited.
    let client = UdpSocket::bind((lab.ip(9), 0)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    for id in 0..200 {
        assert_eq!(
            ask(&client, virtdns, &raw_query(id, "www.example.com", 0)),
            0
        );
    }
    // An opcode virtdns does not serve (2, STATUS): NOTIMP; a packet too short to answer.
    assert_eq!(
        ask(&client, virtdns, &raw_query(7, "www.example.com", 2)),
        4
    );
    client.send_to(&[1, 2, 3, 4, 5], virtdns).unwrap();
    // TCP.
    for _ in 0..3 {
        let r = dig(virtdns).opt("+tcp").query("www.example.com", "A");
        assert_eq!(r.answers, vec!["A 192.0.2.80"]);
    }

    let expected: &[(&str, f64)] = &[
        (
            r#"virtdns_dns_queries_total{transport="udp",source="forwarded",rcode="NOERROR"}"#,
            1.0,
        ),
        (
            r#"virtdns_dns_queries_total{transport="udp",source="cache",rcode="NOERROR"}"#,
            200.0,
        ),
        (
            r#"virtdns_dns_queries_total{transport="udp",source="forwarded",rcode="NXDOMAIN"}"#,
            1.0,
        ),
        (
            r#"virtdns_dns_queries_total{transport="udp",source="cache",rcode="NXDOMAIN"}"#,
            2.0,
        ),
        (
            r#"virtdns_dns_queries_total{transport="udp",source="local",rcode="NOERROR"}"#,
            2.0,
        ),
        (
            r#"virtdns_dns_queries_total{transport="udp",source="invalid",rcode="NOTIMP"}"#,
            1.0,
        ),
        (
            r#"virtdns_dns_queries_total{transport="tcp",source="cache",rcode="NOERROR"}"#,
            3.0,
        ),
        (r#"virtdns_dns_dropped_total{transport="udp"}"#, 1.0),
        (r#"virtdns_dns_dropped_total{transport="tcp"}"#, 0.0),
        ("virtdns_dns_inflight_queries", 0.0),
        ("virtdns_cache_hits_total", 205.0),
        ("virtdns_cache_misses_total", 4.0),
        ("virtdns_cache_entries", 2.0),
        ("virtdns_cache_evictions_total", 0.0),
        ("virtdns_query_log_enabled", 0.0),
    ];
    let upstream = |name: &str, extra: &str| format!("{name}{{server=\"{outside}\"{extra}}}");
    let upstream_expected = [
        (upstream("virtdns_upstream_queries_total", ""), 2.0),
        (
            upstream("virtdns_upstream_responses_total", ",rcode=\"NOERROR\""),
            1.0,
        ),
        (
            upstream("virtdns_upstream_responses_total", ",rcode=\"NXDOMAIN\""),
            1.0,
        ),
        (upstream("virtdns_upstream_timeouts_total", ""), 0.0),
        (upstream("virtdns_upstream_errors_total", ""), 0.0),
        (upstream("virtdns_upstream_up", ""), 1.0),
    ];
    // Counted before each reply went out; a scrape may still race a slow thread: poll briefly.
    let mut text = String::new();
    let matches = |text: &str| {
        let s = samples(text);
        expected
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .chain(upstream_expected.iter().cloned())
            .all(|(k, v)| s.get(&k).copied().unwrap_or(0.0) == v)
    };
    let settled = crate::lab::poll_until(Duration::from_secs(2), || {
        text = scrape(metrics);
        matches(&text)
    });
    let s = samples(&text);
    for (k, v) in expected
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .chain(upstream_expected.iter().cloned())
    {
        assert_eq!(s.get(&k).copied().unwrap_or(0.0), v, "{k}\n{text}");
    }
    assert!(settled.is_some());
    // Every query sent is counted once: 210 answered, 1 dropped.
    assert_eq!(sum(&s, "virtdns_dns_queries_total"), 210.0, "{text}");
    assert_eq!(sum(&s, "virtdns_dns_dropped_total"), 1.0, "{text}");
    // What is known of the upstream, the build and the start.
    let srtt = s[&upstream("virtdns_upstream_srtt_seconds", "")];
    assert!(srtt > 0.0 && srtt < 1.0, "srtt {srtt}");
    let version = format!(
        "virtdns_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(s.get(&version), Some(&1.0), "{text}");
    let start = s["process_start_time_seconds"];
    let at = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    // The kernel's boot time is in whole seconds: the start may read up to a second early.
    assert!(
        start >= at(started) - 2.0 && start <= at(SystemTime::now()),
        "start time {start}"
    );
    promtool_accepts(&text);
    // Anything but GET /metrics is refused.
    let mut other = TcpStream::connect(metrics).unwrap();
    other.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut reply = String::new();
    other.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
    // The query log is off unless asked for.
    assert!(
        !lab.proc("virtdns-1").log_text().contains("query client="),
        "no query log by default"
    );
}

/// The query log's lines for `name`, in the daemon's log after byte `from`.
fn lines_for<'a>(log: &'a str, from: usize, name: &str) -> Vec<&'a str> {
    let needle = format!(" name={name} ");
    log[from..]
        .lines()
        .filter(|l| l.contains("virtdns::query: query client=") && l.contains(&needle))
        .collect()
}

/// The value of `key=` in a query log line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

pub fn query_log_lines_and_sigusr1(lab: &mut Lab) {
    let outside = lab.nsd_outside(3);
    let rc = lab.resolv_conf("resolv.conf", &[outside], "");
    let metrics = SocketAddr::new(lab.ip(1).into(), METRICS_PORT);
    let config = format!("[dns]\nlog_queries = true\n\n[metrics]\nlisten = \"{metrics}\"\n");
    let virtdns = lab.virtdns(1, &rc, &config);
    let log_file = lab.path("virtdns-1.log");
    let log = || std::fs::read_to_string(&log_file).unwrap_or_default();
    let pid = lab.proc("virtdns-1").pid().to_string();

    // A forwarded answer: client, name, type, transport, source, upstream, RCODE, ms.
    assert_eq!(dig(virtdns).query("www.example.com", "A").status, "NOERROR");
    // The line is written before the reply is sent.
    let text = log();
    let lines = lines_for(&text, 0, "www.example.com");
    assert_eq!(lines.len(), 1, "{text}");
    let line = lines[0];
    assert!(line.contains(" INFO "), "{line}");
    let client: SocketAddr = field(line, "client").parse().expect("client address");
    assert!(client.ip().is_loopback() && client.port() != 0, "{line}");
    assert_eq!(field(line, "type"), "A");
    assert_eq!(field(line, "transport"), "udp");
    assert_eq!(field(line, "source"), "forwarded");
    assert_eq!(field(line, "upstream"), outside.to_string());
    assert_eq!(field(line, "rcode"), "NOERROR");
    let ms: f64 = field(line, "ms").parse().expect("milliseconds");
    assert!((0.0..3000.0).contains(&ms), "{line}");

    // From the cache over TCP; NXDOMAIN for an AAAA forwarded.
    dig(virtdns).opt("+tcp").query("www.example.com", "A");
    assert_eq!(
        dig(virtdns).query("nx.example.com", "AAAA").status,
        "NXDOMAIN"
    );
    let text = log();
    let www = lines_for(&text, 0, "www.example.com");
    assert_eq!(www.len(), 2, "{text}");
    assert_eq!(
        (
            field(www[1], "transport"),
            field(www[1], "source"),
            field(www[1], "upstream")
        ),
        ("tcp", "cache", "-")
    );
    let nx = lines_for(&text, 0, "nx.example.com");
    assert_eq!(nx.len(), 1, "{text}");
    assert_eq!(
        (field(nx[0], "type"), field(nx[0], "rcode")),
        ("AAAA", "NXDOMAIN")
    );
    assert_eq!(
        samples(&scrape(metrics)).get("virtdns_query_log_enabled"),
        Some(&1.0)
    );

    // SIGUSR1: off. Queries leave no line (they would be there before the reply).
    run(Command::new("kill").args(["-USR1", &pid]));
    wait_until(Duration::from_secs(5), "SIGUSR1 switches it off", || {
        log().contains("SIGUSR1: query log off")
    });
    let mark = log().len();
    assert_eq!(
        dig(virtdns).query("alias.example.com", "A").status,
        "NOERROR"
    );
    dig(virtdns).query("alias.example.com", "A");
    assert!(lines_for(&log(), mark, "alias.example.com").is_empty());
    assert_eq!(
        samples(&scrape(metrics)).get("virtdns_query_log_enabled"),
        Some(&0.0)
    );
    // SIGUSR1 again: on.
    run(Command::new("kill").args(["-USR1", &pid]));
    wait_until(Duration::from_secs(5), "SIGUSR1 switches it on", || {
        log().contains("SIGUSR1: query log on")
    });
    dig(virtdns).query("alias.example.com", "A");
    let text = log();
    let alias = lines_for(&text, mark, "alias.example.com");
    assert_eq!(alias.len(), 1, "{text}");
    assert_eq!(field(alias[0], "source"), "cache");

    // A flood: the log keeps to its rate, and says how many lines it left out. Every query
    // is either a line or counted in a "suppressed" line.
    std::thread::sleep(Duration::from_secs(3)); // the bucket refills to its burst
    let mark = log().len();
    let client = UdpSocket::bind((lab.ip(9), 0)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let flood = 2000;
    let began = Instant::now();
    for id in 0..flood {
        assert_eq!(
            ask(&client, virtdns, &raw_query(id, "git.example.com", 0)),
            0
        );
    }
    let took = began.elapsed();
    let suppressed_in = |text: &str| -> u64 {
        text[mark..]
            .lines()
            .filter_map(|l| l.split("query log: ").nth(1))
            .filter_map(|rest| rest.split(" lines suppressed").next()?.parse::<u64>().ok())
            .sum()
    };
    wait_until(
        Duration::from_secs(5),
        "every line of the flood logged or counted as suppressed",
        || {
            let text = log();
            lines_for(&text, mark, "git.example.com").len() as u64 + suppressed_in(&text)
                == u64::from(flood)
        },
    );
    let text = log();
    let logged = lines_for(&text, mark, "git.example.com").len() as f64;
    // At most the burst (200) plus 100 a second while the flood lasted.
    let bound = 200.0 + 100.0 * took.as_secs_f64() + 1.0;
    assert!(
        logged <= bound && suppressed_in(&text) > 0,
        "{logged} lines in {took:?} (bound {bound}), {} suppressed",
        suppressed_in(&text)
    );
}

pub fn dhcp_addresses_messages_and_commits(lab: &mut Lab) {
    let outside = lab.nsd_outside(3);
    let rc = lab.resolv_conf("resolv.conf", &[outside], "");
    let net = lab.network();
    let n = net.host.octets()[2];
    let metrics = SocketAddr::new(lab.ip(1).into(), METRICS_PORT);
    let config = format!(
        "[dhcp]\ninterface = \"{bridge}\"\nlease_db = \"{db}\"\n\n[[dhcp.range]]\n\
         start = \"198.18.{n}.100\"\nend = \"198.18.{n}.109\"\n\n[metrics]\nlisten = \"{metrics}\"\n",
        bridge = net.bridge,
        db = lab.path("leases.sqlite").display(),
    );
    lab.virtdns(1, &rc, &config);
    let range = format!("198.18.{n}.100-198.18.{n}.109");
    let addresses = |s: &HashMap<String, f64>, state: &str| {
        let key = format!("virtdns_dhcp_addresses{{range=\"{range}\",state=\"{state}\"}}");
        s.get(&key).copied()
    };
    let s = samples(&scrape(metrics));
    assert_eq!(addresses(&s, "free"), Some(10.0));
    assert_eq!(addresses(&s, "bound"), Some(0.0));

    let mut guest = lab.guest(&net, 1, "alpha");
    lab.start_client(&mut guest, crate::guests::Client::Udhcpc, "alpha", &[]);
    guest.wait_lease();
    let mut text = String::new();
    wait_until(
        Duration::from_secs(5),
        "the lease shows in the metrics",
        || {
            text = scrape(metrics);
            let s = samples(&text);
            addresses(&s, "bound") == Some(1.0) && addresses(&s, "free") == Some(9.0)
        },
    );
    let s = samples(&text);
    assert_eq!(addresses(&s, "offered"), Some(0.0), "{text}");
    assert_eq!(addresses(&s, "declined"), Some(0.0), "{text}");
    let messages = |direction: &str, kind: &str| {
        let key =
            format!("virtdns_dhcp_messages_total{{direction=\"{direction}\",type=\"{kind}\"}}");
        s.get(&key).copied().unwrap_or(0.0)
    };
    // The client's DORA: at least one of each (it may have sent a DISCOVER again).
    for (direction, kind) in [
        ("received", "discover"),
        ("received", "request"),
        ("sent", "offer"),
        ("sent", "ack"),
    ] {
        assert!(
            messages(direction, kind) >= 1.0,
            "{direction} {kind}\n{text}"
        );
    }
    assert_eq!(messages("sent", "nak"), 0.0, "{text}");
    // The lease was committed before its ACK: at least one commit, well under a second.
    let commits = s["virtdns_dhcp_lease_commit_seconds_count"];
    assert!(commits >= 1.0, "{text}");
    assert_eq!(
        s[r#"virtdns_dhcp_lease_commit_seconds_bucket{le="+Inf"}"#],
        commits
    );
    promtool_accepts(&text);
}
