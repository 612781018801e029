//! Real clients: dig (with and without EDNS, with and without a cookie) and glibc through
//! `getent ahosts` under a resolv.conf of the scenario's choosing; `Glibc`, glibc's res_send
//! walk over a resolv.conf's servers done with dig, for the questions getent cannot ask (MX,
//! SRV, the RCODE itself); and `stub_query`, one server asked the way glibc retries (the same
//! query from the same socket), which dig cannot do.

use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr, SocketAddrV6, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// How dig's query carries EDNS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edns {
    /// dig's default: EDNS with a COOKIE option.
    Cookie,
    /// EDNS without options (`+nocookie`).
    Plain,
    /// No OPT record at all, as glibc sends (`+noedns`).
    None,
}

pub const ALL_EDNS: [Edns; 3] = [Edns::Cookie, Edns::Plain, Edns::None];

/// What dig saw.
#[derive(Debug, Clone)]
pub struct Reply {
    /// RCODE name, or "TIMEOUT" when nothing came back.
    pub status: String,
    pub flags: Vec<String>,
    /// "TYPE rdata" per answer record, in order.
    pub answers: Vec<String>,
    pub ttls: Vec<u32>,
    /// ARCOUNT: records in the additional section (an OPT record counts).
    pub additional: usize,
    pub time: Duration,
}

impl Reply {
    pub fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
}

pub struct Dig {
    /// Run dig through this command (e.g. nsenter into a guest), or directly when empty.
    through: Vec<String>,
    server: SocketAddr,
    edns: Edns,
    extra: Vec<String>,
    timeout_s: u32,
}

/// A dig query to `server`.
pub fn dig(server: SocketAddr) -> Dig {
    Dig {
        through: Vec::new(),
        server,
        edns: Edns::Cookie,
        extra: Vec::new(),
        timeout_s: 3,
    }
}

impl Dig {
    pub fn edns(mut self, edns: Edns) -> Dig {
        self.edns = edns;
        self
    }
    pub fn opt(mut self, o: &str) -> Dig {
        self.extra.push(o.into());
        self
    }
    /// Runs dig as `through... dig ...` (inside a guest namespace, say).
    pub fn through(mut self, prefix: &[String]) -> Dig {
        self.through = prefix.to_vec();
        self
    }
    pub fn timeout(mut self, seconds: u32) -> Dig {
        self.timeout_s = seconds;
        self
    }

    pub fn query(&self, name: &str, rtype: &str) -> Reply {
        let mut cmd = match self.through.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg("dig");
                c
            }
            None => Command::new("dig"),
        };
        cmd.arg(format!("@{}", server_name(self.server)))
            .arg(format!("-p{}", self.server.port()))
            .args(["+noall", "+comments", "+answer", "+stats", "+tries=1"])
            .arg(format!("+timeout={}", self.timeout_s))
            .args(match self.edns {
                Edns::Cookie => vec!["+edns=0", "+cookie"],
                Edns::Plain => vec!["+edns=0", "+nocookie"],
                Edns::None => vec!["+noedns"],
            })
            .args(&self.extra)
            .args([name, rtype]);
        let out = cmd.output().expect("dig (dnsutils) must be installed");
        parse_dig(&String::from_utf8_lossy(&out.stdout))
    }
}

fn parse_dig(text: &str) -> Reply {
    let mut reply = Reply {
        status: "TIMEOUT".into(),
        flags: Vec::new(),
        answers: Vec::new(),
        ttls: Vec::new(),
        additional: 0,
        time: Duration::ZERO,
    };
    for line in text.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            reply.status = rest.split(',').next().unwrap_or("").to_string();
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            let flags = rest.split(';').next().unwrap_or("");
            reply.flags = flags.split_whitespace().map(str::to_owned).collect();
            reply.additional = rest
                .split("ADDITIONAL: ")
                .nth(1)
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
        } else if let Some(rest) = line.strip_prefix(";; Query time: ") {
            let ms: u64 = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            reply.time = Duration::from_millis(ms);
        } else if !line.starts_with(';') && !line.trim().is_empty() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 5 {
                reply.ttls.push(f[1].parse().unwrap_or(0));
                reply.answers.push(format!("{} {}", f[3], f[4..].join(" ")));
            }
        }
    }
    reply
}

/// `getent ahosts NAME` with /etc/resolv.conf replaced by `resolv_conf` for this one call
/// (a private mount namespace per call), as a guest or the host would resolve it.
/// Returns the sorted distinct addresses, or an empty list when the name does not resolve.
pub fn getent(resolv_conf: &Path, name: &str) -> Vec<String> {
    getent_with(Command::new("unshare"), resolv_conf, name)
}

/// `getent` through `unshare` (a bare one, or one run inside a guest by nsenter).
pub fn getent_with(mut unshare: Command, resolv_conf: &Path, name: &str) -> Vec<String> {
    let script = format!(
        "mount --bind '{}' /etc/resolv.conf && exec getent ahosts '{name}'",
        resolv_conf.display()
    );
    let out = unshare
        .args(["--mount", "sh", "-c", &script])
        .output()
        .expect("unshare and getent must be installed");
    let mut addrs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

/// A server address as dig and resolv.conf write it: `fe80::53%vA` for a scoped one.
pub fn server_name(server: SocketAddr) -> String {
    match server {
        SocketAddr::V6(v6) if v6.scope_id() != 0 => {
            format!("{}%{}", v6.ip(), interface_name(v6.scope_id()))
        }
        _ => server.ip().to_string(),
    }
}

/// (index, name) of every interface in this network namespace, from `ip -o link` (/sys shows
/// the namespace it was mounted in, not ours).
fn interfaces() -> Vec<(u32, String)> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip (iproute2) must be installed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split(": ");
            let index = f.next()?.trim().parse().ok()?;
            let name = f.next()?.split('@').next()?.to_string();
            Some((index, name))
        })
        .collect()
}

/// The interface with this index.
fn interface_name(index: u32) -> String {
    interfaces()
        .into_iter()
        .find(|(i, _)| *i == index)
        .map_or_else(|| index.to_string(), |(_, n)| n)
}

/// The index of interface `name`.
pub fn interface_index(name: &str) -> u32 {
    interfaces()
        .into_iter()
        .find(|(_, n)| n == name)
        .unwrap_or_else(|| panic!("no interface {name}"))
        .0
}

/// A resolv.conf `nameserver` value: an address, possibly scoped (`fe80::53%vA`); port 53.
pub fn parse_nameserver(text: &str) -> Option<SocketAddr> {
    let (addr, scope) = match text.split_once('%') {
        Some((a, s)) => (a, Some(s)),
        None => (text, None),
    };
    match (addr.parse::<IpAddr>().ok()?, scope) {
        (IpAddr::V6(v6), Some(scope)) => {
            let index = scope.parse().unwrap_or_else(|_| interface_index(scope));
            Some(SocketAddr::V6(SocketAddrV6::new(v6, 53, 0, index)))
        }
        (ip, _) => Some(SocketAddr::new(ip, 53)),
    }
}

/// What glibc's stub resolver would do with a resolv.conf, for one question at a time.
pub struct Glibc {
    pub servers: Vec<SocketAddr>,
    pub timeout_s: u32,
    pub attempts: u32,
}

/// One question walked through the servers as glibc does.
#[derive(Debug, Clone)]
pub struct Walk {
    /// The final reply (NOERROR or NXDOMAIN), or None when every server failed.
    pub reply: Option<Reply>,
    /// Some server let a full timeout pass before the walk moved on.
    pub waited: bool,
}

impl Glibc {
    /// Reads the `nameserver` lines (at most 3, as glibc) and `options timeout:`/`attempts:`.
    pub fn from_resolv_conf(path: &Path) -> Glibc {
        let text = std::fs::read_to_string(path).expect("resolv.conf");
        let mut g = Glibc {
            servers: Vec::new(),
            timeout_s: 5,
            attempts: 2,
        };
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") if g.servers.len() < 3 => {
                    g.servers.extend(words.next().and_then(parse_nameserver));
                }
                Some("options") => {
                    for opt in words {
                        if let Some(t) = opt.strip_prefix("timeout:") {
                            g.timeout_s = t.parse::<u32>().unwrap_or(5).clamp(1, 30);
                        } else if let Some(a) = opt.strip_prefix("attempts:") {
                            g.attempts = a.parse::<u32>().unwrap_or(2).clamp(1, 5);
                        }
                    }
                }
                _ => {}
            }
        }
        g
    }

    /// glibc's res_send rules, one dig per server in order, `attempts` rounds: a query without
    /// EDNS (glibc sends none) and with RD; REFUSED, SERVFAIL, NOTIMP, a referral (NOERROR, no
    /// answer, neither AA nor RA, no additional records) and no reply move on; NOERROR and
    /// NXDOMAIN are final. Every server gets the resolv.conf timeout (glibc scales it for later
    /// servers of a round; no layout here has a silent server after the first).
    pub fn query(&self, name: &str, rtype: &str) -> Walk {
        let mut walk = Walk {
            reply: None,
            waited: false,
        };
        let timeout = Duration::from_secs(self.timeout_s.into());
        for _ in 0..self.attempts {
            for &server in &self.servers {
                let started = Instant::now();
                let r = dig(server)
                    .edns(Edns::None)
                    .opt("+noadflag")
                    .timeout(self.timeout_s)
                    .query(name, rtype);
                let took = started.elapsed();
                let referral = r.status == "NOERROR"
                    && r.answers.is_empty()
                    && !r.has_flag("aa")
                    && !r.has_flag("ra")
                    && r.additional == 0;
                match r.status.as_str() {
                    "NOERROR" | "NXDOMAIN" if !referral => {
                        walk.reply = Some(r);
                        return walk;
                    }
                    // No reply: a timeout, or at once for a closed port (ICMP unreachable).
                    "TIMEOUT" if took >= timeout.mul_f32(0.9) => walk.waited = true,
                    _ => {}
                }
            }
        }
        walk
    }
}

/// The bytes of a query for `name` A with this ID and opcode, RD set, no EDNS: what a stub
/// sends, for scenarios that write packets themselves.
pub fn raw_query(id: u16, name: &str, opcode: u8) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[1 | (opcode << 3), 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// A query to one server as glibc's stub resolver sends it: RD set, EDNS as `edns` says (glibc
/// itself sends none), from one connected UDP socket, the very same bytes (same ID, same
/// port) sent again after each `timeout` up to `attempts` times. dnsmasq treats only such a
/// retransmission as a retry (a new ID or port just joins the query already waiting). Returns
/// the reply (status TIMEOUT when none came) and whether any try timed out first.
pub fn stub_query(
    server: SocketAddr,
    name: &str,
    rtype: &str,
    edns: Edns,
    timeout: Duration,
    attempts: u32,
) -> (Reply, bool) {
    use hickory_proto::op::{Edns as HEdns, Message, MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::opt::EdnsOption;
    use hickory_proto::rr::{Name, RecordType};

    let random = || {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    let id = random() as u16;
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    let qtype: RecordType = rtype.parse().expect("record type");
    let fqdn = Name::from_ascii(format!("{}.", name.trim_end_matches('.'))).expect("name");
    m.add_query(Query::query(fqdn, qtype));
    if edns != Edns::None {
        let mut e = HEdns::new();
        e.set_max_payload(1232);
        if edns == Edns::Cookie {
            let client_cookie = random().to_be_bytes().to_vec();
            e.options_mut()
                .insert(EdnsOption::Unknown(10, client_cookie));
        }
        m.set_edns(e);
    }
    let query = m.to_vec().expect("query bytes");
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().unwrap(),
        SocketAddr::V6(_) => "[::]:0".parse().unwrap(),
    };
    let socket = UdpSocket::bind(local).expect("client socket");
    socket.connect(server).expect("connect");
    let mut waited = false;
    let mut buf = [0u8; 65535];
    let started = Instant::now();
    for _ in 0..attempts {
        let _ = socket.send(&query);
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                waited = true;
                break;
            }
            socket.set_read_timeout(Some(left)).unwrap();
            match socket.recv(&mut buf) {
                Ok(n) => {
                    let Ok(reply) = Message::from_vec(&buf[..n]) else {
                        continue;
                    };
                    if reply.metadata.id != id || reply.queries != m.queries {
                        continue;
                    }
                    return (stub_reply(&reply, started.elapsed()), waited);
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    // ICMP port unreachable: glibc gives up on this server at once.
                    return (timeout_reply(), waited);
                }
                Err(_) => {}
            }
        }
    }
    (timeout_reply(), waited)
}

fn timeout_reply() -> Reply {
    parse_dig("")
}

/// A reply in dig's terms: RCODE name, flags, "TYPE rdata" answers.
fn stub_reply(m: &hickory_proto::op::Message, time: Duration) -> Reply {
    let md = &m.metadata;
    let status = match md.response_code.low() {
        0 => "NOERROR".to_string(),
        1 => "FORMERR".to_string(),
        2 => "SERVFAIL".to_string(),
        3 => "NXDOMAIN".to_string(),
        4 => "NOTIMP".to_string(),
        5 => "REFUSED".to_string(),
        n => format!("RCODE{n}"),
    };
    let flags = [
        ("qr", true),
        ("aa", md.authoritative),
        ("tc", md.truncation),
        ("rd", md.recursion_desired),
        ("ra", md.recursion_available),
    ]
    .into_iter()
    .filter(|(_, on)| *on)
    .map(|(f, _)| f.to_string())
    .collect();
    Reply {
        status,
        flags,
        answers: m
            .answers
            .iter()
            .map(|r| format!("{} {}", r.record_type(), r.data))
            .collect(),
        ttls: m.answers.iter().map(|r| r.ttl).collect(),
        additional: m.additionals.len() + usize::from(m.edns.is_some()),
        time,
    }
}
