//! resolv.conf as glibc 2.36 reads it: a table of cases, and the C library itself as the
//! oracle for address and number syntax.
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
    let lo = crate::sys::if_nametoindex(c"lo");
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
    use crate::sys::libc_oracle;
    use std::ffi::CString;
    use std::net::{Ipv4Addr, Ipv6Addr};

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
        libc_oracle::aton(&CString::new(s).unwrap())
    }

    fn glibc_pton6(s: &str) -> Option<Ipv6Addr> {
        libc_oracle::pton6(&CString::new(s).unwrap())
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
            let expect = libc_oracle::atoi(&CString::new(s.as_str()).unwrap());
            assert_eq!(atoi(&s), expect, "{s:?}");
        }
    }
}
