//! Real clients: dig (with and without EDNS, with and without a cookie) and glibc through
//! `getent ahosts` under a resolv.conf of the scenario's choosing.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

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
        cmd.arg(format!("@{}", self.server.ip()))
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
        time: Duration::ZERO,
    };
    for line in text.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            reply.status = rest.split(',').next().unwrap_or("").to_string();
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            let flags = rest.split(';').next().unwrap_or("");
            reply.flags = flags.split_whitespace().map(str::to_owned).collect();
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
