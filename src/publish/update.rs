//! The dynamic updates (RFC 2136) that publish one guest, and the conflict rules of RFC 4703
//! that decide between them: a name is added only where nobody holds it, replaced only where
//! this client's DHCID holds it, and removed only while it still does. Messages are built
//! with hickory-proto's types; they go out through `Updater`, the seam to the primary
//! servers (`primary` over TCP with TSIG; a scripted one in tests).

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, NULL, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use std::future::Future;
use std::net::Ipv4Addr;

/// RFC 4701's DHCID, a type hickory-proto does not model: sent as opaque RDATA.
const DHCID: RecordType = RecordType::Unknown(49);

/// One guest's name as this host wants it in the zone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entry {
    /// Lower case, without the final dot.
    pub fqdn: String,
    pub addr: Ipv4Addr,
    /// RFC 4701 RDATA for the client holding it.
    pub(crate) dhcid: Vec<u8>,
}

/// Where an update goes and what it concerns.
#[derive(Debug, Clone)]
pub struct Zones {
    pub forward: Name,
    /// Reverse zones, most specific first.
    pub(crate) reverse: Vec<Name>,
    pub(crate) ttl: u32,
}

/// Why an update did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// No server could be reached or answered in time.
    #[error("{0}")]
    Unreachable(String),
    /// A server answered, but not with a result of the update's prerequisites.
    #[error("{0}")]
    Rejected(String),
}

/// Sends one update to the zone's primaries and returns the RCODE of the first answer.
pub trait Updater {
    fn send(
        &self,
        update: Message,
    ) -> impl Future<Output = Result<ResponseCode, UpdateError>> + Send;
}

/// How publishing an entry ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Added {
    Published,
    /// The name belongs to another client, another host's guest, or an administrator.
    Conflict,
}

/// RFC 4703 5.3: add the name where it is free; where it is in use, take it over only if our
/// DHCID is on it (the same guest, also from another host of the fleet). Then the PTR.
pub(crate) async fn add(
    updater: &impl Updater,
    zones: &Zones,
    entry: &Entry,
) -> Result<Added, UpdateError> {
    let name = fqdn(entry)?;
    match updater.send(create_if_free(zones, &name, entry)).await? {
        ResponseCode::NoError => {}
        ResponseCode::YXDomain => match updater.send(replace_if_ours(zones, &name, entry)).await? {
            ResponseCode::NoError => {}
            ResponseCode::NXRRSet => return Ok(Added::Conflict),
            other => return Err(rejected("replace", other)),
        },
        other => return Err(rejected("add", other)),
    }
    if let Some(update) = set_ptr(zones, &name, entry.addr) {
        match updater.send(update).await? {
            ResponseCode::NoError => {}
            other => return Err(rejected("PTR", other)),
        }
    }
    Ok(Added::Published)
}

/// RFC 4703 5.5: remove the address while our DHCID is on the name, then the DHCID once no
/// address is left (another host may have given the same guest another address meanwhile),
/// then our PTR. A name that is no longer ours is left as it is.
pub(crate) async fn remove(
    updater: &impl Updater,
    zones: &Zones,
    entry: &Entry,
) -> Result<(), UpdateError> {
    let name = fqdn(entry)?;
    match updater
        .send(delete_address_if_ours(zones, &name, entry))
        .await?
    {
        ResponseCode::NoError => {
            match updater
                .send(delete_dhcid_if_bare(zones, &name, entry))
                .await?
            {
                ResponseCode::NoError | ResponseCode::NXRRSet | ResponseCode::YXRRSet => {}
                other => return Err(rejected("DHCID removal", other)),
            }
        }
        ResponseCode::NXRRSet | ResponseCode::NXDomain => {}
        other => return Err(rejected("removal", other)),
    }
    if let Some(update) = delete_ptr(zones, &name, entry.addr) {
        match updater.send(update).await? {
            ResponseCode::NoError => {}
            other => return Err(rejected("PTR removal", other)),
        }
    }
    Ok(())
}

fn rejected(what: &str, rcode: ResponseCode) -> UpdateError {
    let hint = match rcode {
        ResponseCode::NotAuth => ": the server does not accept updates to this zone with this key",
        ResponseCode::Refused => ": the server's update policy refuses it",
        ResponseCode::NotZone => ": the name is outside the zone",
        _ => "",
    };
    UpdateError::Rejected(format!("{what} answered {rcode}{hint}"))
}

fn fqdn(entry: &Entry) -> Result<Name, UpdateError> {
    Name::from_ascii(format!("{}.", entry.fqdn))
        .map_err(|e| UpdateError::Rejected(format!("'{}' is not a domain name: {e}", entry.fqdn)))
}

/// An update to `zone`: the zone section names it (RFC 2136 2.3).
fn message(zone: &Name) -> Message {
    let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Update);
    m.add_query(Query::query(zone.clone(), RecordType::SOA));
    m
}

fn a(name: &Name, ttl: u32, addr: Ipv4Addr) -> Record {
    Record::from_rdata(name.clone(), ttl, RData::A(A(addr)))
}

fn dhcid(name: &Name, ttl: u32, entry: &Entry) -> Record {
    Record::from_rdata(
        name.clone(),
        ttl,
        RData::Unknown {
            code: DHCID,
            rdata: NULL::with(entry.dhcid.clone()),
        },
    )
}

/// A record in `class` with TTL 0: a prerequisite or a deletion (RFC 2136 2.4, 2.5).
fn with_class(mut record: Record, class: DNSClass) -> Record {
    record.dns_class = class;
    record.ttl = 0;
    record
}

/// RRset or name without data, in `class` (RFC 2136 2.4.1, 2.4.3-5, 2.5.2).
fn empty(name: &Name, rtype: RecordType, class: DNSClass) -> Record {
    with_class(Record::update0(name.clone(), 0, rtype), class)
}

/// Prerequisite "name is not in use" (RFC 2136 2.4.5); adds A and DHCID.
fn create_if_free(zones: &Zones, name: &Name, entry: &Entry) -> Message {
    let mut m = message(&zones.forward);
    m.add_answer(empty(name, RecordType::ANY, DNSClass::NONE));
    m.add_authority(a(name, zones.ttl, entry.addr));
    m.add_authority(dhcid(name, zones.ttl, entry));
    m
}

/// Prerequisite "our DHCID is there" (RFC 2136 2.4.2); replaces the A RRset.
fn replace_if_ours(zones: &Zones, name: &Name, entry: &Entry) -> Message {
    let mut m = message(&zones.forward);
    m.add_answer(with_class(dhcid(name, 0, entry), DNSClass::IN));
    m.add_authority(empty(name, RecordType::A, DNSClass::ANY));
    m.add_authority(a(name, zones.ttl, entry.addr));
    m
}

/// Prerequisite "our DHCID is there"; deletes our address (RFC 2136 2.5.4).
fn delete_address_if_ours(zones: &Zones, name: &Name, entry: &Entry) -> Message {
    let mut m = message(&zones.forward);
    m.add_answer(with_class(dhcid(name, 0, entry), DNSClass::IN));
    m.add_authority(with_class(a(name, 0, entry.addr), DNSClass::NONE));
    m
}

/// Prerequisites "our DHCID is there, no A, no AAAA" (RFC 2136 2.4.3); deletes the DHCID.
fn delete_dhcid_if_bare(zones: &Zones, name: &Name, entry: &Entry) -> Message {
    let mut m = message(&zones.forward);
    m.add_answer(with_class(dhcid(name, 0, entry), DNSClass::IN));
    m.add_answer(empty(name, RecordType::A, DNSClass::NONE));
    m.add_answer(empty(name, RecordType::AAAA, DNSClass::NONE));
    m.add_authority(with_class(dhcid(name, 0, entry), DNSClass::NONE));
    m
}

/// The address's PTR name and the configured reverse zone holding it, if any.
fn reverse(zones: &Zones, addr: Ipv4Addr) -> Option<(Name, Name)> {
    let [a, b, c, d] = addr.octets();
    let name = Name::from_ascii(format!("{d}.{c}.{b}.{a}.in-addr.arpa.")).ok()?;
    let zone = zones.reverse.iter().find(|z| z.zone_of(&name))?;
    Some((name, zone.clone()))
}

/// Replaces the PTR RRset of the address (RFC 4703 5.4: the address is the lease's).
fn set_ptr(zones: &Zones, target: &Name, addr: Ipv4Addr) -> Option<Message> {
    let (name, zone) = reverse(zones, addr)?;
    let mut m = message(&zone);
    m.add_authority(empty(&name, RecordType::PTR, DNSClass::ANY));
    m.add_authority(Record::from_rdata(
        name,
        zones.ttl,
        RData::PTR(PTR(target.clone())),
    ));
    Some(m)
}

/// Deletes our PTR only (RFC 2136 2.5.4): another name put there since stays.
fn delete_ptr(zones: &Zones, target: &Name, addr: Ipv4Addr) -> Option<Message> {
    let (name, zone) = reverse(zones, addr)?;
    let mut m = message(&zone);
    m.add_authority(with_class(
        Record::from_rdata(name, 0, RData::PTR(PTR(target.clone()))),
        DNSClass::NONE,
    ));
    Some(m)
}

#[cfg(test)]
mod tests;
