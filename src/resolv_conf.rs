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
pub(crate) const MAX_NAMESERVERS: usize = 3;
/// The systemd-resolved stub listener.
pub(crate) const RESOLVED_STUB: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 53));

/// `RES_MAXNDOTS`: `ndots:` above this is cut to it.
const MAX_NDOTS: i32 = 15;
/// `RES_MAXRETRANS`: `timeout:` above this is cut to it.
const MAX_TIMEOUT_SECS: i32 = 30;
/// `RES_MAXRETRY`: `attempts:` above this is cut to it.
const MAX_ATTEMPTS: i32 = 5;
/// `NAMESERVER_PORT`.
const DNS_PORT: u16 = 53;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolvConf {
    /// The nameservers glibc queries, in file order: the first [`MAX_NAMESERVERS`] accepted
    /// `nameserver` lines. A link-local IPv6 server whose `%scope` could not be resolved keeps
    /// scope 0, as in glibc (queries to it then fail there too).
    pub(crate) nameservers: Vec<SocketAddr>,
    /// True when no `nameserver` line was accepted. glibc then queries 127.0.0.1
    /// (INADDR_LOOPBACK); this is left out of `nameservers` on purpose, because for virtdns
    /// that would usually be itself: the caller decides (virtdns keeps its last good list).
    pub(crate) nameservers_defaulted: bool,
    /// The search list from the last `search` or `domain` line, in order, duplicates kept.
    /// Each entry is lower-cased, with one leading dot (glibc's `res_nsearch` skips it) and
    /// trailing dots removed, for matching. Root entries (`.`) are understood but left out:
    /// for glibc they only mean "try the name as it is".
    pub(crate) search: Vec<String>,
    /// True when the file gives no search list; glibc then uses the host name's domain
    /// (everything after its first dot), which is not filled in here.
    pub(crate) search_from_hostname: bool,
    /// `options ndots:` as glibc applies it, default 1, at most 15.
    pub(crate) ndots: u32,
    /// glibc's per-try timeout in seconds (`options timeout:`), default 5, at most 30.
    /// `timeout:0` (or negative) is stored as 1: `res_send` waits at least one second.
    pub(crate) timeout_secs: u32,
    /// Rounds over the server list (`options attempts:`), default 2, at most 5. This is 0 after
    /// `attempts:0` (or negative), for which glibc sends no query at all and fails at once;
    /// the forwarder makes at least one round regardless.
    pub(crate) attempts: u32,
    /// `options rotate`.
    pub(crate) rotate: bool,
    /// `options edns0`.
    pub(crate) edns0: bool,
    /// `options use-vc`: glibc queries over TCP.
    pub(crate) use_vc: bool,
    /// `options no-tld-query` (or `no_tld_query`).
    pub(crate) no_tld_query: bool,
    /// `options single-request`.
    pub(crate) single_request: bool,
    /// `options single-request-reopen`.
    pub(crate) single_request_reopen: bool,
    /// `options trust-ad`.
    pub(crate) trust_ad: bool,
    /// `options no-aaaa` (new in glibc 2.36).
    pub(crate) no_aaaa: bool,
    /// `options no-reload`.
    pub(crate) no_reload: bool,
    /// What glibc skips or does not use, for the log: unknown lines, rejected or surplus
    /// nameservers, keyword lines without a value, and unknown options.
    pub(crate) ignored: Vec<String>,
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
    pub(crate) fn parse(text: &str) -> ResolvConf {
        Self::parse_with(text, &interface_index)
    }

    /// Parses resolv.conf text; `if_index` maps an interface name to its index (`None` when
    /// there is no such interface), so tests need not depend on the host's interfaces.
    pub(crate) fn parse_with(text: &str, if_index: &dyn Fn(&str) -> Option<u32>) -> ResolvConf {
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

    /// Reads and parses `path`; None if it cannot be read. Lines glibc ignores are logged
    /// at debug level.
    pub(crate) fn read(path: &std::path::Path) -> Option<ResolvConf> {
        let text = std::fs::read_to_string(path).ok()?;
        let rc = ResolvConf::parse(&text);
        for line in &rc.ignored {
            tracing::debug!(path = %path.display(), line, "resolv.conf line ignored");
        }
        Some(rc)
    }

    pub(crate) fn uses_resolved_stub(&self) -> bool {
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
    let index = crate::sys::if_nametoindex(&name);
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
mod tests;
