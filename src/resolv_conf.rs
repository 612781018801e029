//! The host's /etc/resolv.conf as glibc reads it (resolv.conf(5)): nameservers in order (at
//! most three), search domains, and the `timeout`, `attempts` and `rotate` options.

use std::net::{IpAddr, SocketAddr};

/// glibc uses at most this many nameserver lines (MAXNS).
pub const MAX_NAMESERVERS: usize = 3;
/// The systemd-resolved stub listener.
pub const RESOLVED_STUB: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 53));

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<SocketAddr>,
    /// `search` domains, or the `domain` entry when no search line is given.
    pub search: Vec<String>,
    /// glibc's per-try timeout in seconds (`options timeout:`), default 5, at most 30.
    pub timeout_secs: u32,
    /// Rounds over the server list (`options attempts:`), default 2, at most 5.
    pub attempts: u32,
    pub rotate: bool,
    /// Lines that were not understood, for the log.
    pub ignored: Vec<String>,
}

impl Default for ResolvConf {
    fn default() -> Self {
        ResolvConf {
            nameservers: Vec::new(),
            search: Vec::new(),
            timeout_secs: 5,
            attempts: 2,
            rotate: false,
            ignored: Vec::new(),
        }
    }
}

impl ResolvConf {
    pub fn parse(text: &str) -> ResolvConf {
        let mut rc = ResolvConf::default();
        let mut domain = None;
        for raw in text.lines() {
            let line = raw.split(['#', ';']).next().unwrap_or("").trim();
            let mut words = line.split_whitespace();
            let Some(key) = words.next() else { continue };
            match key {
                "nameserver" => match words.next().and_then(parse_nameserver) {
                    Some(addr) if rc.nameservers.len() < MAX_NAMESERVERS => {
                        rc.nameservers.push(addr)
                    }
                    Some(_) => rc
                        .ignored
                        .push(format!("{line} (glibc uses only the first 3)")),
                    None => rc.ignored.push(line.to_string()),
                },
                "search" => {
                    rc.search = words
                        .map(normalise_domain)
                        .filter(|d| !d.is_empty())
                        .collect()
                }
                "domain" => domain = words.next().map(normalise_domain),
                "options" => {
                    for opt in words {
                        rc.apply_option(opt);
                    }
                }
                _ => rc.ignored.push(line.to_string()),
            }
        }
        if rc.search.is_empty() {
            rc.search.extend(domain.filter(|d| !d.is_empty()));
        }
        rc
    }

    fn apply_option(&mut self, opt: &str) {
        let number = |prefix: &str| opt.strip_prefix(prefix).and_then(|v| v.parse::<u32>().ok());
        if let Some(t) = number("timeout:") {
            self.timeout_secs = t.clamp(1, 30);
        } else if let Some(a) = number("attempts:") {
            self.attempts = a.clamp(1, 5);
        } else if opt == "rotate" {
            self.rotate = true;
        }
    }

    pub fn uses_resolved_stub(&self) -> bool {
        self.nameservers.iter().any(|s| s.ip() == RESOLVED_STUB)
    }
}

fn normalise_domain(d: &str) -> String {
    d.trim_end_matches('.').to_ascii_lowercase()
}

/// A nameserver line's address: IPv4 or IPv6, with an optional numeric `%scope`.
fn parse_nameserver(s: &str) -> Option<SocketAddr> {
    let (addr, scope) = match s.split_once('%') {
        Some((a, scope)) => (a, scope.parse::<u32>().ok()),
        None => (s, None),
    };
    match addr.parse::<IpAddr>().ok()? {
        IpAddr::V6(v6) => Some(SocketAddr::V6(std::net::SocketAddrV6::new(
            v6,
            53,
            0,
            scope.unwrap_or(0),
        ))),
        ip => Some(SocketAddr::new(ip, 53)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_split_dns_layout() {
        let rc = ResolvConf::parse(
            "# generated\nnameserver 192.168.11.2\nnameserver 192.168.11.1 # general\n\
             search Corp.Example. lab.example\noptions timeout:1 attempts:3 rotate ndots:2\n",
        );
        assert_eq!(
            rc.nameservers,
            vec![
                "192.168.11.2:53".parse().unwrap(),
                "192.168.11.1:53".parse().unwrap()
            ]
        );
        assert_eq!(rc.search, vec!["corp.example", "lab.example"]);
        assert_eq!((rc.timeout_secs, rc.attempts, rc.rotate), (1, 3, true));
    }

    #[test]
    fn keeps_glibc_limits_and_defaults() {
        let rc = ResolvConf::parse(
            "nameserver 10.0.0.1\nnameserver ::1\nnameserver 10.0.0.3\nnameserver 10.0.0.4\n\
             nameserver bogus\ndomain home.arpa\noptions timeout:99 attempts:0\n",
        );
        assert_eq!(rc.nameservers.len(), 3);
        assert_eq!(rc.nameservers[1], "[::1]:53".parse().unwrap());
        assert_eq!(rc.search, vec!["home.arpa"]);
        assert_eq!((rc.timeout_secs, rc.attempts), (30, 1));
        assert_eq!(rc.ignored.len(), 2);
    }

    #[test]
    fn recognises_the_resolved_stub() {
        assert!(ResolvConf::parse("nameserver 127.0.0.53\n").uses_resolved_stub());
        assert!(!ResolvConf::parse("nameserver 127.0.0.1\n").uses_resolved_stub());
    }
}
