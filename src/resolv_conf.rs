//! The host's /etc/resolv.conf, read the way glibc 2.36 (Debian 12) reads it.
//!
//! This module owns the parsing of resolv.conf into [`ResolvConf`]: the nameservers glibc
//! would query, the search list, and the options that change how a query is sent. It mirrors
//! `res_vinit_1` and `res_setoptions` in glibc's resolv/res_init.c, plus the pieces those rely
//! on (`__inet_aton_exact` in resolv/inet_addr.c, `inet_pton6` in resolv/inet_pton.c,
//! `__inet6_scopeid_pton` in inet/inet6_scopeid_pton.c, and the MAXNS cut in
//! resolv/resolv_conf.c `update_from_conf`):
//!
//! - Lines are split at `\n` only (a `\r` stays part of the line) and end at a NUL byte.
//!   Only a `;` or `#` in the *first* column starts a comment; there are no trailing comments.
//! - A keyword counts only at the start of the line and only when a space or tab follows it
//!   (`MATCH`): ` nameserver x`, `nameserver10.0.0.1` and `Search x` are not keywords.
//! - `nameserver`: the address is the first word (cut at space or tab). It is an IPv4
//!   address as `inet_aton` reads it, but with nothing after it (so `127.1`, `0x7f.1` and
//!   `010.0.0.1` are accepted, `10.0.0.1x` is not), or else an IPv6 address up to an
//!   optional `%scope`. Rejected lines do not count towards the three servers used.
//! - `domain` and `search` each replace the search list; the last one wins. `domain` takes
//!   its first word; `search` takes every space/tab separated word, `#` included.
//! - `options` lines accumulate; options are matched by prefix, numbers are read with `atoi`,
//!   and unknown options are skipped silently by glibc.
//!
//! Not mirrored: the `LOCALDOMAIN` and `RES_OPTIONS` environment variables (they belong to
//! each glibc process, not to the host), and the defaults glibc substitutes when the file
//! names no nameserver or no search list; those are reported as
//! [`ResolvConf::nameservers_defaulted`] and [`ResolvConf::search_from_hostname`] instead.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

/// glibc uses at most this many nameservers (MAXNS), the first ones it accepted.
pub const MAX_NAMESERVERS: usize = 3;
/// The systemd-resolved stub listener.
pub const RESOLVED_STUB: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 53));

/// `RES_MAXNDOTS`: `ndots:` above this is cut to it.
const MAX_NDOTS: i32 = 15;
/// `RES_MAXRETRANS`: `timeout:` above this is cut to it.
const MAX_TIMEOUT_SECS: i32 = 30;
/// `RES_MAXRETRY`: `attempts:` above this is cut to it.
const MAX_ATTEMPTS: i32 = 5;
/// `NAMESERVER_PORT`.
const DNS_PORT: u16 = 53;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    /// The nameservers glibc queries, in file order: the first [`MAX_NAMESERVERS`] accepted
    /// `nameserver` lines. A link-local IPv6 server whose `%scope` could not be resolved keeps
    /// scope 0, as in glibc (queries to it then fail there too).
    pub nameservers: Vec<SocketAddr>,
    /// True when no `nameserver` line was accepted. glibc then queries 127.0.0.1
    /// (INADDR_LOOPBACK); this is left out of `nameservers` on purpose, because for virtdns
    /// that would usually be itself: the caller decides (virtdns keeps its last good list).
    pub nameservers_defaulted: bool,
    /// The search list from the last `search` or `domain` line, in order, duplicates kept.
    /// Each entry is lower-cased, with one leading dot (glibc's `res_nsearch` skips it) and
    /// trailing dots removed, for matching. Root entries (`.`) are understood but left out:
    /// for glibc they only mean "try the name as it is".
    pub search: Vec<String>,
    /// True when the file gives no search list; glibc then uses the host name's domain
    /// (everything after its first dot), which is not filled in here.
    pub search_from_hostname: bool,
    /// `options ndots:` as glibc applies it, default 1, at most 15.
    pub ndots: u32,
    /// glibc's per-try timeout in seconds (`options timeout:`), default 5, at most 30.
    /// `timeout:0` (or negative) is stored as 1: `res_send` waits at least one second.
    pub timeout_secs: u32,
    /// Rounds over the server list (`options attempts:`), default 2, at most 5. This is 0 after
    /// `attempts:0` (or negative), for which glibc sends no query at all and fails at once;
    /// the forwarder makes at least one round regardless.
    pub attempts: u32,
    /// `options rotate`.
    pub rotate: bool,
    /// `options edns0`.
    pub edns0: bool,
    /// `options use-vc`: glibc queries over TCP.
    pub use_vc: bool,
    /// `options no-tld-query` (or `no_tld_query`).
    pub no_tld_query: bool,
    /// `options single-request`.
    pub single_request: bool,
    /// `options single-request-reopen`.
    pub single_request_reopen: bool,
    /// `options trust-ad`.
    pub trust_ad: bool,
    /// `options no-aaaa` (new in glibc 2.36).
    pub no_aaaa: bool,
    /// `options no-reload`.
    pub no_reload: bool,
    /// What glibc skips or does not use, for the log: unknown lines, rejected or surplus
    /// nameservers, keyword lines without a value, and unknown options.
    pub ignored: Vec<String>,
}

impl Default for ResolvConf {
    fn default() -> Self {
        ResolvConf {
            nameservers: Vec::new(),
            nameservers_defaulted: false,
            search: Vec::new(),
            search_from_hostname: false,
            ndots: 1,
            timeout_secs: 5,
            attempts: 2,
            rotate: false,
            edns0: false,
            use_vc: false,
            no_tld_query: false,
            single_request: false,
            single_request_reopen: false,
            trust_ad: false,
            no_aaaa: false,
            no_reload: false,
            ignored: Vec::new(),
        }
    }
}

impl ResolvConf {
    /// Parses resolv.conf text, resolving `%interface` scopes with `if_nametoindex`.
    pub fn parse(text: &str) -> ResolvConf {
        Self::parse_with(text, &interface_index)
    }

    /// Parses resolv.conf text; `if_index` maps an interface name to its index (`None` when
    /// there is no such interface), so tests need not depend on the host's interfaces.
    pub fn parse_with(text: &str, if_index: &dyn Fn(&str) -> Option<u32>) -> ResolvConf {
        let mut rc = ResolvConf::default();
        // glibc's search list before our normalisation; it decides the hostname fallback.
        let mut search: Vec<&str> = Vec::new();
        let mut accepted = 0usize;
        for line in text.split('\n') {
            // C string functions stop at the first NUL that getline() left in the buffer.
            let line = line.split('\0').next().unwrap_or("");
            if line.starts_with([';', '#']) || line.trim_ascii().is_empty() {
                continue;
            }
            let shown = line.trim_ascii_end();
            if let Some(rest) = keyword(line, "domain") {
                match words(rest).next() {
                    Some(domain) => search = vec![domain],
                    None => rc.ignored.push(format!("{shown} (no domain given)")),
                }
            } else if let Some(rest) = keyword(line, "search") {
                if words(rest).next().is_none() {
                    rc.ignored.push(format!("{shown} (no domains given)"));
                } else {
                    search = words(rest).collect();
                }
            } else if let Some(rest) = keyword(line, "nameserver") {
                let word = words(rest).next().unwrap_or("");
                match parse_nameserver(word, if_index) {
                    Some(addr) => {
                        accepted += 1;
                        if accepted <= MAX_NAMESERVERS {
                            rc.nameservers.push(addr);
                        } else {
                            rc.ignored
                                .push(format!("{shown} (glibc uses only the first 3)"));
                        }
                    }
                    None => rc
                        .ignored
                        .push(format!("{shown} (not an address glibc accepts)")),
                }
            } else if keyword(line, "sortlist").is_some() {
                // Understood: it only orders gethostbyname's IPv4 answers, nothing we forward.
            } else if let Some(rest) = keyword(line, "options") {
                rc.apply_options(rest);
            } else {
                rc.ignored.push(shown.to_string());
            }
        }
        rc.nameservers_defaulted = accepted == 0;
        rc.search_from_hostname = search.is_empty();
        rc.search = search.into_iter().filter_map(normalise_domain).collect();
        rc
    }

    /// `res_setoptions`: words separated by spaces or tabs, each matched by prefix in
    /// glibc's order; a number is `atoi` of what follows the colon, up to the end of the line.
    fn apply_options(&mut self, args: &str) {
        let mut rest = args;
        loop {
            rest = rest.trim_start_matches([' ', '\t']);
            if rest.is_empty() {
                break;
            }
            let end = rest.find([' ', '\t']).unwrap_or(rest.len());
            let word = &rest[..end];
            if let Some(n) = rest.strip_prefix("ndots:").map(atoi) {
                // glibc keeps ndots in a 4-bit field of struct __res_state, hence the mask.
                self.ndots = if n > MAX_NDOTS { 15 } else { (n as u32) & 0xf };
            } else if let Some(n) = rest.strip_prefix("timeout:").map(atoi) {
                self.timeout_secs = n.clamp(1, MAX_TIMEOUT_SECS) as u32;
            } else if let Some(n) = rest.strip_prefix("attempts:").map(atoi) {
                self.attempts = n.clamp(0, MAX_ATTEMPTS) as u32;
            } else if let Some((_, flag)) = OPTION_FLAGS.iter().find(|(f, _)| word.starts_with(f)) {
                *flag(self) = true;
            } else {
                self.ignored
                    .push(format!("options {word} (unknown option)"));
            }
            rest = &rest[end..];
        }
    }

    pub fn uses_resolved_stub(&self) -> bool {
        self.nameservers.iter().any(|s| s.ip() == RESOLVED_STUB)
    }
}

type Flag = fn(&mut ResolvConf) -> &mut bool;

/// The flag options of glibc 2.36, in the order `res_setoptions` tries them (a word is matched
/// by prefix, so `single-request-reopen` must come before `single-request`).
const OPTION_FLAGS: [(&str, Flag); 10] = [
    ("rotate", |rc| &mut rc.rotate),
    ("edns0", |rc| &mut rc.edns0),
    ("single-request-reopen", |rc| &mut rc.single_request_reopen),
    ("single-request", |rc| &mut rc.single_request),
    ("no_tld_query", |rc| &mut rc.no_tld_query),
    ("no-tld-query", |rc| &mut rc.no_tld_query),
    ("no-reload", |rc| &mut rc.no_reload),
    ("use-vc", |rc| &mut rc.use_vc),
    ("trust-ad", |rc| &mut rc.trust_ad),
    ("no-aaaa", |rc| &mut rc.no_aaaa),
];

/// glibc's `MATCH`: `line` starts with `name` followed by a space or tab. Returns the rest,
/// starting with that space or tab.
fn keyword<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.strip_prefix(name)
        .filter(|rest| rest.starts_with([' ', '\t']))
}

/// The words of a line: runs of anything but space and tab.
fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split([' ', '\t']).filter(|w| !w.is_empty())
}

/// A search entry as glibc's `res_nsearch` uses it, normalised for matching: one leading
/// dot is skipped there; what is then empty is the root, which we leave out.
fn normalise_domain(d: &str) -> Option<String> {
    let d = d.strip_prefix('.').unwrap_or(d);
    if d.is_empty() {
        return None;
    }
    Some(d.trim_end_matches('.').to_ascii_lowercase())
}

/// `atoi`, as glibc implements it: `(int) strtol (s, NULL, 10)`. Leading C white space and
/// a sign are allowed, the value saturates at the `long` range and is then truncated.
fn atoi(s: &str) -> i32 {
    let s = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut magnitude: i128 = 0;
    for d in digits.bytes().take_while(u8::is_ascii_digit) {
        magnitude = (magnitude * 10 + i128::from(d - b'0')).min(i128::from(u64::MAX));
    }
    let value = if negative { -magnitude } else { magnitude };
    let long = value.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    long as i32
}

/// A `nameserver` word as glibc reads it: an exact `inet_aton` IPv4 address, or else an
/// IPv6 address before the first `%`, with the scope after it resolved like
/// `__inet6_scopeid_pton` (a failed scope leaves 0, the line is still used).
fn parse_nameserver(word: &str, if_index: &dyn Fn(&str) -> Option<u32>) -> Option<SocketAddr> {
    if let Some(v4) = inet_aton_exact(word) {
        return Some(SocketAddr::new(IpAddr::V4(v4), DNS_PORT));
    }
    let (addr, scope) = match word.split_once('%') {
        Some((addr, scope)) => (addr, Some(scope)),
        None => (word, None),
    };
    // Rust's IPv6 syntax matches glibc's inet_pton6 (checked against the C library in the
    // tests below, where it is available).
    let v6: Ipv6Addr = addr.parse().ok()?;
    let scope_id = scope.map_or(0, |s| scope_id(&v6, s, if_index));
    Some(SocketAddr::V6(SocketAddrV6::new(v6, DNS_PORT, 0, scope_id)))
}

/// `__inet6_scopeid_pton`: for link-local unicast and node- or link-local multicast
/// addresses an interface name is tried first; then a decimal number up to `u32::MAX`;
/// anything else gives 0.
fn scope_id(addr: &Ipv6Addr, scope: &str, if_index: &dyn Fn(&str) -> Option<u32>) -> u32 {
    let octets = addr.octets();
    let link_scoped = (octets[0] == 0xfe && octets[1] & 0xc0 == 0x80)
        || (octets[0] == 0xff && matches!(octets[1] & 0x0f, 1 | 2));
    if link_scoped && let Some(index) = if_index(scope).filter(|&i| i != 0) {
        return index;
    }
    if scope.bytes().all(|b| b.is_ascii_digit()) {
        scope.parse().unwrap_or(0)
    } else {
        0
    }
}

/// The interface index of `name`, from the kernel.
fn interface_index(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string that lives across the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// `__inet_aton_exact`: `inet_aton` with nothing allowed after the address. One to four
/// parts separated by dots, each starting with a digit and read as C reads an unsigned
/// number (`0x` hex, leading `0` octal, else decimal); all but the last are one byte, the
/// last fills the remaining bytes (`a`, `a.b` with b 24 bits, `a.b.c` with c 16 bits).
fn inet_aton_exact(s: &str) -> Option<Ipv4Addr> {
    let mut bytes = [0u8; 4];
    let mut stored = 0;
    let mut rest = s;
    loop {
        if !rest.starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        let (value, after) = c_unsigned(rest)?;
        rest = after;
        match rest.strip_prefix('.') {
            Some(after_dot) => {
                if stored == 3 || value > 0xff {
                    return None;
                }
                bytes[stored] = value as u8;
                stored += 1;
                rest = after_dot;
            }
            None => {
                if !rest.is_empty() || value > u32::MAX >> (8 * stored) {
                    return None;
                }
                let high = u32::from_be_bytes(bytes);
                return Some(Ipv4Addr::from(high | value));
            }
        }
    }
}

/// `strtoul (s, &end, 0)` for `s` starting with a digit: the value (`None` above `u32::MAX`,
/// where `inet_aton` fails anyway) and the unread rest.
fn c_unsigned(s: &str) -> Option<(u32, &str)> {
    let (radix, digits) = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) if hex.starts_with(|c: char| c.is_ascii_hexdigit()) => (16, hex),
        // A bare `0x` is the number 0 followed by `x`.
        Some(_) => return Some((0, &s[1..])),
        None if s.starts_with('0') => (8, s),
        None => (10, s),
    };
    let len = digits
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(digits.len());
    let mut value: u64 = 0;
    for c in digits[..len].chars() {
        value = value * u64::from(radix) + u64::from(c.to_digit(radix)?);
        if value > u64::from(u32::MAX) {
            return None;
        }
    }
    Some((value as u32, &digits[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One resolv.conf text and the complete result expected from it.
    struct Case {
        name: &'static str,
        text: &'static str,
        nameservers: &'static [&'static str],
        search: &'static [&'static str],
        ignored: &'static [&'static str],
        /// Changes from the defaults in the other fields.
        adjust: fn(&mut ResolvConf),
    }

    const NONE: Case = Case {
        name: "",
        text: "",
        nameservers: &[],
        search: &[],
        ignored: &[],
        adjust: |_| {},
    };

    /// Deterministic interfaces for the tests: eth0 is 2, br0 is 7, nothing else exists.
    fn fake_interfaces(name: &str) -> Option<u32> {
        match name {
            "eth0" => Some(2),
            "br0" => Some(7),
            _ => None,
        }
    }

    const CASES: &[Case] = &[
        Case {
            name: "split-DNS layout",
            text: "# generated\nnameserver 192.168.11.2\nnameserver 192.168.11.1 # general\n\
                   search Corp.Example. lab.example\noptions timeout:1 attempts:3 rotate ndots:2\n",
            nameservers: &["192.168.11.2:53", "192.168.11.1:53"],
            search: &["corp.example", "lab.example"],
            adjust: |rc| {
                (rc.timeout_secs, rc.attempts, rc.rotate, rc.ndots) = (1, 3, true, 2);
            },
            ..NONE
        },
        Case {
            name: "empty file: glibc would use 127.0.0.1 and the host name's domain",
            text: "",
            ..NONE
        },
        Case {
            name: "blank and white-space-only lines are skipped silently",
            text: "\n   \n\t\nnameserver 10.0.0.1\n\n",
            nameservers: &["10.0.0.1:53"],
            ..NONE
        },
        Case {
            name: "comments only in the first column",
            text: "# hash\n; semicolon\n #indented\n\t; indented\nnameserver 10.0.0.1\n",
            nameservers: &["10.0.0.1:53"],
            ignored: &[" #indented", "\t; indented"],
            ..NONE
        },
        Case {
            name: "nameserver: the address ends at a space or tab, not at # or ;",
            text: "nameserver 10.0.0.1 # general\nnameserver 10.0.0.2\t; lab\n\
                   nameserver 10.0.0.3#x\nnameserver 10.0.0.4;x\n",
            nameservers: &["10.0.0.1:53", "10.0.0.2:53"],
            ignored: &[
                "nameserver 10.0.0.3#x (not an address glibc accepts)",
                "nameserver 10.0.0.4;x (not an address glibc accepts)",
            ],
            ..NONE
        },
        Case {
            name: "nameserver: words after the address are ignored",
            text: "nameserver 10.0.0.1 extra words\n",
            nameservers: &["10.0.0.1:53"],
            ..NONE
        },
        Case {
            name: "search: a trailing comment becomes search entries, as in glibc",
            text: "search corp.example # vpn\n",
            search: &["corp.example", "#", "vpn"],
            ..NONE
        },
        Case {
            name: "domain: only the first word counts",
            text: "domain corp.example # vpn\n",
            search: &["corp.example"],
            ..NONE
        },
        Case {
            name: "options: a trailing comment is more options, and known ones apply",
            text: "options ndots:2 # was timeout:1\n",
            ignored: &["options # (unknown option)", "options was (unknown option)"],
            adjust: |rc| (rc.ndots, rc.timeout_secs) = (2, 1),
            ..NONE
        },
        Case {
            name: "a keyword must be followed by a space or tab",
            text: "nameserver10.0.0.1\nsearchcorp.example\nnameserver\t10.0.0.2\n\
                   domain\noptions\nsearch\tlab.example\n",
            nameservers: &["10.0.0.2:53"],
            search: &["lab.example"],
            ignored: &[
                "nameserver10.0.0.1",
                "searchcorp.example",
                "domain",
                "options",
            ],
            ..NONE
        },
        Case {
            name: "keywords must start the line and are case-sensitive",
            text: " nameserver 10.0.0.1\n\tsearch lab.example\nNameserver 10.0.0.2\n\
                   SEARCH lab.example\nnameserver 10.0.0.3\n",
            nameservers: &["10.0.0.3:53"],
            ignored: &[
                " nameserver 10.0.0.1",
                "\tsearch lab.example",
                "Nameserver 10.0.0.2",
                "SEARCH lab.example",
            ],
            ..NONE
        },
        Case {
            name: "domain after search wins",
            text: "search a.example b.example\ndomain home.arpa\n",
            search: &["home.arpa"],
            ..NONE
        },
        Case {
            name: "search after domain wins",
            text: "domain home.arpa\nsearch a.example b.example\n",
            search: &["a.example", "b.example"],
            ..NONE
        },
        Case {
            name: "the last of several search lines wins",
            text: "search a.example\nsearch b.example\n",
            search: &["b.example"],
            ..NONE
        },
        Case {
            name: "search or domain without a value changes nothing",
            text: "search a.example\nsearch   \ndomain\t\n",
            search: &["a.example"],
            ignored: &["search (no domains given)", "domain (no domain given)"],
            ..NONE
        },
        Case {
            name: "search: spaces and tabs separate, duplicates are kept, no 6-domain limit",
            text: "search  a.example\tb.example \t c.example d.example e.example f.example \
                   g.example a.example \n",
            search: &[
                "a.example",
                "b.example",
                "c.example",
                "d.example",
                "e.example",
                "f.example",
                "g.example",
                "a.example",
            ],
            ..NONE
        },
        Case {
            name: "search: lower-cased, one leading and the trailing dots dropped",
            text: "search Corp.Example. .lab.example ..odd.example x..\n",
            search: &["corp.example", "lab.example", ".odd.example", "x"],
            ..NONE
        },
        Case {
            name: "search: the root is understood but left out",
            text: "search . corp.example\n",
            search: &["corp.example"],
            ..NONE
        },
        Case {
            name: "domain .: the search list is the root, so no host name fallback",
            text: "domain .\n",
            adjust: |rc| rc.search_from_hostname = false,
            ..NONE
        },
        Case {
            name: "the first three accepted nameservers are used",
            text: "nameserver 10.0.0.1\nnameserver ::1\nnameserver 10.0.0.3\n\
                   nameserver 10.0.0.4\n",
            nameservers: &["10.0.0.1:53", "[::1]:53", "10.0.0.3:53"],
            ignored: &["nameserver 10.0.0.4 (glibc uses only the first 3)"],
            ..NONE
        },
        Case {
            name: "rejected nameservers do not count towards the three",
            text: "nameserver bogus\nnameserver 10.0.0.1\nnameserver \nnameserver 10.0.0.256\n\
                   nameserver 10.0.0.2\nnameserver 10.0.0.3\n",
            nameservers: &["10.0.0.1:53", "10.0.0.2:53", "10.0.0.3:53"],
            ignored: &[
                "nameserver bogus (not an address glibc accepts)",
                "nameserver (not an address glibc accepts)",
                "nameserver 10.0.0.256 (not an address glibc accepts)",
            ],
            ..NONE
        },
        Case {
            name: "IPv4 as inet_aton reads it: short forms",
            text: "nameserver 127.1\nnameserver 10.258\nnameserver 167772161\n",
            nameservers: &["127.0.0.1:53", "10.0.1.2:53", "10.0.0.1:53"],
            ..NONE
        },
        Case {
            name: "IPv4 as inet_aton reads it: hex and octal parts",
            text: "nameserver 0x7f.0.0.2\nnameserver 010.0.0.1\nnameserver 0XA.0x0.00.0x01\n",
            nameservers: &["127.0.0.2:53", "8.0.0.1:53", "10.0.0.1:53"],
            ..NONE
        },
        Case {
            name: "IPv4 with trailing garbage or out of range is rejected",
            text: "nameserver 10.0.0.1x\nnameserver 10.0.0.1.\nnameserver 1.2.3.4.5\n\
                   nameserver 08.0.0.1\nnameserver 10.0.0.1%eth0\nnameserver 1.2.65536\n\
                   nameserver 4294967296\nnameserver 0x\n",
            ignored: &[
                "nameserver 10.0.0.1x (not an address glibc accepts)",
                "nameserver 10.0.0.1. (not an address glibc accepts)",
                "nameserver 1.2.3.4.5 (not an address glibc accepts)",
                "nameserver 08.0.0.1 (not an address glibc accepts)",
                "nameserver 10.0.0.1%eth0 (not an address glibc accepts)",
                "nameserver 1.2.65536 (not an address glibc accepts)",
                "nameserver 4294967296 (not an address glibc accepts)",
                "nameserver 0x (not an address glibc accepts)",
            ],
            ..NONE
        },
        Case {
            name: "IPv6, IPv4-mapped IPv6, and a numeric scope on a global address",
            text: "nameserver 2001:db8::53\nnameserver ::ffff:10.0.0.1\n\
                   nameserver 2001:db8::1%5\n",
            nameservers: &[
                "[2001:db8::53]:53",
                "[::ffff:10.0.0.1]:53",
                "[2001:db8::1%5]:53",
            ],
            ..NONE
        },
        Case {
            name: "link-local scope by interface name or number",
            text: "nameserver fe80::1%eth0\nnameserver fe80::2%9\nnameserver ff02::fb%br0\n",
            nameservers: &["[fe80::1%2]:53", "[fe80::2%9]:53", "[ff02::fb%7]:53"],
            ..NONE
        },
        Case {
            name: "an unresolvable scope leaves 0 and the server is still used",
            text: "nameserver fe80::1%nosuch0\nnameserver fe80::2%\n\
                   nameserver fe80::3%4294967296\n",
            nameservers: &["[fe80::1]:53", "[fe80::2]:53", "[fe80::3]:53"],
            ..NONE
        },
        Case {
            name: "interface names are looked up only for link-local scopes",
            text: "nameserver 2001:db8::1%eth0\nnameserver ff05::1%eth0\nnameserver ff01::1%eth0\n",
            nameservers: &["[2001:db8::1]:53", "[ff05::1]:53", "[ff01::1%2]:53"],
            ..NONE
        },
        Case {
            name: "IPv6 that glibc rejects",
            text: "nameserver %eth0\nnameserver fe80::1::2\nnameserver 1:2:3:4:5:6:7:8:9\n\
                   nameserver 12345::1\n",
            ignored: &[
                "nameserver %eth0 (not an address glibc accepts)",
                "nameserver fe80::1::2 (not an address glibc accepts)",
                "nameserver 1:2:3:4:5:6:7:8:9 (not an address glibc accepts)",
                "nameserver 12345::1 (not an address glibc accepts)",
            ],
            ..NONE
        },
        Case {
            name: "CRLF: the \\r stays in the word, so glibc rejects the address",
            text: "nameserver 10.0.0.1\r\nsearch a.example\r\nnameserver 10.0.0.2 \r\n",
            nameservers: &["10.0.0.2:53"],
            search: &["a.example\r"],
            ignored: &["nameserver 10.0.0.1 (not an address glibc accepts)"],
            ..NONE
        },
        Case {
            name: "a NUL ends the line",
            text: "nameserver 10.0.0.1\0junk\nsearch a.example\0b.example\n",
            nameservers: &["10.0.0.1:53"],
            search: &["a.example"],
            ..NONE
        },
        Case {
            name: "options: upper limits",
            text: "options ndots:20 timeout:99 attempts:9\n",
            adjust: |rc| (rc.ndots, rc.timeout_secs, rc.attempts) = (15, 30, 5),
            ..NONE
        },
        Case {
            name: "options: zero",
            text: "options ndots:0 timeout:0 attempts:0\n",
            adjust: |rc| (rc.ndots, rc.timeout_secs, rc.attempts) = (0, 1, 0),
            ..NONE
        },
        Case {
            name: "options: negative numbers",
            text: "options ndots:-1 timeout:-3 attempts:-2\n",
            adjust: |rc| (rc.ndots, rc.timeout_secs, rc.attempts) = (15, 1, 0),
            ..NONE
        },
        Case {
            name: "options: numbers are read with atoi",
            text: "options ndots:2x timeout:\t7 attempts:junk\n",
            ignored: &["options 7 (unknown option)"],
            adjust: |rc| (rc.ndots, rc.timeout_secs, rc.attempts) = (2, 7, 0),
            ..NONE
        },
        Case {
            name: "options: atoi truncates what strtol read to an int",
            text: "options ndots:4294967297 timeout:+4\n",
            adjust: |rc| (rc.ndots, rc.timeout_secs) = (1, 4),
            ..NONE
        },
        Case {
            name: "options: every flag glibc 2.36 knows",
            text: "options rotate edns0 single-request use-vc no-tld-query trust-ad no-aaaa \
                   no-reload\n",
            adjust: |rc| {
                rc.rotate = true;
                rc.edns0 = true;
                rc.single_request = true;
                rc.use_vc = true;
                rc.no_tld_query = true;
                rc.trust_ad = true;
                rc.no_aaaa = true;
                rc.no_reload = true;
            },
            ..NONE
        },
        Case {
            name: "options: single-request-reopen alone, and no_tld_query spelling",
            text: "options single-request-reopen no_tld_query\n",
            adjust: |rc| (rc.single_request_reopen, rc.no_tld_query) = (true, true),
            ..NONE
        },
        Case {
            name: "options: flags match by prefix",
            text: "options rotated edns0x use-vcs\n",
            adjust: |rc| (rc.rotate, rc.edns0, rc.use_vc) = (true, true, true),
            ..NONE
        },
        Case {
            name: "options: unknown ones (inet6, gone since 2.30; debug, since 2.26) are skipped",
            text: "options inet6 debug ndots=3 Rotate\n",
            ignored: &[
                "options inet6 (unknown option)",
                "options debug (unknown option)",
                "options ndots=3 (unknown option)",
                "options Rotate (unknown option)",
            ],
            ..NONE
        },
        Case {
            name: "options: lines accumulate and the later number wins",
            text: "options timeout:1 rotate\noptions\ttimeout:3  edns0\n",
            adjust: |rc| (rc.timeout_secs, rc.rotate, rc.edns0) = (3, true, true),
            ..NONE
        },
        Case {
            name: "sortlist is understood, unknown keywords are not",
            text: "sortlist 10.0.0.0/255.0.0.0 192.168.1.0\nlookup file bind\n\
                   nameserver 10.0.0.1\n",
            nameservers: &["10.0.0.1:53"],
            ignored: &["lookup file bind"],
            ..NONE
        },
        Case {
            name: "no accepted nameserver: glibc's default, left to the caller",
            text: "nameserver bogus\nsearch corp.example\n",
            search: &["corp.example"],
            ignored: &["nameserver bogus (not an address glibc accepts)"],
            ..NONE
        },
    ];

    #[test]
    fn parses_like_glibc() {
        for case in CASES {
            let mut expect = ResolvConf {
                nameservers: case
                    .nameservers
                    .iter()
                    .map(|s| s.parse().unwrap())
                    .collect(),
                nameservers_defaulted: case.nameservers.is_empty(),
                search: case.search.iter().map(|s| s.to_string()).collect(),
                search_from_hostname: case.search.is_empty(),
                ignored: case.ignored.iter().map(|s| s.to_string()).collect(),
                ..ResolvConf::default()
            };
            (case.adjust)(&mut expect);
            let got = ResolvConf::parse_with(case.text, &fake_interfaces);
            assert_eq!(got, expect, "case: {}", case.name);
        }
    }

    #[test]
    fn case_names_are_unique() {
        let mut names: Vec<_> = CASES.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CASES.len());
    }

    #[test]
    fn parse_resolves_interface_names_on_this_host() {
        // SAFETY: a NUL-terminated literal.
        let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        assert_ne!(lo, 0, "no loopback interface");
        let rc = ResolvConf::parse("nameserver fe80::1%lo\n");
        let SocketAddr::V6(v6) = rc.nameservers[0] else {
            panic!("not IPv6")
        };
        assert_eq!(v6.scope_id(), lo);
        assert_eq!(interface_index("no-such-interface-xyz"), None);
    }

    #[test]
    fn recognises_the_resolved_stub() {
        assert!(ResolvConf::parse("nameserver 127.0.0.53\n").uses_resolved_stub());
        assert!(!ResolvConf::parse("nameserver 127.0.0.1\n").uses_resolved_stub());
    }

    /// Differential checks of the address and number readers against the C library itself.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    mod against_glibc {
        use super::super::{atoi, inet_aton_exact};
        use std::ffi::CString;
        use std::net::{Ipv4Addr, Ipv6Addr};

        unsafe extern "C" {
            fn inet_aton(cp: *const libc::c_char, inp: *mut libc::in_addr) -> libc::c_int;
            fn inet_pton(
                af: libc::c_int,
                src: *const libc::c_char,
                dst: *mut libc::c_void,
            ) -> libc::c_int;
        }

        /// A small deterministic generator (xorshift64).
        struct Rng(u64);
        impl Rng {
            fn next(&mut self, n: usize) -> usize {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                (self.0 % n as u64) as usize
            }
        }

        /// The seeds, each mutated 0 to 3 times with characters from `alphabet`.
        fn corpus(seeds: &[&str], alphabet: &[u8], count: usize) -> Vec<String> {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            let mut out: Vec<String> = seeds.iter().map(|s| s.to_string()).collect();
            for _ in 0..count {
                let mut s = seeds[rng.next(seeds.len())].as_bytes().to_vec();
                for _ in 0..rng.next(4) {
                    let at = rng.next(s.len() + 1);
                    let c = alphabet[rng.next(alphabet.len())];
                    match rng.next(3) {
                        0 => s.insert(at, c),
                        1 if at < s.len() => s[at] = c,
                        _ if at < s.len() => {
                            s.remove(at);
                        }
                        _ => s.push(c),
                    }
                }
                out.push(String::from_utf8(s).unwrap());
            }
            out
        }

        /// glibc's `__inet_aton_exact` is `inet_aton` accepting with nothing left over; as
        /// every part starts with a digit, that is `inet_aton` on a word without white space.
        fn glibc_aton_exact(s: &str) -> Option<Ipv4Addr> {
            if s.bytes().any(|b| b.is_ascii_whitespace() || b == 0x0b) {
                return None;
            }
            let c = CString::new(s).unwrap();
            let mut out = libc::in_addr { s_addr: 0 };
            // SAFETY: a valid C string and a valid out pointer.
            let ok = unsafe { inet_aton(c.as_ptr(), &mut out) };
            (ok == 1).then(|| Ipv4Addr::from(u32::from_be(out.s_addr)))
        }

        fn glibc_pton6(s: &str) -> Option<Ipv6Addr> {
            let c = CString::new(s).unwrap();
            let mut out = [0u8; 16];
            // SAFETY: a valid C string and a 16-byte out buffer.
            let ok = unsafe { inet_pton(libc::AF_INET6, c.as_ptr(), out.as_mut_ptr().cast()) };
            (ok == 1).then(|| Ipv6Addr::from(out))
        }

        #[test]
        fn ipv4_reader_matches_inet_aton() {
            let seeds = [
                "10.0.0.1",
                "127.1",
                "0x7f.1",
                "010.0.0.1",
                "4294967295",
                "1.2.65535",
                "1.16777215",
                "0",
                "0x",
                "0xffffffff",
                "255.255.255.255",
                "1.2.3.4.5",
                "08.1.2.3",
                "00000000001",
                "99999999999999999999999",
                "0x0000000000000000000001",
                "1..2",
                ".1.2.3",
            ];
            for s in corpus(&seeds, b"0123456789xXabcdefg.. +-", 40_000) {
                assert_eq!(inet_aton_exact(&s), glibc_aton_exact(&s), "{s:?}");
            }
        }

        #[test]
        fn ipv6_syntax_matches_inet_pton() {
            let seeds = [
                "::",
                "::1",
                "fe80::1",
                "2001:db8::53",
                "1:2:3:4:5:6:7:8",
                "1:2:3:4:5:6:7::",
                "::2:3:4:5:6:7:8",
                "::ffff:10.0.0.1",
                "1:2:3:4:5:6:1.2.3.4",
                "0001:02::0003",
                "ff02::fb",
                "1::2::3",
                ":1::",
                "1:",
                "::1.2.3",
                "::01.2.3.4",
                "a:b:c:d:e:f:0:1.2",
            ];
            for s in corpus(&seeds, b"0123456789abcdefABCDEFg::..", 60_000) {
                assert_eq!(s.parse::<Ipv6Addr>().ok(), glibc_pton6(&s), "{s:?}");
            }
        }

        #[test]
        fn atoi_matches_the_c_library() {
            let seeds = [
                "1",
                "-1",
                "+7",
                " \t\r\x0b\x0c\n12",
                "15x",
                "",
                "x",
                "4294967297",
                "9223372036854775807",
                "9223372036854775808",
                "-9223372036854775809",
                "99999999999999999999999",
                "- 3",
                "--3",
            ];
            for s in corpus(&seeds, b"0123456789 -+x\t", 20_000) {
                let c = CString::new(s.as_str()).unwrap();
                // SAFETY: a valid C string.
                let expect = unsafe { libc::atoi(c.as_ptr()) };
                assert_eq!(atoi(&s), expect, "{s:?}");
            }
        }
    }
}
