//! DNS packet bytes, read and patched in place (RFC 1035 4.1, RFC 6891 6.1).
//!
//! This owns everything the hot path needs from a packet: header fields, the question (as a
//! lower-cased cache key, and its spelling: random case on the way upstream, the client's on
//! the way back), the OPT record and its options (the COOKIE), and where every TTL sits so it
//! can be aged in place.
//! It is written by hand because hickory-proto only decodes and encodes whole messages, which
//! the cache-hit and forwarding paths must not pay for. Full decoding happens only where local
//! answers are built (`dns::local`).
//!
//! ```text
//!                                 1  1  1  1  1  1
//!   0  1  2  3  4  5  6  7  8  9  0  1  2  3  4  5
//! +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
//! |                      ID                       |
//! |QR|   Opcode  |AA|TC|RD|RA| Z|AD|CD|   RCODE   |
//! |                    QDCOUNT                    |
//! |                    ANCOUNT                    |
//! |                    NSCOUNT                    |
//! |                    ARCOUNT                    |
//! +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
//! ```

use std::ops::Range;
use thiserror::Error;

/// Size of the fixed DNS header (RFC 1035 4.1.1).
pub const HEADER_LEN: usize = 12;
/// Largest name in wire form (RFC 1035 2.3.4).
pub(crate) const MAX_NAME_LEN: usize = 255;
/// What we advertise upstream and to clients (DNS Flag Day 2020).
pub const EDNS_PAYLOAD: u16 = 1232;
/// Size of an OPT record without options.
pub(crate) const OPT_LEN: usize = 11;

/// RR type A: an IPv4 address (RFC 1035).
pub const TYPE_A: u16 = 1;
/// RR type NS: a zone's name server (RFC 1035).
pub const TYPE_NS: u16 = 2;
/// RR type CNAME: the canonical name of an alias (RFC 1035).
pub const TYPE_CNAME: u16 = 5;
/// RR type SOA: the start of a zone's authority (RFC 1035).
pub const TYPE_SOA: u16 = 6;
/// RR type PTR: the name an address points to (RFC 1035).
pub const TYPE_PTR: u16 = 12;
/// RR type AAAA: an IPv6 address (RFC 3596).
pub const TYPE_AAAA: u16 = 28;
/// RR type OPT: the EDNS pseudo-record (RFC 6891).
pub const TYPE_OPT: u16 = 41;
/// TSIG (RFC 8945): a transaction signature, always the last additional record.
pub const TYPE_TSIG: u16 = 250;
pub(crate) const CLASS_IN: u16 = 1;
/// EDNS option COOKIE (RFC 7873 4): an 8-byte client cookie, then 8 to 32 bytes of the
/// server's.
pub(crate) const OPTION_COOKIE: u16 = 10;
/// Extended RCODE BADCOOKIE (RFC 7873 8): header code 7, OPT high bits 1.
pub(crate) const BADCOOKIE: u16 = 23;

pub use crate::dns::rcode::Rcode;
/// Extended RCODE 16 (BADVERS, RFC 6891), carried in the OPT TTL's high byte as 1.
pub(crate) const BADVERS_HIGH: u8 = 1;

/// Why a packet could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than a DNS header.
    #[error("packet shorter than a DNS header")]
    Short,
    /// A name runs past the end of the packet, or is malformed.
    #[error("a name runs past the end of the packet or is malformed")]
    BadName,
    /// A record runs past the end of the packet.
    #[error("a record runs past the end of the packet")]
    Truncated,
    /// More than one OPT record.
    #[error("more than one OPT record")]
    DuplicateOpt,
    /// An OPT record outside the additional section, or not owned by the root.
    #[error("an OPT record outside the additional section or not owned by the root")]
    MisplacedOpt,
    /// A compression pointer in the question, which this reader does not follow.
    #[error("a compression pointer in the question")]
    CompressedQuestion,
    /// The packet is a response, not a query.
    #[error("the packet is a response, not a query")]
    NotQuery,
    /// An opcode other than QUERY (0).
    #[error("opcode {0} is not QUERY")]
    Opcode(u8),
    /// A question count other than one.
    #[error("{0} questions; exactly one is supported")]
    QuestionCount(u16),
}

// ---- header ---------------------------------------------------------------------------------

/// The message ID. Panics if `p` is shorter than a header, as every header accessor here
/// does: callers check the length first.
pub fn id(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[0], p[1]])
}
/// Sets the message ID.
pub fn set_id(p: &mut [u8], id: u16) {
    p[0..2].copy_from_slice(&id.to_be_bytes());
}
/// Whether QR is set: the message is a response.
pub fn is_response(p: &[u8]) -> bool {
    p[2] & 0x80 != 0
}
pub(crate) fn opcode(p: &[u8]) -> u8 {
    (p[2] >> 3) & 0x0f
}
pub(crate) fn aa(p: &[u8]) -> bool {
    p[2] & 0x04 != 0
}
/// Sets or clears AA (Authoritative Answer).
pub(crate) fn set_aa(p: &mut [u8], on: bool) {
    p[2] = (p[2] & !0x04) | if on { 0x04 } else { 0 };
}
pub(crate) fn tc(p: &[u8]) -> bool {
    p[2] & 0x02 != 0
}
pub(crate) fn rd(p: &[u8]) -> bool {
    p[2] & 0x01 != 0
}
pub(crate) fn ra(p: &[u8]) -> bool {
    p[3] & 0x80 != 0
}
pub(crate) fn cd(p: &[u8]) -> bool {
    p[3] & 0x10 != 0
}
/// The 4-bit RCODE of the header (an extended RCODE's upper bits are in the OPT record).
pub fn rcode(p: &[u8]) -> Rcode {
    Rcode::from_header(p[3])
}
/// The AA, TC and RA flags of a header, rendered as `[aa ra]` when displayed.
pub(crate) struct Flags<'a>(pub(crate) &'a [u8]);

impl std::fmt::Display for Flags<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = [(aa(self.0), "aa"), (tc(self.0), "tc"), (ra(self.0), "ra")];
        let names: Vec<&str> = set.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect();
        write!(f, "[{}]", names.join(" "))
    }
}

fn count(p: &[u8], index: usize) -> u16 {
    u16::from_be_bytes([p[4 + 2 * index], p[5 + 2 * index]])
}
fn set_count(p: &mut [u8], index: usize, value: u16) {
    p[4 + 2 * index..6 + 2 * index].copy_from_slice(&value.to_be_bytes());
}
/// QDCOUNT: the number of questions.
pub fn qdcount(p: &[u8]) -> u16 {
    count(p, 0)
}
/// ANCOUNT: the number of answer records.
pub fn ancount(p: &[u8]) -> u16 {
    count(p, 1)
}
pub(crate) fn nscount(p: &[u8]) -> u16 {
    count(p, 2)
}
pub(crate) fn arcount(p: &[u8]) -> u16 {
    count(p, 3)
}

fn u16_at(p: &[u8], off: usize) -> Result<u16, WireError> {
    p.get(off..off + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(WireError::Truncated)
}
fn u32_at(p: &[u8], off: usize) -> Result<u32, WireError> {
    p.get(off..off + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(WireError::Truncated)
}

// ---- names ----------------------------------------------------------------------------------

/// A name in lower-cased wire form, kept on the stack: the cache key and routing input.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct WireName {
    len: u8,
    bytes: [u8; MAX_NAME_LEN],
}

impl WireName {
    /// A name in wire form kept exactly as written, case and all (what a query sent upstream
    /// spelled, to check the reply against). None if longer than a name may be.
    pub(crate) fn verbatim(wire: &[u8]) -> Option<WireName> {
        if wire.len() > MAX_NAME_LEN {
            return None;
        }
        let mut name = WireName {
            len: wire.len() as u8,
            bytes: [0; MAX_NAME_LEN],
        };
        name.bytes[..wire.len()].copy_from_slice(wire);
        Some(name)
    }

    /// The name in wire form: each label after its length byte, ending with the root's zero
    /// byte.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// Number of labels, the root not counted.
    pub fn label_count(&self) -> usize {
        self.labels().count()
    }

    /// Its labels in order, each without its length byte; the root is not one.
    pub fn labels(&self) -> impl Iterator<Item = &[u8]> {
        let b = self.as_bytes();
        let mut off = 0;
        std::iter::from_fn(move || {
            let len = *b.get(off)? as usize;
            if len == 0 {
                return None;
            }
            let label = &b[off + 1..off + 1 + len];
            off += 1 + len;
            Some(label)
        })
    }

    /// Dotted presentation form without the trailing dot ("" for the root). Labels holding
    /// dots or unprintable bytes are escaped as in zone files.
    pub fn to_dotted(&self) -> String {
        let mut out = String::with_capacity(self.len as usize);
        self.write_dotted(&mut out)
            .expect("a String takes any text");
        out
    }

    /// `to_dotted` on the stack: what every forwarded query's local and route lookups take,
    /// with no allocation.
    pub fn dotted(&self) -> Dotted {
        let mut out = Dotted {
            len: 0,
            bytes: [0; MAX_DOTTED_LEN],
        };
        self.write_dotted(&mut out)
            .expect("a name fits MAX_DOTTED_LEN");
        out
    }

    fn write_dotted(&self, out: &mut impl std::fmt::Write) -> std::fmt::Result {
        for (i, label) in self.labels().enumerate() {
            if i > 0 {
                out.write_char('.')?;
            }
            for &c in label {
                match c {
                    b'.' | b'\\' => {
                        out.write_char('\\')?;
                        out.write_char(c as char)?;
                    }
                    0x21..=0x7e => out.write_char(c as char)?,
                    _ => write!(out, "\\{c:03}")?,
                }
            }
        }
        Ok(())
    }
}

/// The longest dotted name: every byte of the longest wire name written as `\DDD`.
const MAX_DOTTED_LEN: usize = 4 * MAX_NAME_LEN;

/// A name in dotted presentation form, kept on the stack (`WireName::dotted`).
pub struct Dotted {
    len: usize,
    bytes: [u8; MAX_DOTTED_LEN],
}

impl Dotted {
    /// The dotted text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).expect("only ASCII is written")
    }
}

impl std::fmt::Write for Dotted {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.bytes
            .get_mut(self.len..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl std::fmt::Debug for WireName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.", self.to_dotted())
    }
}

/// Offset just past the name starting at `off` (compression pointers end a name).
pub(crate) fn skip_name(p: &[u8], mut off: usize) -> Result<usize, WireError> {
    loop {
        let len = *p.get(off).ok_or(WireError::BadName)? as usize;
        match len {
            0 => return Ok(off + 1),
            1..=63 => off += 1 + len,
            0xc0..=0xff => {
                if off + 2 > p.len() {
                    return Err(WireError::BadName);
                }
                return Ok(off + 2);
            }
            _ => return Err(WireError::BadName),
        }
    }
}

/// Reads the (possibly compressed) name at `off` into lower-cased wire form.
/// Returns the name and the offset just past it in the original stream.
pub(crate) fn read_name(p: &[u8], start: usize) -> Result<(WireName, usize), WireError> {
    let mut name = WireName {
        len: 0,
        bytes: [0; MAX_NAME_LEN],
    };
    let mut off = start;
    let mut end = None;
    let mut jumps = 0;
    let mut len = 0usize;
    // A pointer names a prior occurrence (RFC 1035 4.1.4): it points before itself, and the
    // name it points to ends before it. So a name never reads what follows it, which a
    // reply cut after its last record or before its OPT (`strip_hop_by_hop`) no longer has.
    let mut before = p.len();
    loop {
        let p = &p[..before];
        let label_len = *p.get(off).ok_or(WireError::BadName)? as usize;
        match label_len {
            0 => {
                if len + 1 > MAX_NAME_LEN {
                    return Err(WireError::BadName);
                }
                name.bytes[len] = 0;
                name.len = (len + 1) as u8;
                return Ok((name, end.unwrap_or(off + 1)));
            }
            1..=63 => {
                let label = p
                    .get(off + 1..off + 1 + label_len)
                    .ok_or(WireError::BadName)?;
                if len + 1 + label_len + 1 > MAX_NAME_LEN {
                    return Err(WireError::BadName);
                }
                name.bytes[len] = label_len as u8;
                for (dst, src) in name.bytes[len + 1..].iter_mut().zip(label) {
                    *dst = src.to_ascii_lowercase();
                }
                len += 1 + label_len;
                off += 1 + label_len;
            }
            0xc0..=0xff => {
                let low = *p.get(off + 1).ok_or(WireError::BadName)? as usize;
                end.get_or_insert(off + 2);
                jumps += 1;
                let target = ((label_len & 0x3f) << 8) | low;
                if jumps > 32 || target >= off {
                    return Err(WireError::BadName);
                }
                before = off;
                off = target;
            }
            _ => return Err(WireError::BadName),
        }
    }
}

/// Wire form of a dotted name (test and config helper; not on the hot path).
pub fn name_from_dotted(dotted: &str) -> Option<WireName> {
    let mut wire = Vec::with_capacity(dotted.len() + 2);
    for label in dotted
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        if label.len() > 63 {
            return None;
        }
        wire.push(label.len() as u8);
        wire.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    wire.push(0);
    read_name(&wire, 0).ok().map(|(n, _)| n)
}

// ---- question and OPT -----------------------------------------------------------------------

/// The EDNS0 parameters of a message (RFC 6891 6.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// The largest UDP payload the sender can take.
    pub payload: u16,
    /// The EDNS version (0, the only one defined).
    pub version: u8,
    /// DO: the sender wants DNSSEC records.
    pub dnssec_ok: bool,
    /// Upper 8 bits of the extended RCODE.
    pub(crate) rcode_high: u8,
}

/// Where the OPT record sits in a message, so it can be cut out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptSpan {
    /// Offset of the OPT record's first byte.
    pub start: usize,
    /// Offset just past the OPT record.
    pub end: usize,
    /// What the OPT record says.
    pub edns: Edns,
}

/// A client query, read in place.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    /// The query's ID.
    pub id: u16,
    /// The question's name, lower-cased.
    pub name: WireName,
    /// The question's type.
    pub qtype: u16,
    /// The question's class.
    pub qclass: u16,
    /// Offset just past the question.
    pub question_end: usize,
    /// RD: the client wants recursion.
    pub rd: bool,
    /// CD: the client does its own DNSSEC checking.
    pub cd: bool,
    /// The query's EDNS parameters, if it has an OPT record.
    pub edns: Option<Edns>,
}

impl Query {
    /// Largest UDP reply this client accepts.
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            // RFC 6891 6.2.5: never more than we advertise, to avoid fragmentation.
            Some(e) => e.payload.clamp(512, EDNS_PAYLOAD) as usize,
            None => 512,
        }
    }
    /// Whether the client set DO: it wants DNSSEC records.
    pub fn dnssec_ok(&self) -> bool {
        self.edns.is_some_and(|e| e.dnssec_ok)
    }
}

/// Why a query could not be read: either drop it silently or answer it with an error.
#[derive(Debug, PartialEq, Eq)]
pub enum QueryProblem {
    /// Not worth an answer (too short to carry an ID, or itself a response).
    Drop(WireError),
    /// Answer with this RCODE (FORMERR, NOTIMP), echoing what could be read.
    Answer(Rcode, WireError),
}

/// Reads header, question and OPT of a client query without decoding anything else.
pub fn parse_query(p: &[u8]) -> Result<Query, QueryProblem> {
    use QueryProblem::*;
    if p.len() < HEADER_LEN {
        return Err(Drop(WireError::Short));
    }
    if is_response(p) {
        return Err(Drop(WireError::NotQuery));
    }
    if opcode(p) != 0 {
        return Err(Answer(Rcode::NOTIMP, WireError::Opcode(opcode(p))));
    }
    if qdcount(p) != 1 {
        return Err(Answer(Rcode::FORMERR, WireError::QuestionCount(qdcount(p))));
    }
    let formerr = |e| Answer(Rcode::FORMERR, e);
    let (name, off) = read_name(p, HEADER_LEN).map_err(formerr)?;
    // A question written without compression has the same length for the same name, which
    // lets cached replies take the client's spelling in place.
    if off != HEADER_LEN + name.as_bytes().len() {
        return Err(formerr(WireError::CompressedQuestion));
    }
    let qtype = u16_at(p, off).map_err(formerr)?;
    let qclass = u16_at(p, off + 2).map_err(formerr)?;
    let question_end = off + 4;
    let opt = find_opt(p, question_end).map_err(formerr)?;
    Ok(Query {
        id: id(p),
        name,
        qtype,
        qclass,
        question_end,
        rd: rd(p),
        cd: cd(p),
        edns: opt.map(|o| o.edns),
    })
}

/// Which section a record sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Answer,
    Authority,
    Additional,
}

/// One record as `walk_records` sees it.
struct RecordAt {
    start: usize,
    rtype: u16,
    ttl_at: usize,
    rdata: std::ops::Range<usize>,
    section: Section,
}

/// Walks the answer, authority and additional sections starting at `off`, calling `f` for
/// each record. Returns the offset just past the last one.
fn walk_records(
    p: &[u8],
    mut off: usize,
    mut f: impl FnMut(RecordAt) -> Result<(), WireError>,
) -> Result<usize, WireError> {
    let an = ancount(p) as usize;
    let ns = nscount(p) as usize;
    let total = an + ns + arcount(p) as usize;
    for index in 0..total {
        let start = off;
        off = skip_name(p, off)?;
        let rtype = u16_at(p, off)?;
        let ttl_at = off + 4;
        let rdlen = u16_at(p, off + 8)? as usize;
        let rdata = off + 10..off + 10 + rdlen;
        if rdata.end > p.len() {
            return Err(WireError::Truncated);
        }
        let section = match index {
            i if i < an => Section::Answer,
            i if i < an + ns => Section::Authority,
            _ => Section::Additional,
        };
        off = rdata.end;
        f(RecordAt {
            start,
            rtype,
            ttl_at,
            rdata,
            section,
        })?;
    }
    Ok(off)
}

/// Takes note of an OPT record: RFC 6891 6.1.1 allows one, in the additional section, owned
/// by the root.
fn note_opt(p: &[u8], r: &RecordAt, opt: &mut Option<OptSpan>) -> Result<(), WireError> {
    if opt.is_some() {
        return Err(WireError::DuplicateOpt);
    }
    if r.section != Section::Additional || p[r.start] != 0 {
        return Err(WireError::MisplacedOpt);
    }
    *opt = Some(read_opt(p, r.start, r.ttl_at, r.rdata.end)?);
    Ok(())
}

/// The OPT record at `start` (RFC 6891 6.1.2: CLASS is the payload size, TTL holds the
/// extended RCODE, version and the DO flag).
fn read_opt(p: &[u8], start: usize, ttl_at: usize, end: usize) -> Result<OptSpan, WireError> {
    let ttl = u32_at(p, ttl_at)?;
    Ok(OptSpan {
        start,
        end,
        edns: Edns {
            payload: u16_at(p, ttl_at - 2)?,
            rcode_high: (ttl >> 24) as u8,
            version: (ttl >> 16) as u8,
            dnssec_ok: ttl & 0x8000 != 0,
        },
    })
}

fn find_opt(p: &[u8], question_end: usize) -> Result<Option<OptSpan>, WireError> {
    let mut opt: Option<OptSpan> = None;
    walk_records(p, question_end, |r| {
        if r.rtype == TYPE_OPT {
            note_opt(p, &r, &mut opt)?;
        }
        Ok(())
    })?;
    Ok(opt)
}

/// Appends an OPT record carrying our payload size and the given DO bit.
pub fn push_opt(out: &mut Vec<u8>, dnssec_ok: bool, rcode_high: u8) {
    push_opt_with(out, dnssec_ok, rcode_high, None);
}

/// Appends an OPT record carrying our payload size, the given DO bit and, if given, one
/// option (code, data).
pub(crate) fn push_opt_with(
    out: &mut Vec<u8>,
    dnssec_ok: bool,
    rcode_high: u8,
    option: Option<(u16, &[u8])>,
) {
    let flags: u16 = if dnssec_ok { 0x8000 } else { 0 };
    out.push(0); // root owner name
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&EDNS_PAYLOAD.to_be_bytes());
    out.push(rcode_high);
    out.push(0); // version
    out.extend_from_slice(&flags.to_be_bytes());
    match option {
        Some((code, data)) => {
            out.extend_from_slice(&(4 + data.len() as u16).to_be_bytes());
            out.extend_from_slice(&code.to_be_bytes());
            out.extend_from_slice(&(data.len() as u16).to_be_bytes());
            out.extend_from_slice(data);
        }
        None => out.extend_from_slice(&0u16.to_be_bytes()),
    }
    let ar = arcount(out) + 1;
    set_count(out, 3, ar);
}

/// The data of the first option `code` in the OPT record at `opt` (RFC 6891 6.1.2: options
/// are code, length, data, one after another), if it has one that fits in the record.
pub(crate) fn opt_option<'a>(p: &'a [u8], opt: &OptSpan, code: u16) -> Option<&'a [u8]> {
    let mut off = opt.start + OPT_LEN;
    while off + 4 <= opt.end {
        let this = u16_at(p, off).ok()?;
        let len = u16_at(p, off + 2).ok()? as usize;
        let data = off + 4..off + 4 + len;
        if data.end > opt.end {
            return None;
        }
        if this == code {
            return p.get(data);
        }
        off = data.end;
    }
    None
}

/// The query we send upstream for a client's question: fresh ID, the client's RD and CD, the
/// question as the client wrote it, and our own OPT (RFC 6891: OPT is hop-by-hop; client
/// options such as cookies are not forwarded).
pub fn upstream_query(client: &[u8], q: &Query, new_id: u16, with_edns: bool) -> Vec<u8> {
    upstream_query_with(client, q, new_id, with_edns, &[])
}

/// `upstream_query` whose OPT, if it has one, carries `cookie` (client cookie, then the
/// server's if known; RFC 7873 4) unless it is empty. One allocation, of the final size.
pub(crate) fn upstream_query_with(
    client: &[u8],
    q: &Query,
    new_id: u16,
    with_edns: bool,
    cookie: &[u8],
) -> Vec<u8> {
    let cookie_len = if cookie.is_empty() {
        0
    } else {
        4 + cookie.len()
    };
    let mut out = Vec::with_capacity(q.question_end + OPT_LEN + cookie_len);
    out.extend_from_slice(&new_id.to_be_bytes());
    out.push(if q.rd { 0x01 } else { 0 });
    out.push(if q.cd { 0x10 } else { 0 });
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&client[HEADER_LEN..q.question_end]);
    if with_edns {
        let option = (!cookie.is_empty()).then_some((OPTION_COOKIE, cookie));
        push_opt_with(&mut out, q.dnssec_ok(), 0, option);
    }
    out
}

/// Sets the case of every ASCII letter of `name` (uncompressed wire form) from one random bit
/// each, drawn 64 at a time from `bits` (0x20, draft-vixie-dnsext-dns0x20). Returns how many
/// letters there are and how many came out in capitals.
pub(crate) fn randomize_case(name: &mut [u8], mut bits: impl FnMut() -> u64) -> (u32, u32) {
    let (mut letters, mut upper) = (0u32, 0u32);
    let mut pool = 0u64;
    let mut off = 0;
    while let Some(&len) = name.get(off) {
        if len == 0 || len > 63 {
            break;
        }
        let end = (off + 1 + len as usize).min(name.len());
        for b in &mut name[off + 1..end] {
            if !b.is_ascii_alphabetic() {
                continue;
            }
            if letters % 64 == 0 {
                pool = bits();
            }
            let capital = pool & 1 == 1;
            pool >>= 1;
            letters += 1;
            upper += u32::from(capital);
            *b = if capital {
                b.to_ascii_uppercase()
            } else {
                b.to_ascii_lowercase()
            };
        }
        off = end;
    }
    (letters, upper)
}

/// Writes `to` over the question name and over every record owner written out in full as
/// exactly `from`: the same name in another spelling (same length), so a reply to a query
/// whose name went out in random case reads as the client spelled it. Owners compressed to
/// the question follow it by themselves.
pub(crate) fn respell(
    p: &mut [u8],
    question_end: usize,
    from: &[u8],
    to: &[u8],
) -> Result<(), WireError> {
    if from.len() != to.len() || from == to || qdcount(p) != 1 {
        return Ok(());
    }
    let n = from.len();
    if p.get(HEADER_LEN..HEADER_LEN + n) == Some(from) {
        p[HEADER_LEN..HEADER_LEN + n].copy_from_slice(to);
    }
    let total = ancount(p) as usize + nscount(p) as usize + arcount(p) as usize;
    let mut off = question_end;
    for _ in 0..total {
        if p.get(off..off + n) == Some(from) {
            p[off..off + n].copy_from_slice(to);
        }
        off = skip_name(p, off)?;
        let rdlen = u16_at(p, off + 8)? as usize;
        off += 10 + rdlen;
        if off > p.len() {
            return Err(WireError::Truncated);
        }
    }
    Ok(())
}

/// A query for `name`/`qtype` built from scratch (probes and discovery).
pub fn build_query(name: &WireName, qtype: u16, id: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + name.as_bytes().len() + 4);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out
}

/// A reply holding only the header and question of `client` (plus OPT when the client sent
/// one): errors, truncation and NODATA-like answers.
pub fn header_only_reply(
    client: &[u8],
    q: Option<&Query>,
    code: Rcode,
    truncated: bool,
) -> Vec<u8> {
    let question_end = q.map_or(HEADER_LEN, |q| q.question_end);
    let mut out = Vec::with_capacity(question_end + OPT_LEN);
    out.extend_from_slice(&client[..question_end]);
    out[2] = (client[2] & 0x79) | 0x80 | if truncated { 0x02 } else { 0 };
    out[3] = 0x80 | (client[3] & 0x10) | code.bits();
    out[4..12].copy_from_slice(&[0, u8::from(q.is_some()), 0, 0, 0, 0, 0, 0]);
    if let Some(edns) = q.and_then(|q| q.edns) {
        push_opt(&mut out, edns.dnssec_ok, 0);
    }
    out
}

/// BADVERS reply for a query with an EDNS version we do not speak (RFC 6891 6.1.3).
pub(crate) fn badvers_reply(client: &[u8], q: &Query) -> Vec<u8> {
    let mut out = header_only_reply(client, Some(q), Rcode::NOERROR, false);
    if q.edns.is_none() {
        push_opt(&mut out, false, BADVERS_HIGH);
    } else {
        let len = out.len();
        out[len - 6] = BADVERS_HIGH;
    }
    out
}

// ---- responses ------------------------------------------------------------------------------

/// What the forwarder needs to know about an upstream reply, read in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyInfo {
    /// The reply's header RCODE.
    pub rcode: Rcode,
    /// ANCOUNT: its number of answer records.
    pub answers: u16,
    /// TTL offsets of every record except OPT and TSIG.
    pub ttl_offsets: TtlOffsets,
    /// How long this reply may be cached (RFC 2308 for negative answers), if at all.
    pub(crate) cache_ttl: Option<u32>,
    /// Labels in the owner of the authority section's SOA, if there is one: the zone a
    /// negative answer speaks for (0 is the root).
    pub(crate) soa_labels: Option<u8>,
    /// Where its OPT record sits, if it has one.
    pub opt: Option<OptSpan>,
    /// Where its TSIG records sit in the additional section, if it has any: from the first
    /// one's start to the last one's end (RFC 8945 allows one, last; any other goes with it).
    pub signature: Option<Range<usize>>,
}

/// Where a reply's TTLs are: inline for up to 8 records (an answer and its SOA or a few
/// addresses), so reading a reply and keeping its answer allocate nothing more for them.
pub type TtlOffsets = smallvec::SmallVec<[u16; 8]>;

/// Checks that `reply` answers `q` (ID and question) and reads what the forwarder needs.
/// Bytes after the last record are accepted, as BIND, dnsmasq and glibc accept them (glibc
/// reads the sections by their counts), and left out of what is stored (`strip_hop_by_hop`).
pub fn read_reply(reply: &[u8], q: &Query, expected_id: u16) -> Result<ReplyInfo, ReplyMismatch> {
    if reply.len() < HEADER_LEN || !is_response(reply) || id(reply) != expected_id {
        return Err(ReplyMismatch::Header);
    }
    if qdcount(reply) != 1 {
        // FORMERR and NOTIMP may come without the question; they carry nothing to keep and
        // are never passed on as they are (see `forward`).
        let code = rcode(reply);
        if qdcount(reply) == 0 && (code == Rcode::FORMERR || code == Rcode::NOTIMP) {
            return Ok(ReplyInfo {
                rcode: code,
                answers: 0,
                ttl_offsets: TtlOffsets::new(),
                cache_ttl: None,
                soa_labels: None,
                opt: None,
                signature: None,
            });
        }
        return Err(ReplyMismatch::Question);
    }
    let (name, off) = read_name(reply, HEADER_LEN).map_err(ReplyMismatch::Malformed)?;
    let qtype = u16_at(reply, off).map_err(ReplyMismatch::Malformed)?;
    let qclass = u16_at(reply, off + 2).map_err(ReplyMismatch::Malformed)?;
    if name != q.name || qtype != q.qtype || qclass != q.qclass || off + 4 != q.question_end {
        return Err(ReplyMismatch::Question);
    }
    analyse_records(reply, off + 4).map_err(ReplyMismatch::Malformed)
}

/// Why an upstream datagram was not accepted as the reply to our query.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReplyMismatch {
    /// Too short, not a response, or with another ID.
    #[error("ID or header does not match our query")]
    Header,
    /// The question is not the one asked.
    #[error("question does not match our query")]
    Question,
    /// The records cannot be read.
    #[error("malformed reply: {0}")]
    Malformed(WireError),
}

fn analyse_records(p: &[u8], question_end: usize) -> Result<ReplyInfo, WireError> {
    let code = rcode(p);
    let mut ttl_offsets = TtlOffsets::new();
    let mut min_answer_ttl: Option<u32> = None;
    let mut negative_ttl: Option<u32> = None;
    let mut soa_labels: Option<u8> = None;
    let mut opt = None;
    let mut signature: Option<Range<usize>> = None;
    walk_records(p, question_end, |r| {
        if r.rtype == TYPE_OPT {
            return note_opt(p, &r, &mut opt);
        }
        if r.rtype == TYPE_TSIG && r.section == Section::Additional {
            // Like OPT, it belongs to the exchange with the upstream, not to the answer.
            signature = Some(signature.take().map_or(r.start, |s| s.start)..r.rdata.end);
            return Ok(());
        }
        ttl_offsets.push(u16::try_from(r.ttl_at).map_err(|_| WireError::Truncated)?);
        let ttl = clamp_ttl(u32_at(p, r.ttl_at)?);
        match r.section {
            Section::Answer => min_answer_ttl = Some(min_answer_ttl.map_or(ttl, |m| m.min(ttl))),
            Section::Authority if r.rtype == TYPE_SOA && r.rdata.len() >= 22 => {
                let minimum = u32_at(p, r.rdata.end - 4)?;
                let neg = ttl.min(clamp_ttl(minimum));
                negative_ttl = Some(negative_ttl.map_or(neg, |n| n.min(neg)));
                soa_labels = Some(read_name(p, r.start)?.0.label_count() as u8);
            }
            _ => {}
        }
        Ok(())
    })?;
    let answers = ancount(p);
    let cache_ttl = match code {
        Rcode::NOERROR if answers > 0 => min_answer_ttl,
        Rcode::NOERROR | Rcode::NXDOMAIN => negative_ttl,
        _ => None,
    }
    .filter(|&t| t > 0);
    Ok(ReplyInfo {
        rcode: code,
        answers,
        ttl_offsets,
        cache_ttl,
        soa_labels,
        opt,
        signature,
    })
}

/// The full 12-bit RCODE of a reply read by `read_reply`: the header's four bits and the
/// OPT's upper eight (RFC 6891 6.1.3).
pub(crate) fn extended_rcode(p: &[u8], info: &ReplyInfo) -> u16 {
    u16::from(info.opt.map_or(0, |o| o.edns.rcode_high)) << 4 | u16::from(p[3] & 0x0f)
}

/// RFC 2181 8: a TTL with the top bit set counts as zero.
fn clamp_ttl(ttl: u32) -> u32 {
    if ttl & 0x8000_0000 != 0 { 0 } else { ttl }
}

/// Offset just past the last record of a message whose question ends at `question_end`:
/// what follows belongs to no record.
pub fn records_end(p: &[u8], question_end: usize) -> Result<usize, WireError> {
    walk_records(p, question_end, |_| Ok(()))
}

/// Where the records of a reply read by `read_reply` end, from what the walk noted: past its
/// OPT or past its last other record, whichever comes later (records are walked in order),
/// else past the question. None for a reply without its question (nothing was walked).
fn end_of_records(reply: &[u8], info: &ReplyInfo) -> Option<usize> {
    if qdcount(reply) != 1 {
        return None;
    }
    let question_end = skip_name(reply, HEADER_LEN).ok()? + 4;
    let last = match info.ttl_offsets.last() {
        // TTL, then RDLENGTH, then RDATA.
        Some(&ttl_at) => {
            let ttl_at = ttl_at as usize;
            Some(ttl_at + 6 + u16_at(reply, ttl_at + 4).ok()? as usize)
        }
        None => None,
    };
    let end = [
        Some(question_end),
        last,
        info.opt.map(|o| o.end),
        info.signature.as_ref().map(|s| s.end),
    ]
    .into_iter()
    .flatten()
    .max()?;
    debug_assert_eq!(records_end(reply, question_end), Ok(end));
    Some(end)
}

/// Makes an accepted reply fit to be stored and reissued: bytes after its last record are cut
/// (BIND ignores them, dnsmasq cuts them; kept, they would sit between the records and the
/// OPT a client gets, which then cannot read the reply), and so are the hop-by-hop records,
/// OPT and TSIG (a signature of the upstream's message, which our own OPT after it would make
/// malformed: TSIG must come last), with any record after the first of them: those are
/// additional records, which may be left out (RFC 2181 9), and they may be compressed against
/// each other, which removing one alone from between them would break.
pub fn strip_hop_by_hop(reply: &mut Vec<u8>, info: &mut ReplyInfo) {
    if let Some(end) = end_of_records(reply, info) {
        reply.truncate(end);
    }
    let opt = info.opt.take().map(|o| o.start);
    let signature = info.signature.take().map(|s| s.start);
    if let Some(cut) = opt.into_iter().chain(signature).min() {
        reply.truncate(cut);
        info.ttl_offsets.retain(|off| (*off as usize) < cut);
        // OPT and TSIG sit in the additional section (note_opt, analyse_records) and every
        // other record has a TTL offset, so what is left before the cut is the answer and
        // authority records and the additional records that have a TTL offset there.
        let kept = info.ttl_offsets.len() as u16;
        let ar = kept.saturating_sub(ancount(reply).saturating_add(nscount(reply)));
        set_count(reply, 3, ar);
    }
}

/// Lowers every TTL at `offsets` to at most `max`, in place.
pub fn cap_ttls(p: &mut [u8], offsets: &[u16], max: u32) {
    rewrite_ttls(p, offsets, |ttl| ttl.min(max));
}

/// Subtracts `elapsed` seconds from every TTL at `offsets`, in place.
pub fn age_ttls(p: &mut [u8], offsets: &[u16], elapsed: u32) {
    rewrite_ttls(p, offsets, |ttl| ttl.saturating_sub(elapsed));
}

fn rewrite_ttls(p: &mut [u8], offsets: &[u16], f: impl Fn(u32) -> u32) {
    for &off in offsets {
        let at = off as usize..off as usize + 4;
        let ttl = clamp_ttl(u32::from_be_bytes(
            p[at.clone()].try_into().expect("4 bytes"),
        ));
        p[at].copy_from_slice(&f(ttl).to_be_bytes());
    }
}

/// Turns a stored reply (no OPT) into the reply for this client's query, in place: the
/// client's ID, its spelling of the name, RA set, and our OPT if the client used EDNS.
/// Returns false if it does not fit the client's UDP limit (`limit`), in which case the
/// caller sends a truncated reply instead.
pub(crate) fn finish_reply(out: &mut Vec<u8>, client: &[u8], q: &Query, limit: usize) -> bool {
    set_id(out, q.id);
    out[HEADER_LEN..q.question_end].copy_from_slice(&client[HEADER_LEN..q.question_end]);
    out[2] = (out[2] & !0x01) | u8::from(q.rd);
    out[3] |= 0x80;
    if let Some(edns) = q.edns {
        push_opt(out, edns.dnssec_ok, 0);
    }
    out.len() <= limit
}

#[cfg(test)]
mod tests;
