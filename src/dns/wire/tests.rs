//! Wire tests: messages built with hickory-proto, read back by the in-place reader.

use super::*;
use hickory_proto::op::{Edns as HEdns, Message, MessageType, OpCode, Query as HQuery};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

fn query_bytes(name: &str, rtype: RecordType, edns: Option<(u16, bool)>) -> Vec<u8> {
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(HQuery::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some((payload, dnssec_ok)) = edns {
        let mut e = HEdns::new();
        e.set_max_payload(payload).set_dnssec_ok(dnssec_ok);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn reply_bytes(
    q: &[u8],
    answers: &[(u32, [u8; 4])],
    soa: Option<(u32, u32)>,
    code: Rcode,
) -> Vec<u8> {
    let qm = Message::from_vec(q).unwrap();
    let mut m = Message::response(qm.metadata.id, OpCode::Query);
    m.metadata.response_code = hickory_proto::op::ResponseCode::from(0, code.bits());
    m.add_queries(qm.queries.clone());
    let name = qm.queries[0].name().clone();
    for (ttl, ip) in answers {
        m.add_answer(Record::from_rdata(
            name.clone(),
            *ttl,
            RData::A(A::from(std::net::Ipv4Addr::from(*ip))),
        ));
    }
    if let Some((ttl, minimum)) = soa {
        let zone = Name::from_ascii("example.").unwrap();
        let rdata = SOA::new(zone.clone(), zone.clone(), 1, 3600, 600, 86400, minimum);
        m.add_authority(Record::from_rdata(zone, ttl, RData::SOA(rdata)));
    }
    let mut e = HEdns::new();
    e.set_max_payload(4096);
    m.set_edns(e);
    m.to_vec().unwrap()
}

#[test]
fn reads_question_and_edns_in_place() {
    let p = query_bytes("WWW.Example.COM.", RecordType::AAAA, Some((4096, true)));
    let q = parse_query(&p).unwrap();
    assert_eq!(q.id, 0x1234);
    assert_eq!(q.name.to_dotted(), "www.example.com");
    assert_eq!(q.qtype, 28);
    assert!(q.rd);
    let edns = q.edns.unwrap();
    assert_eq!(
        (edns.payload, edns.dnssec_ok, edns.version),
        (4096, true, 0)
    );
    assert_eq!(
        q.udp_limit(),
        EDNS_PAYLOAD as usize,
        "capped at what we advertise"
    );
}

#[test]
fn query_without_edns_is_limited_to_512() {
    let p = query_bytes("a.example.", RecordType::A, None);
    let q = parse_query(&p).unwrap();
    assert!(q.edns.is_none());
    assert_eq!(q.udp_limit(), 512);
}

#[test]
fn malformed_queries_are_dropped_or_formerr() {
    assert_eq!(
        parse_query(&[0; 5]).unwrap_err(),
        QueryProblem::Drop(WireError::Short)
    );
    let mut p = query_bytes("a.example.", RecordType::A, None);
    p[2] |= 0x80;
    assert!(matches!(parse_query(&p), Err(QueryProblem::Drop(_))));
    let p = query_bytes("a.example.", RecordType::A, None);
    for cut in HEADER_LEN..p.len() {
        assert!(
            matches!(
                parse_query(&p[..cut]),
                Err(QueryProblem::Answer(Rcode::FORMERR, _))
            ),
            "cut at {cut}"
        );
    }
    // A compression loop in the question.
    let mut looped = p[..HEADER_LEN].to_vec();
    looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    assert!(matches!(
        parse_query(&looped),
        Err(QueryProblem::Answer(Rcode::FORMERR, _))
    ));
}

#[test]
fn two_opt_records_are_formerr() {
    let mut p = query_bytes("a.example.", RecordType::A, Some((1232, false)));
    let opt = p[p.len() - OPT_LEN..].to_vec();
    p.extend_from_slice(&opt);
    set_count(&mut p, 3, 2);
    assert_eq!(
        parse_query(&p).unwrap_err(),
        QueryProblem::Answer(Rcode::FORMERR, WireError::DuplicateOpt)
    );
}

#[test]
fn upstream_query_carries_question_and_our_opt_only() {
    let client = query_bytes("Mixed.Case.", RecordType::MX, Some((4096, true)));
    let q = parse_query(&client).unwrap();
    let up = upstream_query(&client, &q, 0xbeef, true);
    let m = Message::from_vec(&up).unwrap();
    assert_eq!(m.metadata.id, 0xbeef);
    assert_eq!(m.queries[0].name().to_ascii(), "Mixed.Case.");
    let e = m.edns.unwrap();
    assert_eq!(e.max_payload(), EDNS_PAYLOAD);
    assert!(e.flags().dnssec_ok);
}

#[test]
fn positive_reply_ttl_is_lowest_answer_ttl() {
    let q = query_bytes("a.example.", RecordType::A, None);
    let pq = parse_query(&q).unwrap();
    let r = reply_bytes(
        &q,
        &[(300, [192, 0, 2, 1]), (60, [192, 0, 2, 2])],
        None,
        Rcode::NOERROR,
    );
    let info = read_reply(&r, &pq, 0x1234).unwrap();
    assert_eq!(info.cache_ttl, Some(60));
    assert_eq!(info.ttl_offsets.len(), 2);
    assert!(info.opt.is_some());
}

#[test]
fn negative_reply_ttl_is_soa_minimum_bounded_by_soa_ttl() {
    let q = query_bytes("nx.example.", RecordType::A, None);
    let pq = parse_query(&q).unwrap();
    let r = reply_bytes(&q, &[], Some((900, 120)), Rcode::NXDOMAIN);
    assert_eq!(read_reply(&r, &pq, 0x1234).unwrap().cache_ttl, Some(120));
    let r = reply_bytes(&q, &[], Some((30, 120)), Rcode::NXDOMAIN);
    assert_eq!(read_reply(&r, &pq, 0x1234).unwrap().cache_ttl, Some(30));
    let r = reply_bytes(&q, &[], None, Rcode::NXDOMAIN);
    assert_eq!(read_reply(&r, &pq, 0x1234).unwrap().cache_ttl, None);
}

#[test]
fn the_zone_a_negative_answer_speaks_for_is_counted_in_labels() {
    let q = query_bytes("nx.example.", RecordType::A, None);
    let pq = parse_query(&q).unwrap();
    let r = reply_bytes(&q, &[], Some((900, 120)), Rcode::NXDOMAIN);
    assert_eq!(read_reply(&r, &pq, 0x1234).unwrap().soa_labels, Some(1));
    let r = reply_bytes(&q, &[], None, Rcode::NXDOMAIN);
    assert_eq!(read_reply(&r, &pq, 0x1234).unwrap().soa_labels, None);
}

#[test]
fn reply_for_another_question_or_id_is_rejected() {
    let q = query_bytes("a.example.", RecordType::A, None);
    let pq = parse_query(&q).unwrap();
    let other = query_bytes("b.example.", RecordType::A, None);
    let r = reply_bytes(&other, &[(60, [192, 0, 2, 1])], None, Rcode::NOERROR);
    assert_eq!(read_reply(&r, &pq, 0x1234), Err(ReplyMismatch::Question));
    let r = reply_bytes(&q, &[(60, [192, 0, 2, 1])], None, Rcode::NOERROR);
    assert_eq!(read_reply(&r, &pq, 0x4321), Err(ReplyMismatch::Header));
}

#[test]
fn stored_reply_is_aged_and_reissued_for_the_client() {
    let q = query_bytes("a.example.", RecordType::A, Some((1232, false)));
    let pq = parse_query(&q).unwrap();
    let mut r = reply_bytes(&q, &[(300, [192, 0, 2, 1])], None, Rcode::NOERROR);
    let mut info = read_reply(&r, &pq, 0x1234).unwrap();
    strip_hop_by_hop(&mut r, &mut info);
    assert_eq!(arcount(&r), 0);
    age_ttls(&mut r, &info.ttl_offsets, 100);

    let client = query_bytes("A.EXAMPLE.", RecordType::A, Some((1232, false)));
    let mut cq = parse_query(&client).unwrap();
    cq.id = 0x7777;
    assert!(finish_reply(&mut r, &client, &cq, cq.udp_limit()));
    let m = Message::from_vec(&r).unwrap();
    assert_eq!(m.metadata.id, 0x7777);
    assert!(m.metadata.recursion_available);
    assert_eq!(m.answers[0].ttl, 200);
    assert_eq!(m.queries[0].name().to_ascii(), "A.EXAMPLE.");
    assert!(m.edns.is_some());
}

#[test]
fn ttl_with_top_bit_counts_as_zero_and_aging_saturates() {
    let mut p = vec![0x80, 0, 0, 1, 0, 0, 0, 10];
    age_ttls(&mut p, &[0, 4], 20);
    assert_eq!(p, [0, 0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn header_only_reply_echoes_question() {
    let q = query_bytes("a.example.", RecordType::A, Some((1232, true)));
    let pq = parse_query(&q).unwrap();
    let r = header_only_reply(&q, Some(&pq), Rcode::SERVFAIL, true);
    let m = Message::from_vec(&r).unwrap();
    assert_eq!(
        m.metadata.response_code,
        hickory_proto::op::ResponseCode::ServFail
    );
    assert!(m.metadata.truncation);
    assert_eq!(m.queries.len(), 1);
    assert!(m.edns.unwrap().flags().dnssec_ok);
}

#[test]
fn names_convert_between_forms() {
    let n = name_from_dotted("Www.Example.com.").unwrap();
    assert_eq!(n.to_dotted(), "www.example.com");
    assert_eq!(n.label_count(), 3);
    assert_eq!(name_from_dotted("").unwrap().label_count(), 0);
}

#[test]
fn the_longest_name_fully_escaped_is_written_on_the_stack_as_in_a_string() {
    // Four labels of unprintable bytes, 255 bytes in all: every byte becomes \DDD.
    let mut wire = Vec::new();
    for len in [63u8, 63, 63, 61] {
        wire.push(len);
        wire.extend(std::iter::repeat_n(7u8, usize::from(len)));
    }
    wire.push(0);
    let n = WireName::verbatim(&wire).unwrap();
    let text = n.to_dotted();
    assert_eq!(text.len(), 4 * 250 + 3);
    assert!(text.starts_with("\\007\\007"));
    assert_eq!(n.dotted().as_str(), text);
    // A backslash in a label is escaped too.
    let plain = name_from_dotted("a\\.b.example").unwrap();
    assert_eq!(plain.dotted().as_str(), "a\\\\.b.example");
    assert_eq!(plain.dotted().as_str(), plain.to_dotted());
}

#[test]
fn compressed_question_is_formerr() {
    // "b." with the root reached through a pointer (to the header's last byte, a zero):
    // same name, different length.
    let mut p = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    p.extend_from_slice(&[1, b'b', 0xc0, 11, 0, 1, 0, 1]);
    assert_eq!(
        parse_query(&p).unwrap_err(),
        QueryProblem::Answer(Rcode::FORMERR, WireError::CompressedQuestion)
    );
    // b.example with "example" written after the question and pointed to: a pointer to no
    // prior occurrence.
    let mut p = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    p.extend_from_slice(&[1, b'b', 0xc0, 18, 0, 1, 0, 1, 7]);
    p.extend_from_slice(b"example");
    p.push(0);
    assert_eq!(
        parse_query(&p).unwrap_err(),
        QueryProblem::Answer(Rcode::FORMERR, WireError::BadName)
    );
}

#[test]
fn reply_without_question_is_accepted_only_for_formerr_and_notimp() {
    let q = query_bytes("a.example.", RecordType::A, None);
    let pq = parse_query(&q).unwrap();
    for (code, accepted) in [
        (Rcode::SERVFAIL, false),
        (Rcode::NXDOMAIN, false),
        (Rcode::NOTIMP, true),
    ] {
        let mut bare = q[..HEADER_LEN].to_vec();
        bare[2] |= 0x80;
        bare[3] = code.bits();
        bare[4..12].fill(0);
        assert_eq!(
            read_reply(&bare, &pq, 0x1234).is_ok(),
            accepted,
            "rcode {code}"
        );
    }
}

#[test]
fn opt_outside_the_additional_section_is_malformed() {
    let q = query_bytes("a.example.", RecordType::A, None);
    let pq = parse_query(&q).unwrap();
    let mut r = q.clone();
    r[2] |= 0x80;
    set_count(&mut r, 1, 1); // one "answer": an OPT record
    r.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        read_reply(&r, &pq, 0x1234),
        Err(ReplyMismatch::Malformed(WireError::MisplacedOpt))
    );
}

#[test]
fn ttls_are_capped_in_place() {
    let mut p = vec![0, 0, 1, 0, 0, 0, 0, 5];
    cap_ttls(&mut p, &[0, 4], 60);
    assert_eq!(p, [0, 0, 0, 60, 0, 0, 0, 5]);
}

/// Bytes after the last record (seen from fuzzing): accepted, as BIND, dnsmasq and glibc accept
/// them, and cut before the reply is stored, so an EDNS client gets our OPT right after the
/// records instead of after the bytes (where dig says "Got bad packet: FORMERR").
#[test]
fn bytes_after_the_last_record_are_accepted_and_cut() {
    use crate::dns::cache::Answer;
    let garbage = [0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1, 0x2a];
    let q = query_bytes("a.example.", RecordType::A, Some((1232, false)));
    let pq = parse_query(&q).unwrap();
    let positive = reply_bytes(&q, &[(300, [192, 0, 2, 1])], None, Rcode::NOERROR);
    let negative = reply_bytes(&q, &[], Some((900, 120)), Rcode::NXDOMAIN);
    let mut without_opt = positive[..positive.len() - OPT_LEN].to_vec();
    set_count(&mut without_opt, 3, 0);
    let mut no_records = q[..pq.question_end].to_vec();
    no_records[2] |= 0x80;
    no_records[3] = Rcode::NXDOMAIN.bits();
    set_count(&mut no_records, 3, 0);
    for (what, clean) in [
        ("an answer and OPT", positive),
        ("SOA and OPT", negative),
        ("an answer, no OPT", without_opt),
        ("no records", no_records),
    ] {
        let mut dirty = clean.clone();
        dirty.extend_from_slice(&garbage);
        let mut info = read_reply(&dirty, &pq, 0x1234).expect(what);
        let mut clean_info = read_reply(&clean, &pq, 0x1234).unwrap();
        assert_eq!(info, clean_info, "{what}: the same reply");
        strip_hop_by_hop(&mut dirty, &mut info);
        let mut stripped = clean.clone();
        strip_hop_by_hop(&mut stripped, &mut clean_info);
        assert_eq!(dirty, stripped, "{what}: stored without the bytes");
        assert_eq!(records_end(&dirty, pq.question_end), Ok(dirty.len()));

        let answer = Answer::new(dirty, info.ttl_offsets, 60, std::time::Instant::now());
        let client = query_bytes("A.Example.", RecordType::A, Some((1232, true)));
        let cq = parse_query(&client).unwrap();
        let out = answer.render(&client, &cq, cq.udp_limit(), std::time::Instant::now());
        let m = Message::from_vec(&out).expect(what);
        let e = m.edns.expect("our OPT");
        assert!(e.flags().dnssec_ok, "{what}");
        assert_eq!(m.answers.len(), ancount(&clean) as usize, "{what}");
        assert_eq!(
            &out[out.len() - OPT_LEN..out.len() - 6],
            &[0, 0, 41, 4, 208]
        );
    }
}

/// An OPT may stand anywhere in the additional section (RFC 6891 6.1.1), and the records
/// after it may be compressed against each other (seen from fuzzing): cutting the OPT alone
/// from between them would leave their pointers aimed at the wrong bytes. The OPT goes with
/// every record after it.
#[test]
fn records_after_the_opt_go_with_it() {
    use crate::dns::cache::Answer;
    let q = query_bytes("a.example.", RecordType::A, Some((1232, false)));
    let pq = parse_query(&q).unwrap();
    let mut r = reply_bytes(&q, &[(300, [192, 0, 2, 1])], None, Rcode::NOERROR);
    r.truncate(r.len() - OPT_LEN); // hickory put its OPT last; ours goes first
    push_opt(&mut r, false, 0);
    let glue = r.len();
    r.extend_from_slice(b"\x03ns1\x07example\x00");
    r.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 53]);
    r.extend_from_slice(&[0xc0, glue as u8]); // the same owner, compressed
    r.extend_from_slice(&[0, 28, 0, 1, 0, 0, 0, 60, 0, 16]);
    r.extend_from_slice(&[
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53,
    ]);
    set_count(&mut r, 3, 3);
    let upstream = Message::from_vec(&r).unwrap();
    assert_eq!(upstream.additionals.len(), 2);

    let mut info = read_reply(&r, &pq, 0x1234).unwrap();
    assert_eq!(info.ttl_offsets.len(), 3);
    strip_hop_by_hop(&mut r, &mut info);
    assert_eq!((arcount(&r), info.ttl_offsets.len()), (0, 1));
    assert_eq!(records_end(&r, pq.question_end), Ok(r.len()));

    let answer = Answer::new(r, info.ttl_offsets, 60, std::time::Instant::now());
    let out = answer.render(&q, &pq, pq.udp_limit(), std::time::Instant::now());
    let m = Message::from_vec(&out).unwrap();
    assert_eq!((m.answers.len(), m.additionals.len()), (1, 0));
    assert!(m.edns.is_some());
}

/// Found by fuzzing: an upstream reply to our unsigned query with a TSIG record last. Passed
/// on with our OPT after it, the reply broke TSIG's rule of coming last (hickory refuses it);
/// the TSIG is the upstream's signature of its own message, hop-by-hop like the OPT.
#[test]
fn an_upstream_tsig_goes_like_the_opt() {
    use crate::dns::cache::Answer;
    let q = query_bytes("a.example.", RecordType::A, Some((1232, false)));
    let pq = parse_query(&q).unwrap();
    let mut r = reply_bytes(&q, &[(300, [192, 0, 2, 1])], None, Rcode::NOERROR);
    r.truncate(r.len() - OPT_LEN);
    // A TSIG: key name, type 250, class ANY, TTL 0, and some RDATA.
    r.extend_from_slice(b"\x03key\x00");
    r.extend_from_slice(&[0, 250, 0, 255, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4]);
    set_count(&mut r, 3, 1);
    let mut info = read_reply(&r, &pq, 0x1234).unwrap();
    assert_eq!(
        info.ttl_offsets.len(),
        1,
        "the TSIG's TTL is not the answer's"
    );
    assert!(info.signature.is_some());
    strip_hop_by_hop(&mut r, &mut info);
    assert_eq!(arcount(&r), 0);
    assert_eq!(records_end(&r, pq.question_end), Ok(r.len()));

    let answer = Answer::new(r, info.ttl_offsets, 60, std::time::Instant::now());
    let out = answer.render(&q, &pq, pq.udp_limit(), std::time::Instant::now());
    let m = Message::from_vec(&out).expect("hickory reads what a client gets");
    assert_eq!((m.answers.len(), m.additionals.len()), (1, 0));
    assert!(m.edns.is_some() && m.signature().is_none());
}

/// A record of the additional section of `with_additional`'s reply.
#[derive(Clone, Copy)]
enum Extra {
    /// An A record for the question's name.
    Glue,
    /// A TSIG record (its RDATA is not a real signature).
    Tsig,
}

/// A reply to `a.example. A` with one answer, no OPT, and `extras` as its additional section:
/// the query's parse, the reply, and where each extra record starts.
fn with_additional(extras: &[Extra]) -> (Query, Vec<u8>, Vec<usize>) {
    let q = query_bytes("a.example.", RecordType::A, None);
    let pq = parse_query(&q).unwrap();
    let mut r = reply_bytes(&q, &[(300, [192, 0, 2, 1])], None, Rcode::NOERROR);
    r.truncate(r.len() - OPT_LEN);
    let glue = [0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 9];
    let tsig = [
        3, b'k', b'e', b'y', 0, 0, 250, 0, 255, 0, 0, 0, 0, 0, 2, 1, 2,
    ];
    let mut starts = Vec::new();
    for extra in extras {
        starts.push(r.len());
        r.extend_from_slice(match extra {
            Extra::Glue => &glue[..],
            Extra::Tsig => &tsig[..],
        });
    }
    set_count(&mut r, 3, extras.len() as u16);
    (pq, r, starts)
}

#[test]
fn records_after_a_first_tsig_go_with_it_and_arcount_counts_what_is_left() {
    // Additional: an A record, a TSIG, then a malformed second TSIG and another A record.
    let (pq, mut r, _) = with_additional(&[Extra::Glue, Extra::Tsig, Extra::Tsig, Extra::Glue]);
    let mut info = read_reply(&r, &pq, 0x1234).unwrap();
    assert_eq!(info.ttl_offsets.len(), 3, "answer and two glue records");
    strip_hop_by_hop(&mut r, &mut info);
    assert_eq!(
        (ancount(&r), arcount(&r)),
        (1, 1),
        "the glue before the TSIG stays"
    );
    assert_eq!(info.ttl_offsets.len(), 2);
    assert_eq!(records_end(&r, pq.question_end), Ok(r.len()));
    Message::from_vec(&r).expect("hickory reads what is stored");
}

/// Two TSIG records with the second last: the span runs to the end of the last one, so the
/// reply's end is found without walking it again (`end_of_records` checks that in debug builds).
#[test]
fn a_second_tsig_last_is_inside_the_signature_span() {
    let (pq, mut r, starts) =
        with_additional(&[Extra::Glue, Extra::Tsig, Extra::Glue, Extra::Tsig]);
    let first = starts[1];
    r.extend_from_slice(b"trailing");
    let mut info = read_reply(&r, &pq, 0x1234).unwrap();
    assert_eq!(info.signature, Some(first..r.len() - b"trailing".len()));
    strip_hop_by_hop(&mut r, &mut info);
    assert_eq!((ancount(&r), arcount(&r)), (1, 1));
    assert_eq!(records_end(&r, pq.question_end), Ok(r.len()));
}

// ---- cookies and 0x20 -----------------------------------------------------------------------

/// A name's wire form, spelled as given.
fn wire_name(dotted: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in dotted.split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

#[test]
fn upstream_query_carries_our_cookie_in_its_opt() {
    let client = query_bytes("a.example.", RecordType::A, Some((4096, false)));
    let q = parse_query(&client).unwrap();
    let cookie: Vec<u8> = (1..=24).collect();
    let up = upstream_query_with(&client, &q, 0xbeef, true, &cookie);
    assert_eq!(up.capacity(), up.len(), "allocated once, at its size");
    let m = Message::from_vec(&up).expect("hickory reads it");
    assert_eq!(m.edns.unwrap().max_payload(), EDNS_PAYLOAD);
    let pq = parse_query(&up).unwrap();
    let opt = find_opt(&up, pq.question_end).unwrap().unwrap();
    assert_eq!(opt_option(&up, &opt, OPTION_COOKIE), Some(&cookie[..]));
    assert_eq!(opt_option(&up, &opt, 8), None);
    // No EDNS, no cookie; an empty cookie, a plain OPT.
    let up = upstream_query_with(&client, &q, 1, false, &cookie);
    assert_eq!(arcount(&up), 0);
    assert_eq!(
        upstream_query_with(&client, &q, 1, true, &[]),
        upstream_query(&client, &q, 1, true)
    );
    // An option that runs past its OPT is not read.
    let mut bad = upstream_query_with(&client, &q, 1, true, &cookie);
    let len_at = bad.len() - cookie.len() - 2;
    bad[len_at..len_at + 2].copy_from_slice(&100u16.to_be_bytes());
    assert_eq!(opt_option(&bad, &opt, OPTION_COOKIE), None);
}

#[test]
fn randomize_case_changes_letters_only_and_draws_each_from_a_bit() {
    let original = wire_name("ab-1.example.COM");
    let mut seen_upper = [false; 16];
    let mut seen_lower = [false; 16];
    for draw in 0..64u64 {
        let mut name = original.clone();
        let (letters, upper) =
            randomize_case(&mut name, || draw.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        assert_eq!(letters, 12);
        assert_eq!(
            upper,
            name.iter().filter(|b| b.is_ascii_uppercase()).count() as u32
        );
        assert!(name.eq_ignore_ascii_case(&original), "same name");
        for (i, (a, b)) in name.iter().zip(&original).enumerate() {
            if !b.is_ascii_alphabetic() {
                assert_eq!(a, b, "byte {i} is no letter and stays");
            } else if i < 16 {
                seen_upper[i] |= a.is_ascii_uppercase();
                seen_lower[i] |= a.is_ascii_lowercase();
            }
        }
    }
    for i in [1, 2, 6, 7, 8] {
        assert!(
            seen_upper[i] && seen_lower[i],
            "letter at {i} took both cases"
        );
    }
    // Bit by bit: all ones capitalise every letter, zeros none.
    let mut name = original.clone();
    assert_eq!(randomize_case(&mut name, || u64::MAX), (12, 12));
    assert_eq!(name, wire_name("AB-1.EXAMPLE.COM"));
    assert_eq!(randomize_case(&mut name, || 0), (12, 0));
    assert_eq!(name, wire_name("ab-1.example.com"));
    // More letters than one draw holds.
    let mut long = wire_name(&"a".repeat(63));
    let mut draws = 0;
    randomize_case(&mut long, || {
        draws += 1;
        u64::MAX
    });
    assert_eq!(draws, 1);
    let mut longer = wire_name(&format!("{}.{}", "a".repeat(63), "b".repeat(10)));
    let mut draws = 0;
    randomize_case(&mut longer, || {
        draws += 1;
        0
    });
    assert_eq!(draws, 2);
}

#[test]
fn respell_puts_the_clients_spelling_back_in_the_question_and_whole_owners() {
    let sent = wire_name("wWw.ExAmple.cOm");
    let theirs = wire_name("www.Example.com");
    let mut p = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0];
    p.extend_from_slice(&sent);
    p.extend_from_slice(&[0, 1, 0, 1]);
    let question_end = p.len();
    // An owner written out in full, then one compressed to the question.
    p.extend_from_slice(&sent);
    p.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
    p.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 2]);
    let before = p.clone();
    respell(&mut p, question_end, &sent, &theirs).unwrap();
    assert_eq!(&p[12..12 + sent.len()], &theirs[..]);
    assert_eq!(&p[question_end..question_end + sent.len()], &theirs[..]);
    assert_eq!(p.len(), before.len());
    assert_eq!(
        p[question_end + sent.len()..],
        before[question_end + sent.len()..]
    );
    let m = Message::from_vec(&p).unwrap();
    assert_eq!(m.answers[0].name.to_ascii(), "www.Example.com.");
    assert_eq!(m.answers[1].name.to_ascii(), "www.Example.com.");
    // A reply cut short is reported, not read past.
    let mut cut = before[..before.len() - 3].to_vec();
    assert!(respell(&mut cut, question_end, &sent, &theirs).is_err());
}

#[test]
fn extended_rcode_joins_header_and_opt() {
    let q = query_bytes("a.example.", RecordType::A, None);
    let pq = parse_query(&q).unwrap();
    let mut r = q[..pq.question_end].to_vec();
    r[2] |= 0x80;
    r[3] = 7;
    push_opt(&mut r, false, 1);
    let info = read_reply(&r, &pq, 0x1234).unwrap();
    assert_eq!(extended_rcode(&r, &info), BADCOOKIE);
    r[3] = 0;
    let info = read_reply(&r, &pq, 0x1234).unwrap();
    assert_eq!(extended_rcode(&r, &info), 16, "BADVERS");
}

/// A name's pointer must point to a prior occurrence (RFC 1035 4.1.4). A reply whose SOA
/// owner pointed into the bytes after its last record was read, then cut at that record
/// (`strip_hop_by_hop`), and the bytes stored could no longer be read (seen from fuzzing):
/// such a pointer, and one to a name that runs past the pointer, make the reply malformed.
#[test]
fn a_name_pointer_reaches_only_what_comes_before_it() {
    let q = query_bytes("a.example.", RecordType::A, None);
    let pq = parse_query(&q).unwrap();
    let soa_reply = |owner: &[u8], tail: &[u8]| {
        let mut r = q[..pq.question_end].to_vec();
        r[2] |= 0x80;
        r[9] = 1; // NSCOUNT
        r.extend_from_slice(owner);
        r.extend_from_slice(&[0, 6, 0, 1, 0, 0, 0, 60, 0, 22]);
        r.extend_from_slice(&[0, 0]); // MNAME and RNAME: the root
        r.extend_from_slice(&[
            0, 0, 0, 1, 0, 0, 0, 60, 0, 0, 0, 60, 0, 0, 0, 60, 0, 0, 0, 60,
        ]);
        r.extend_from_slice(tail);
        r
    };
    // "example." compressed to the question: read, and read again once cut.
    let back = soa_reply(&[0xc0, 14], &[]);
    let info = read_reply(&back, &pq, 0x1234).unwrap();
    assert_eq!(info.soa_labels, Some(1));
    // The same name written after the last record, and pointed to.
    let after = (pq.question_end + 2 + 10 + 22) as u8;
    let forward = soa_reply(
        &[0xc0, after],
        &[7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0],
    );
    assert_eq!(
        read_reply(&forward, &pq, 0x1234),
        Err(ReplyMismatch::Malformed(WireError::BadName))
    );
    // A pointer to itself, and one to a name that runs past the pointer.
    let own = pq.question_end as u8;
    let looped = soa_reply(&[0xc0, own], &[]);
    assert!(read_reply(&looped, &pq, 0x1234).is_err());
    let mut overlong = q[..pq.question_end].to_vec();
    overlong[2] |= 0x80;
    overlong[9] = 1;
    overlong.extend_from_slice(&[1, b'x', 0xc0, pq.question_end as u8]);
    overlong.extend_from_slice(&[0, 6, 0, 1, 0, 0, 0, 60, 0, 22, 0, 0]);
    overlong.extend_from_slice(&[0; 20]);
    assert!(read_reply(&overlong, &pq, 0x1234).is_err());
}
