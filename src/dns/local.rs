//! Local names: hosts files, static records and the network's own domain, answered without
//! asking anyone. Answers are built with hickory-proto (the only place virtdns encodes whole
//! messages), because local answers are assembled from records rather than relayed bytes.
//!
//! Rules: a name with local data is answered here (local data wins over forwarding). A name
//! inside a local-only domain (the network's `domain`, or a forwarder with a domain and no
//! address) is answered authoritatively: NXDOMAIN or NODATA, each with an SOA. A single-label
//! name is looked up under the local domain too. PTR records are made for every A/AAAA.

use crate::config::{DnsConfig, RecordData, StaticRecord};
use crate::dns::reverse::{self, reverse_name};
use crate::dns::wire::{self, Query};
use crate::hosts::HostsEntry;
use crate::types::Net;
use hickory_proto::op::{Edns, Message, OpCode, Query as HQuery, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::net::IpAddr;

/// All local data, immutable once built; rebuilt and swapped when a source changes.
#[derive(Debug, Default)]
pub struct LocalNames {
    /// Lower-cased dotted owner name → records.
    records: HashMap<String, Vec<RData>>,
    /// Domains answered only from here, longest first.
    local_domains: Vec<String>,
    /// The network's domain, used to expand single-label names.
    domain: Option<String>,
    ttl: u32,
}

/// What the local data says about a query.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LocalVerdict<'a> {
    /// Not ours: route it on.
    NotLocal,
    /// Answered here: the reply bytes and why (rendered only by `explain`).
    Answer(Vec<u8>, Why<'a>),
}

/// Why local data answered, for `explain`; nothing is formatted on the serving path.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Why<'a> {
    /// Records found at `name`.
    Records { count: usize, name: String },
    /// A hosts-file name asked for the other address family.
    NoData { name: String, qtype: RecordType },
    /// A name in a local-only domain that has nothing for the question.
    LocalOnly { zone: &'a str, code: ResponseCode },
}

impl std::fmt::Display for Why<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Records { count, name } => write!(f, "local data: {count} record(s) for {name}"),
            Why::NoData { name, qtype } => {
                write!(f, "local data: {name} has no {qtype} record (NODATA)")
            }
            Why::LocalOnly { zone, code } => write!(
                f,
                "local-only domain {zone}: {code} (authoritative, never forwarded)"
            ),
        }
    }
}

impl LocalNames {
    /// Local names from the config: hosts files (unless `no_hosts`), static records, the
    /// network's domain and local-only domains, and the guests DHCP knows. The reverse zones of the `served` networks and RFC 6303's fixed ones are local too
    /// (`dns::reverse`).
    pub(crate) fn from_config(
        dns: &DnsConfig,
        guests: &[HostsEntry],
        served: &[Net],
    ) -> LocalNames {
        let mut entries = guests.to_vec();
        if !dns.no_hosts {
            for path in &dns.hosts {
                match std::fs::read_to_string(path) {
                    Ok(text) => entries.extend(crate::hosts::parse(&text)),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot read hosts file")
                    }
                }
            }
        }
        let mut local_only: Vec<String> = dns.local_only_domains().collect();
        local_only.extend(served.iter().flat_map(|n| reverse::zones_of(*n)));
        local_only.extend(reverse::RFC6303_ALWAYS_LOCAL.iter().map(|z| z.to_string()));
        LocalNames::build(
            dns.domain.as_ref().map(|d| d.0.as_str()),
            &local_only,
            &dns.records,
            &entries,
            dns.local_ttl,
        )
    }

    /// Local names from their parts: the local domain, the local-only domains, static records
    /// and hosts entries, answered with TTL `ttl`.
    pub fn build(
        domain: Option<&str>,
        local_only: &[String],
        records: &[StaticRecord],
        hosts: &[HostsEntry],
        ttl: u32,
    ) -> LocalNames {
        let mut names = LocalNames {
            domain: domain.map(str::to_owned),
            ttl,
            ..Default::default()
        };
        names.local_domains = domain.into_iter().map(str::to_owned).collect();
        names.local_domains.extend(local_only.iter().cloned());
        names
            .local_domains
            .sort_by_key(|d| std::cmp::Reverse(d.len()));
        for r in records {
            names.add(&r.name.0, to_rdata(&r.data));
        }
        for entry in hosts {
            for name in &entry.names {
                names.add_address(name, entry.addr);
                if let (Some(d), false) = (domain, name.contains('.')) {
                    names.add_address(&format!("{name}.{d}"), entry.addr);
                }
            }
        }
        names
    }

    /// Adds a record, with its PTR when it is an address.
    fn add(&mut self, name: &str, data: RData) {
        match &data {
            RData::A(a) => self.add_ptr(IpAddr::V4(a.0), name),
            RData::AAAA(a) => self.add_ptr(IpAddr::V6(a.0), name),
            _ => {}
        }
        let list = self.records.entry(name.to_owned()).or_default();
        if !list.contains(&data) {
            list.push(data);
        }
    }

    fn add_address(&mut self, name: &str, addr: IpAddr) {
        let data = match addr {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        self.add(name, data);
    }

    fn add_ptr(&mut self, addr: IpAddr, name: &str) {
        let Ok(target) = Name::from_ascii(format!("{name}.")) else {
            return;
        };
        let reverse = reverse_name(addr);
        let list = self.records.entry(reverse).or_default();
        // The first name given for an address is its canonical PTR.
        if list.is_empty() {
            list.push(RData::PTR(PTR(target)));
        }
    }

    /// The local-only domain containing `name`, if any.
    pub(crate) fn local_domain_of(&self, name: &str) -> Option<&str> {
        self.local_domains
            .iter()
            .find(|d| is_within(name, d))
            .map(String::as_str)
    }

    /// The name to look up for `name`: itself, or expanded with the local domain when it is
    /// a single label.
    fn lookup_name(&self, name: &str) -> Option<String> {
        if self.records.contains_key(name) {
            return Some(name.to_owned());
        }
        match &self.domain {
            Some(d) if is_single_label(name) => {
                let expanded = format!("{name}.{d}");
                self.records.contains_key(&expanded).then_some(expanded)
            }
            _ => None,
        }
    }

    /// Answers `q` (whose name, dotted, is `name`) from local data, or says it is not local.
    pub(crate) fn answer(&self, client: &[u8], q: &Query, name: &str) -> LocalVerdict<'_> {
        if q.qclass != wire::CLASS_IN {
            return LocalVerdict::NotLocal;
        }
        let qtype = RecordType::from(q.qtype);
        let zone = self.local_domain_of(name);
        let Some(found) = self.lookup_name(name) else {
            return match zone {
                Some(zone) => self.negative(client, q, zone, ResponseCode::NXDomain),
                None => LocalVerdict::NotLocal,
            };
        };
        let mut answers = Vec::new();
        self.collect(&found, name, qtype, &mut answers, 0);
        if !answers.is_empty() {
            let why = Why::Records {
                count: answers.len(),
                name: found,
            };
            return LocalVerdict::Answer(self.reply(client, q, answers, None), why);
        }
        let has_address = self.records[&found]
            .iter()
            .any(|r| matches!(r, RData::A(_) | RData::AAAA(_)));
        match zone {
            Some(zone) => self.negative(client, q, zone, ResponseCode::NoError),
            // A hosts-file name asked for the other address family: say there is none
            // rather than leak the name upstream.
            None if has_address && matches!(qtype, RecordType::A | RecordType::AAAA) => {
                let why = Why::NoData { name: found, qtype };
                LocalVerdict::Answer(self.reply(client, q, Vec::new(), None), why)
            }
            None => LocalVerdict::NotLocal,
        }
    }

    /// Records of `qtype` at `name`, following local CNAMEs. `owner` is the name the client
    /// asked for (it differs from `name` for an expanded single-label name).
    fn collect(
        &self,
        name: &str,
        owner: &str,
        qtype: RecordType,
        out: &mut Vec<Record>,
        depth: u8,
    ) {
        let Some(list) = self.records.get(name) else {
            return;
        };
        let Ok(owner_name) = Name::from_ascii(format!("{owner}.")) else {
            return;
        };
        for data in list {
            let rtype = data.record_type();
            if rtype == qtype || qtype == RecordType::ANY {
                out.push(Record::from_rdata(
                    owner_name.clone(),
                    self.ttl,
                    data.clone(),
                ));
            } else if let (RData::CNAME(target), true) = (data, depth < 8) {
                out.push(Record::from_rdata(
                    owner_name.clone(),
                    self.ttl,
                    data.clone(),
                ));
                let target = target
                    .0
                    .to_ascii()
                    .trim_end_matches('.')
                    .to_ascii_lowercase();
                self.collect(&target, &target, qtype, out, depth + 1);
            }
        }
    }

    fn negative<'a>(
        &self,
        client: &[u8],
        q: &Query,
        zone: &'a str,
        code: ResponseCode,
    ) -> LocalVerdict<'a> {
        let mut reply = self.reply_message(q, Vec::new(), Some(self.soa(zone)));
        reply.metadata.response_code = code;
        LocalVerdict::Answer(encode(reply, client, q), Why::LocalOnly { zone, code })
    }

    fn soa(&self, zone: &str) -> Record {
        let origin = Name::from_ascii(format!("{zone}.")).unwrap_or_else(|_| Name::root());
        let mname = Name::from_ascii(format!("virtdns.{zone}.")).unwrap_or_else(|_| origin.clone());
        let rname =
            Name::from_ascii(format!("hostmaster.{zone}.")).unwrap_or_else(|_| origin.clone());
        let soa = SOA::new(mname, rname, 1, 3600, 600, 86400, self.ttl);
        Record::from_rdata(origin, self.ttl, RData::SOA(soa))
    }

    fn reply_message(&self, q: &Query, answers: Vec<Record>, soa: Option<Record>) -> Message {
        let mut m = Message::response(q.id, OpCode::Query);
        m.metadata.authoritative = true;
        m.metadata.recursion_desired = q.rd;
        m.metadata.recursion_available = true;
        m.metadata.checking_disabled = q.cd;
        // From the wire labels, not the dotted text: a label holding a `.`, `\` or a byte
        // shown as `\DDD` must come back as the same bytes (found by fuzzing).
        let name = Name::from_labels(q.name.labels()).unwrap_or_else(|_| Name::root());
        let mut question = HQuery::query(name, RecordType::from(q.qtype));
        question.set_query_class(DNSClass::from(q.qclass));
        m.add_query(question);
        m.add_answers(answers);
        m.add_authorities(soa);
        m
    }

    fn reply(
        &self,
        client: &[u8],
        q: &Query,
        answers: Vec<Record>,
        soa: Option<Record>,
    ) -> Vec<u8> {
        encode(self.reply_message(q, answers, soa), client, q)
    }
}

/// Encodes a local answer, with OPT when the client sent one, keeping the client's spelling
/// of the question name.
fn encode(mut m: Message, client: &[u8], q: &Query) -> Vec<u8> {
    if let Some(e) = q.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(wire::EDNS_PAYLOAD)
            .set_dnssec_ok(e.dnssec_ok);
        m.set_edns(edns);
    }
    match m.to_vec() {
        Ok(mut bytes) if bytes.len() >= q.question_end => {
            bytes[wire::HEADER_LEN..q.question_end]
                .copy_from_slice(&client[wire::HEADER_LEN..q.question_end]);
            bytes
        }
        _ => wire::header_only_reply(client, Some(q), wire::Rcode::SERVFAIL, false),
    }
}

fn to_rdata(data: &RecordData) -> RData {
    let name = |d: &crate::types::DomainName| {
        Name::from_ascii(format!("{}.", d.0)).unwrap_or_else(|_| Name::root())
    };
    match data {
        RecordData::A(ip) => RData::A(A(*ip)),
        RecordData::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        RecordData::Cname(t) => RData::CNAME(CNAME(name(t))),
        RecordData::Ptr(t) => RData::PTR(PTR(name(t))),
        RecordData::Txt(parts) => RData::TXT(TXT::new(parts.clone())),
        RecordData::Mx {
            preference,
            exchange,
        } => RData::MX(MX::new(*preference, name(exchange))),
        RecordData::Srv {
            priority,
            weight,
            port,
            target,
        } => RData::SRV(SRV::new(*priority, *weight, *port, name(target))),
    }
}

/// `name` equals `domain` or lies below it (both lower-cased, dotted as `WireName::to_dotted`
/// writes them, no trailing dot). A dot inside a label is escaped and is no boundary.
pub(crate) fn is_within(name: &str, domain: &str) -> bool {
    if name == domain {
        return true;
    }
    let Some(boundary) = name.len().checked_sub(domain.len() + 1) else {
        return false;
    };
    name.ends_with(domain) && name.as_bytes()[boundary] == b'.' && !escaped(name, boundary)
}

/// Whether the byte at `at` is escaped (preceded by an odd number of backslashes).
fn escaped(s: &str, at: usize) -> bool {
    s.as_bytes()[..at]
        .iter()
        .rev()
        .take_while(|b| **b == b'\\')
        .count()
        % 2
        == 1
}

/// A name of one label (dots inside a label are escaped and do not count).
pub(crate) fn is_single_label(name: &str) -> bool {
    !name.is_empty()
        && !name
            .bytes()
            .enumerate()
            .any(|(i, b)| b == b'.' && !escaped(name, i))
}

#[cfg(test)]
mod tests;
