//! DHCPv4 decisions (RFC 2131 4.3, options per RFC 2132): for one client message, what to
//! answer and which lease changes must be durable before the answer goes out. No I/O here:
//! `socket` delivers, `store` persists.

use crate::dhcp::pool::{ClientId, Lease, Pool, client_id_from_mac};
use crate::dhcp::store::{Change, LeaseLog};
use crate::types::{Mac, Subnet, host_label};
use dhcproto::v4::{DhcpOption, HType, Message, MessageType, Opcode, OptionCode};
use std::net::Ipv4Addr;

/// What the server hands to every client of a subnet.
#[derive(Debug, Clone)]
pub struct Offerings {
    /// Option 54, the server identifier: our address on the subnet.
    pub server: Ipv4Addr,
    /// Option 51, the lease time in seconds (renewal at half of it, rebinding at 7/8).
    pub lease_time: u32,
    /// Option 3, the router.
    pub router: Option<Ipv4Addr>,
    /// Option 6, the DNS servers.
    pub dns_servers: Vec<Ipv4Addr>,
    /// Option 15, the domain name.
    pub domain: Option<String>,
    /// Option 119, the domain search list.
    pub search: Vec<String>,
}

/// The outcome for one message.
#[derive(Debug, Default)]
pub struct Decision {
    /// The reply to send, if any.
    pub reply: Option<Message>,
    /// Made durable before the reply is sent.
    pub changes: Vec<Change>,
    /// True when published names changed (DNS must be updated).
    pub(crate) names_changed: bool,
    /// One line for the debug log.
    pub note: String,
    /// What changed for a lease, for the one info line a person greps for.
    pub(crate) event: Option<LeaseEvent>,
    /// When the lease this decision binds ends, if it binds one.
    pub(crate) earliest_expiry: Option<u64>,
}

/// A decision that changes, or refuses, a lease: logged at info level in dnsmasq's words
/// (`DHCPACK(virbr0) 192.168.122.45 52:54:00:11:22:33 guest1`), which users grep for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LeaseEvent {
    Ack {
        addr: Ipv4Addr,
        mac: Mac,
        name: Option<String>,
    },
    Nak {
        mac: Mac,
        why: String,
    },
    Release {
        addr: Ipv4Addr,
        mac: Mac,
    },
    Decline {
        addr: Ipv4Addr,
        mac: Mac,
    },
}

impl LeaseEvent {
    /// The log line for an event on `interface`.
    pub(crate) fn line(&self, interface: &str) -> String {
        match self {
            LeaseEvent::Ack { addr, mac, name } => format!(
                "DHCPACK({interface}) {addr} {mac}{}",
                name.as_deref().map(|n| format!(" {n}")).unwrap_or_default()
            ),
            LeaseEvent::Nak { mac, why } => format!("DHCPNAK({interface}) {mac} {why}"),
            LeaseEvent::Release { addr, mac } => format!("DHCPRELEASE({interface}) {addr} {mac}"),
            LeaseEvent::Decline { addr, mac } => {
                format!("DHCPDECLINE({interface}) {addr} {mac} (address in use: quarantined)")
            }
        }
    }
}

/// Why a message was not looked at.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Not a BOOTREQUEST.
    NotRequest,
    /// Not Ethernet, or a hardware address length other than 6.
    NotEthernet,
    /// No DHCP magic cookie.
    BadMagic,
    /// No DHCP message type (option 53).
    NoMessageType,
}

/// The parts of a client message every decision needs, checked once.
pub struct ClientMessage<'a> {
    pub(crate) msg: &'a Message,
    /// The DHCP message type (option 53).
    pub kind: MessageType,
    /// The client's hardware address (chaddr).
    pub mac: Mac,
    /// Who the client is: option 61 when it sends one, else hardware type 1 and its MAC.
    pub client: ClientId,
}

const MAGIC: [u8; 4] = [99, 130, 83, 99];

/// Checks a decoded message before use (dhcproto leaves hlen and the magic cookie unchecked).
pub fn validate<'a>(msg: &'a Message, raw: &[u8]) -> Result<ClientMessage<'a>, Rejected> {
    if msg.opcode() != Opcode::BootRequest {
        return Err(Rejected::NotRequest);
    }
    if msg.htype() != HType::Eth || msg.hlen() != 6 {
        return Err(Rejected::NotEthernet);
    }
    if raw.get(236..240) != Some(&MAGIC[..]) {
        return Err(Rejected::BadMagic);
    }
    let kind = msg.opts().msg_type().ok_or(Rejected::NoMessageType)?;
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&msg.chaddr()[..6]);
    let mac = Mac(mac);
    let client = match msg.opts().get(OptionCode::ClientIdentifier) {
        Some(DhcpOption::ClientIdentifier(id)) if !id.is_empty() => id.clone(),
        _ => client_id_from_mac(mac),
    };
    Ok(ClientMessage {
        msg,
        kind,
        mac,
        client,
    })
}

fn requested_ip(msg: &Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(a)) => Some(*a),
        _ => None,
    }
}

fn server_id(msg: &Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(a)) => Some(*a),
        _ => None,
    }
}

/// The subnet selector: option 118, else giaddr, else none (the local interface).
fn selector(msg: &Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::SubnetSelection) {
        Some(DhcpOption::SubnetSelection(a)) => Some(*a),
        _ => Some(msg.giaddr()).filter(|g| !g.is_unspecified()),
    }
}

/// The host name a client asks for (option 81, else 12), reduced to one DNS label.
pub fn requested_name(msg: &Message, domain: Option<&str>) -> Option<String> {
    let raw = match msg.opts().get(OptionCode::ClientFQDN) {
        Some(DhcpOption::ClientFQDN(f)) => {
            let fqdn = f
                .domain()
                .to_ascii()
                .trim_end_matches('.')
                .to_ascii_lowercase();
            match domain {
                Some(d) if fqdn.ends_with(&format!(".{d}")) => {
                    fqdn[..fqdn.len() - d.len() - 1].to_string()
                }
                _ => fqdn,
            }
        }
        _ => match msg.opts().get(OptionCode::Hostname) {
            Some(DhcpOption::Hostname(h)) => h.to_ascii_lowercase(),
            _ => return None,
        },
    };
    host_label(raw.split('.').next().unwrap_or(""))
}

/// A decision whose changes are already queued, in decision order.
pub(crate) struct Logged<P> {
    pub(crate) decision: Decision,
    /// The queued changes' durability, if the decision changed anything.
    pub(crate) pending: Option<P>,
    /// This decision's number, for `Pool::is_latest` (0 when it changed nothing).
    pub(crate) seq: u64,
}

/// Decides `m` and queues its changes to `log` in the same step. The caller holds the pool
/// while this runs, so no other message is decided in between: the log receives every
/// change in the order the decisions were taken, and only waiting for durability is left to
/// do asynchronously.
pub(crate) fn decide_logged<L: LeaseLog>(
    pool: &mut Pool,
    offer: &Offerings,
    m: &ClientMessage,
    now: u64,
    log: &L,
) -> Logged<L::Pending> {
    let mut decision = decide(pool, offer, m, now);
    // Only a decision that changes a lease can overtake an earlier reply; offers need no
    // number (and a DISCOVER flood does not grow the table).
    let changes = std::mem::take(&mut decision.changes);
    let (seq, pending) = if changes.is_empty() {
        (0, None)
    } else {
        (pool.note_decision(&m.client), Some(log.enqueue(changes)))
    };
    Logged {
        decision,
        pending,
        seq,
    }
}

/// Decides the answer to `m` at time `now` (unix seconds).
pub fn decide(pool: &mut Pool, offer: &Offerings, m: &ClientMessage, now: u64) -> Decision {
    match m.kind {
        MessageType::Discover => discover(pool, offer, m, now),
        MessageType::Request => request(pool, offer, m, now),
        MessageType::Release => release(pool, m),
        MessageType::Decline => decline(pool, m, now),
        MessageType::Inform => inform(pool, offer, m),
        other => Decision {
            note: format!("ignoring {other:?} from {}", m.mac),
            ..Default::default()
        },
    }
}

fn discover(pool: &mut Pool, offer: &Offerings, m: &ClientMessage, now: u64) -> Decision {
    let Some(subnet) = pool.subnet_for(selector(m.msg)) else {
        return ignore(format!("DISCOVER from {}: no range for its subnet", m.mac));
    };
    match pool.offer(&m.client, m.mac, requested_ip(m.msg), subnet, now) {
        Some(addr) => Decision {
            reply: Some(reply(m.msg, MessageType::Offer, addr, offer, subnet, true)),
            note: format!("DISCOVER from {}: offering {addr}", m.mac),
            ..Default::default()
        },
        None => ignore(format!(
            "DISCOVER from {}: no free address in {subnet}",
            m.mac
        )),
    }
}

fn request(pool: &mut Pool, offer: &Offerings, m: &ClientMessage, now: u64) -> Decision {
    let msg = m.msg;
    let Some(subnet) = pool.subnet_for(selector(msg)) else {
        return ignore(format!("REQUEST from {}: no range for its subnet", m.mac));
    };
    if let Some(sid) = server_id(msg)
        && sid != offer.server
    {
        // SELECTING another server's offer: ours lapses on its own.
        return ignore(format!("REQUEST from {} chose server {sid}", m.mac));
    }
    // SELECTING or INIT-REBOOT name the address in option 50; RENEWING/REBINDING in ciaddr.
    let wanted = requested_ip(msg).or(Some(msg.ciaddr()).filter(|a| !a.is_unspecified()));
    let Some(addr) = wanted else {
        return nak(
            msg,
            offer,
            format!("REQUEST from {} names no address", m.mac),
        );
    };
    let fixed = pool.static_host(m.mac).and_then(|h| h.address);
    let ok = match fixed {
        Some(f) => f == addr,
        None => {
            pool.held_by(&m.client, now) == Some(addr)
                || pool.available(addr, &m.client, m.mac, subnet, now)
        }
    };
    if !ok {
        if server_id(msg).is_none() && !subnet.contains(addr) && selector(msg).is_none() {
            // INIT-REBOOT on another network: NAK so the client starts over.
            return nak(
                msg,
                offer,
                format!("REQUEST from {} for {addr}: wrong network", m.mac),
            );
        }
        return nak(
            msg,
            offer,
            format!("REQUEST from {} for {addr}: not available", m.mac),
        );
    }
    let name = lease_name(pool, m, offer.domain.as_deref(), now);
    let previous_name = pool.lease_of(&m.client, now).and_then(|l| l.name.clone());
    let lease = Lease {
        addr,
        client: m.client.clone(),
        mac: m.mac,
        name: name.clone(),
        expires: now + offer.lease_time as u64,
    };
    let mut changes = vec![Change::Put(lease.clone())];
    let replaced = pool.bind(lease);
    let names_changed =
        previous_name != name || replaced.as_ref().is_some_and(|l| l.name.is_some());
    if let Some(old) = replaced {
        changes.push(Change::Remove(old.addr));
    }
    Decision {
        reply: Some(reply(msg, MessageType::Ack, addr, offer, subnet, true)),
        changes,
        names_changed,
        event: Some(LeaseEvent::Ack {
            addr,
            mac: m.mac,
            name: name.clone(),
        }),
        earliest_expiry: Some(now + offer.lease_time as u64),
        note: format!(
            "REQUEST from {}: ACK {addr}{}",
            m.mac,
            name.map(|n| format!(" as {n}")).unwrap_or_default()
        ),
    }
}

/// The name this lease publishes: the static host's, else the one the client asks for unless
/// another live lease holds it.
fn lease_name(pool: &Pool, m: &ClientMessage, domain: Option<&str>, now: u64) -> Option<String> {
    if let Some(n) = pool.static_host(m.mac).and_then(|h| h.name.as_ref()) {
        return n.host_label();
    }
    let name = requested_name(m.msg, domain)?;
    match pool.name_holder(&name, now) {
        Some(holder) if *holder != m.client => {
            tracing::warn!(mac = %m.mac, name, "host name already held by another live lease; not published");
            None
        }
        _ => Some(name),
    }
}

fn release(pool: &mut Pool, m: &ClientMessage) -> Decision {
    let addr = m.msg.ciaddr();
    match pool.release(&m.client, addr) {
        Some(l) => Decision {
            changes: vec![Change::Remove(addr)],
            names_changed: l.name.is_some(),
            event: Some(LeaseEvent::Release { addr, mac: m.mac }),
            note: format!("RELEASE from {}: {addr} freed", m.mac),
            ..Default::default()
        },
        None => ignore(format!("RELEASE from {} for {addr}: no such lease", m.mac)),
    }
}

fn decline(pool: &mut Pool, m: &ClientMessage, now: u64) -> Decision {
    let Some(addr) = requested_ip(m.msg) else {
        return ignore(format!("DECLINE from {} names no address", m.mac));
    };
    let Some(ended) = pool.decline(&m.client, addr, now) else {
        return ignore(format!(
            "DECLINE from {} for {addr}: not its address",
            m.mac
        ));
    };
    tracing::warn!(mac = %m.mac, %addr, "address declined (in use by someone else); quarantined");
    Decision {
        changes: ended.iter().map(|l| Change::Remove(l.addr)).collect(),
        names_changed: ended.is_some_and(|l| l.name.is_some()),
        event: Some(LeaseEvent::Decline { addr, mac: m.mac }),
        note: format!("DECLINE from {}: {addr} quarantined", m.mac),
        ..Default::default()
    }
}

fn inform(pool: &Pool, offer: &Offerings, m: &ClientMessage) -> Decision {
    let ciaddr = m.msg.ciaddr();
    let Some(subnet) = pool.subnet_for(Some(ciaddr)) else {
        return ignore(format!(
            "INFORM from {} at {ciaddr}: not a subnet we serve",
            m.mac
        ));
    };
    let mut r = reply(
        m.msg,
        MessageType::Ack,
        Ipv4Addr::UNSPECIFIED,
        offer,
        subnet,
        false,
    );
    r.opts_mut().remove(OptionCode::SubnetMask);
    Decision {
        reply: Some(r),
        note: format!("INFORM from {} at {ciaddr}", m.mac),
        ..Default::default()
    }
}

fn ignore(note: String) -> Decision {
    Decision {
        note,
        ..Default::default()
    }
}

fn nak(msg: &Message, offer: &Offerings, note: String) -> Decision {
    let mut r = base_reply(msg, MessageType::Nak, Ipv4Addr::UNSPECIFIED, offer.server);
    r.set_flags(msg.flags().set_broadcast());
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&msg.chaddr()[..6]);
    Decision {
        reply: Some(r),
        event: Some(LeaseEvent::Nak {
            mac: Mac(mac),
            why: note.clone(),
        }),
        note,
        ..Default::default()
    }
}

fn base_reply(msg: &Message, kind: MessageType, yiaddr: Ipv4Addr, server: Ipv4Addr) -> Message {
    let mut r = Message::new_with_id(
        msg.xid(),
        Ipv4Addr::UNSPECIFIED,
        yiaddr,
        Ipv4Addr::UNSPECIFIED,
        msg.giaddr(),
        msg.chaddr(),
    );
    r.set_opcode(Opcode::BootReply)
        .set_htype(msg.htype())
        .set_flags(msg.flags());
    r.opts_mut().insert(DhcpOption::MessageType(kind));
    r.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    if let Some(opt @ DhcpOption::ClientIdentifier(_)) =
        msg.opts().get(OptionCode::ClientIdentifier)
    {
        r.opts_mut().insert(opt.clone());
    }
    r
}

/// OFFER or ACK with the network's options; `lease` false for INFORM.
fn reply(
    msg: &Message,
    kind: MessageType,
    yiaddr: Ipv4Addr,
    o: &Offerings,
    subnet: Subnet,
    lease: bool,
) -> Message {
    let mut r = base_reply(msg, kind, yiaddr, o.server);
    if kind == MessageType::Ack && !msg.ciaddr().is_unspecified() {
        r.set_ciaddr(msg.ciaddr());
    }
    let opts = r.opts_mut();
    if lease {
        opts.insert(DhcpOption::AddressLeaseTime(o.lease_time));
        opts.insert(DhcpOption::Renewal(o.lease_time / 2));
        opts.insert(DhcpOption::Rebinding(o.lease_time / 8 * 7));
    }
    opts.insert(DhcpOption::SubnetMask(subnet.mask()));
    opts.insert(DhcpOption::BroadcastAddr(subnet.broadcast()));
    if let Some(router) = o.router.filter(|r| subnet.contains(*r)) {
        opts.insert(DhcpOption::Router(vec![router]));
    }
    if !o.dns_servers.is_empty() {
        opts.insert(DhcpOption::DomainNameServer(o.dns_servers.clone()));
    }
    if let Some(d) = &o.domain {
        opts.insert(DhcpOption::DomainName(d.clone()));
    }
    let search: Vec<dhcproto::Name> = o
        .search
        .iter()
        .filter_map(|s| dhcproto::Name::from_ascii(format!("{s}.")).ok())
        .collect();
    if !search.is_empty() {
        opts.insert(DhcpOption::DomainSearch(search));
    }
    r
}

#[cfg(test)]
mod tests;
