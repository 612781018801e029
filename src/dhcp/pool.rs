//! The address pool in memory: which address is offered, bound or quarantined, for which
//! client, until when. Pure state, no I/O: `rfc2131` decides with it, `store` makes bound
//! leases durable. Offers are never stored: a flood of DISCOVERs can hold addresses only for
//! `OFFER_HOLD_SECS`, and never takes a bound lease from a returning client.

use crate::config::{Range, StaticHost};
use crate::types::{Mac, Subnet};
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

/// How long an offered address is held for the client it was offered to.
pub(crate) const OFFER_HOLD_SECS: u64 = 30;
/// How long a declined address stays out of use.
pub(crate) const DECLINE_HOLD_SECS: u64 = 600;

/// Who a client is: option 61 when it sends one, else hardware type 1 and its MAC.
pub(crate) type ClientId = Vec<u8>;

/// The client identifier of a client that sends none: hardware type 1 (Ethernet), then the
/// MAC.
pub fn client_id_from_mac(mac: Mac) -> ClientId {
    let mut id = vec![1];
    id.extend_from_slice(&mac.0);
    id
}

/// An acknowledged lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The address leased.
    pub addr: Ipv4Addr,
    /// The client holding it.
    pub client: ClientId,
    /// The client's MAC.
    pub mac: Mac,
    /// The guest's host name (one label), published as `name.<domain>`.
    pub name: Option<String>,
    /// Unix time in seconds.
    pub expires: u64,
}

#[derive(Debug, Clone)]
enum Slot {
    Offered { client: ClientId, until: u64 },
    Bound(Lease),
    Declined { until: u64 },
}

impl Slot {
    fn live(&self, now: u64) -> bool {
        match self {
            Slot::Offered { until, .. } | Slot::Declined { until } => *until > now,
            Slot::Bound(l) => l.expires > now,
        }
    }
    fn client(&self) -> Option<&ClientId> {
        match self {
            Slot::Offered { client, .. } => Some(client),
            Slot::Bound(l) => Some(&l.client),
            Slot::Declined { .. } => None,
        }
    }
}

/// How the addresses of one range are used at one moment (for the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RangeUsage {
    pub(crate) range: Range,
    pub(crate) bound: u64,
    pub(crate) offered: u64,
    /// Quarantined after a DECLINE.
    pub(crate) declined: u64,
    /// Neither held nor kept out of use (the server's own address and static hosts'
    /// addresses are not free).
    pub(crate) free: u64,
}

/// The addresses of the served ranges and who holds each: leases, offers, and addresses kept
/// out of use.
pub struct Pool {
    /// Each range with the subnet it serves.
    ranges: Vec<(Range, Subnet)>,
    cursors: Vec<u32>,
    slots: HashMap<Ipv4Addr, Slot>,
    by_client: HashMap<ClientId, Ipv4Addr>,
    /// The address each client last held, after its lease ended (RFC 2131 4.3.1: offered
    /// again while free). Bounded by `max_leases`; not kept across restarts.
    previous: HashMap<ClientId, Ipv4Addr>,
    /// Decisions are numbered; each client's latest number says whether a reply still
    /// stands once its change is durable.
    decisions: u64,
    latest: HashMap<ClientId, u64>,
    statics: HashMap<Mac, StaticHost>,
    reserved: HashSet<Ipv4Addr>,
    server: Ipv4Addr,
    max_leases: usize,
}

impl Pool {
    /// A pool over `ranges` (each with the subnet it serves) without leases, static hosts'
    /// addresses reserved for them, holding at most `max_leases` leases.
    pub fn new(
        ranges: Vec<(Range, Subnet)>,
        statics: &[StaticHost],
        server: Ipv4Addr,
        max_leases: usize,
    ) -> Pool {
        Pool {
            cursors: ranges.iter().map(|(r, _)| u32::from(r.start)).collect(),
            ranges,
            slots: HashMap::new(),
            by_client: HashMap::new(),
            previous: HashMap::new(),
            decisions: 0,
            latest: HashMap::new(),
            reserved: statics.iter().filter_map(|h| h.address).collect(),
            statics: statics.iter().map(|h| (h.mac, h.clone())).collect(),
            server,
            max_leases,
        }
    }

    /// Restores leases read from the store.
    /// Takes back stored leases whose address this pool hands out (a range or a static
    /// host's); returns how many were left out (another network's, or a range since removed).
    pub fn restore(&mut self, leases: Vec<Lease>) -> usize {
        let mut left_out = 0;
        for l in leases {
            let ours = self.ranges.iter().any(|(r, _)| r.contains(l.addr))
                || self.statics.values().any(|h| h.address == Some(l.addr));
            if !ours {
                left_out += 1;
                continue;
            }
            self.by_client.insert(l.client.clone(), l.addr);
            self.slots.insert(l.addr, Slot::Bound(l));
        }
        left_out
    }

    pub(crate) fn static_host(&self, mac: Mac) -> Option<&StaticHost> {
        self.statics.get(&mac)
    }

    /// The subnet served for a request: the relay's (giaddr or option 118), else the
    /// interface's.
    pub(crate) fn subnet_for(&self, selector: Option<Ipv4Addr>) -> Option<Subnet> {
        let probe = selector.unwrap_or(self.server);
        self.ranges
            .iter()
            .map(|(_, s)| *s)
            .find(|s| s.contains(probe))
    }

    /// The address held by `client` (bound or offered, not expired).
    pub(crate) fn held_by(&self, client: &ClientId, now: u64) -> Option<Ipv4Addr> {
        let addr = *self.by_client.get(client)?;
        let slot = self.slots.get(&addr)?;
        (slot.live(now) && slot.client() == Some(client)).then_some(addr)
    }

    pub(crate) fn lease_of(&self, client: &ClientId, now: u64) -> Option<&Lease> {
        let addr = self.held_by(client, now)?;
        match self.slots.get(&addr)? {
            Slot::Bound(l) => Some(l),
            _ => None,
        }
    }

    /// Whether `addr` may be given to `client` (with `mac`) in `subnet`.
    pub(crate) fn available(
        &self,
        addr: Ipv4Addr,
        client: &ClientId,
        mac: Mac,
        subnet: Subnet,
        now: u64,
    ) -> bool {
        if addr == self.server
            || !subnet.contains(addr)
            || addr == subnet.network()
            || addr == subnet.broadcast()
        {
            return false;
        }
        let static_match = self.statics.get(&mac).and_then(|h| h.address) == Some(addr);
        if self.reserved.contains(&addr) && !static_match {
            return false;
        }
        let in_range = self
            .ranges
            .iter()
            .any(|(r, s)| *s == subnet && r.contains(addr));
        if !in_range && !static_match {
            return false;
        }
        match self.slots.get(&addr) {
            Some(slot) if slot.live(now) => slot.client() == Some(client),
            _ => true,
        }
    }

    /// Whether a new address may be held: at most `max_leases` entries. Lapsed offers and
    /// quarantines are swept here when the bound is reached; expired leases wait for `expire`,
    /// which also removes them from the store and from DNS.
    fn has_room(&mut self, now: u64) -> bool {
        if self.slots.len() >= self.max_leases {
            self.slots
                .retain(|_, s| s.live(now) || matches!(s, Slot::Bound(_)));
            let slots = &self.slots;
            self.by_client.retain(|_, addr| slots.contains_key(addr));
        }
        self.slots.len() < self.max_leases
    }

    /// Picks an address for `client` and holds it as offered: its current one, its static
    /// one, the one it asked for if free, or the next free one of the subnet's ranges.
    pub(crate) fn offer(
        &mut self,
        client: &ClientId,
        mac: Mac,
        requested: Option<Ipv4Addr>,
        subnet: Subnet,
        now: u64,
    ) -> Option<Ipv4Addr> {
        let fixed = self.statics.get(&mac).and_then(|h| h.address);
        let current = self.held_by(client, now).filter(|a| subnet.contains(*a));
        let free = |a: &Ipv4Addr| self.available(*a, client, mac, subnet, now);
        let addr = fixed
            .or(current)
            .or(self.previous.get(client).copied().filter(free))
            .or(requested.filter(free))
            .or_else(|| self.next_free(client, mac, subnet, now))?;
        if current != Some(addr) {
            if !self.has_room(now) {
                return None;
            }
            self.hold(addr, client, now);
        } else if let Some(Slot::Offered { until, .. }) = self.slots.get_mut(&addr) {
            *until = now + OFFER_HOLD_SECS;
        }
        Some(addr)
    }

    fn hold(&mut self, addr: Ipv4Addr, client: &ClientId, now: u64) {
        self.forget_client(client, Some(addr));
        self.occupy(
            addr,
            Slot::Offered {
                client: client.clone(),
                until: now + OFFER_HOLD_SECS,
            },
        );
        self.by_client.insert(client.clone(), addr);
    }

    /// Puts `slot` at `addr`; a lapsed holder of `addr` no longer points at it.
    fn occupy(&mut self, addr: Ipv4Addr, slot: Slot) {
        let new_holder = slot.client().cloned();
        if let Some(old) = self.slots.insert(addr, slot)
            && let Some(previous) = old.client()
            && Some(previous) != new_holder.as_ref()
            && self.by_client.get(previous) == Some(&addr)
        {
            self.by_client.remove(previous);
        }
    }

    /// Drops what `client` holds elsewhere than `keep` if it is only an offer.
    fn forget_client(&mut self, client: &ClientId, keep: Option<Ipv4Addr>) {
        if let Some(old) = self.by_client.get(client).copied()
            && Some(old) != keep
            && matches!(self.slots.get(&old), Some(Slot::Offered { .. }))
        {
            self.slots.remove(&old);
        }
    }

    fn next_free(
        &mut self,
        client: &ClientId,
        mac: Mac,
        subnet: Subnet,
        now: u64,
    ) -> Option<Ipv4Addr> {
        for i in 0..self.ranges.len() {
            let (range, s) = self.ranges[i];
            if s != subnet {
                continue;
            }
            let (start, end) = (u32::from(range.start), u32::from(range.end));
            let size = end - start + 1;
            let from = self.cursors[i].clamp(start, end);
            for step in 0..size {
                let candidate = Ipv4Addr::from(start + (from - start + step) % size);
                if self.available(candidate, client, mac, subnet, now) {
                    self.cursors[i] = u32::from(candidate) + 1;
                    return Some(candidate);
                }
            }
        }
        None
    }

    /// Binds `lease`; returns the lease the client held at another address, if any. Only
    /// what this client holds is given up: an address it was once offered may since have
    /// gone to someone else.
    pub(crate) fn bind(&mut self, lease: Lease) -> Option<Lease> {
        let previous = self.by_client.insert(lease.client.clone(), lease.addr);
        let old = previous
            .filter(|a| *a != lease.addr)
            .filter(|a| self.slots.get(a).and_then(Slot::client) == Some(&lease.client))
            .and_then(|a| match self.slots.remove(&a) {
                Some(Slot::Bound(l)) => Some(l),
                _ => None,
            });
        let addr = lease.addr;
        self.occupy(addr, Slot::Bound(lease));
        old
    }

    /// Ends `client`'s lease of `addr` (RELEASE).
    pub(crate) fn release(&mut self, client: &ClientId, addr: Ipv4Addr) -> Option<Lease> {
        match self.slots.get(&addr) {
            Some(Slot::Bound(l)) if &l.client == client => {}
            _ => return None,
        }
        self.by_client.remove(client);
        self.remember(client, addr);
        match self.slots.remove(&addr) {
            Some(Slot::Bound(l)) => Some(l),
            _ => None,
        }
    }

    /// Numbers a decision just taken for `client`.
    pub(crate) fn note_decision(&mut self, client: &ClientId) -> u64 {
        self.decisions += 1;
        if self.latest.len() >= 4 * self.max_leases && !self.latest.contains_key(client) {
            let holders = &self.by_client;
            self.latest.retain(|c, _| holders.contains_key(c));
        }
        match self.latest.get_mut(client) {
            Some(latest) => *latest = self.decisions,
            None => {
                self.latest.insert(client.clone(), self.decisions);
            }
        }
        self.decisions
    }

    /// Whether decision `seq` is still the latest taken for `client`: a reply to an earlier
    /// message must not contradict a later decision (an ACK after the client's RELEASE).
    pub(crate) fn is_latest(&self, client: &ClientId, seq: u64) -> bool {
        self.latest.get(client).is_none_or(|&latest| latest == seq)
    }

    /// Notes that `client` held `addr`, to offer it again while it is free.
    fn remember(&mut self, client: &ClientId, addr: Ipv4Addr) {
        if self.previous.len() >= self.max_leases
            && !self.previous.contains_key(client)
            && let Some(any) = self.previous.keys().next().cloned()
        {
            self.previous.remove(&any);
        }
        self.previous.insert(client.clone(), addr);
    }

    /// When the next bound lease expires (Unix seconds), if any is bound.
    pub(crate) fn next_expiry(&self) -> Option<u64> {
        self.slots
            .values()
            .filter_map(|s| match s {
                Slot::Bound(l) => Some(l.expires),
                _ => None,
            })
            .min()
    }

    /// Quarantines `addr` (DECLINE: the client found it in use). None when `addr` is not the
    /// client's to decline; else the lease it ends, if it was bound.
    pub(crate) fn decline(
        &mut self,
        client: &ClientId,
        addr: Ipv4Addr,
        now: u64,
    ) -> Option<Option<Lease>> {
        if self.slots.get(&addr).and_then(Slot::client) != Some(client) {
            return None;
        }
        self.by_client.remove(client);
        let old = self.slots.insert(
            addr,
            Slot::Declined {
                until: now + DECLINE_HOLD_SECS,
            },
        );
        Some(match old {
            Some(Slot::Bound(l)) => Some(l),
            _ => None,
        })
    }

    /// Removes expired entries; returns the bound leases that expired.
    pub(crate) fn expire(&mut self, now: u64) -> Vec<Lease> {
        let dead: Vec<Ipv4Addr> = self
            .slots
            .iter()
            .filter(|(_, s)| !s.live(now))
            .map(|(a, _)| *a)
            .collect();
        let mut expired = Vec::new();
        for addr in dead {
            if let Some(slot) = self.slots.remove(&addr) {
                if let Some(c) = slot.client()
                    && self.by_client.get(c) == Some(&addr)
                {
                    self.by_client.remove(c);
                }
                if let Slot::Bound(l) = slot {
                    self.remember(&l.client, l.addr);
                    expired.push(l);
                }
            }
        }
        expired
    }

    /// The client whose live lease carries `name`, if any.
    pub(crate) fn name_holder(&self, name: &str, now: u64) -> Option<&ClientId> {
        self.slots.values().find_map(|s| match s {
            Slot::Bound(l) if l.expires > now && l.name.as_deref() == Some(name) => Some(&l.client),
            _ => None,
        })
    }

    /// How each range's addresses are used at `now`, in the ranges' order.
    pub(crate) fn usage(&self, now: u64) -> Vec<RangeUsage> {
        self.ranges
            .iter()
            .map(|(range, _)| {
                let mut usage = RangeUsage {
                    range: *range,
                    bound: 0,
                    offered: 0,
                    declined: 0,
                    free: 0,
                };
                let live = |a: &Ipv4Addr| self.slots.get(a).is_some_and(|s| s.live(now));
                for (addr, slot) in &self.slots {
                    if !range.contains(*addr) || !slot.live(now) {
                        continue;
                    }
                    match slot {
                        Slot::Bound(_) => usage.bound += 1,
                        Slot::Offered { .. } => usage.offered += 1,
                        Slot::Declined { .. } => usage.declined += 1,
                    }
                }
                let kept_out = self
                    .reserved
                    .iter()
                    .chain([&self.server])
                    .filter(|a| range.contains(**a) && !live(a))
                    .count() as u64;
                let size = u64::from(u32::from(range.end) - u32::from(range.start)) + 1;
                usage.free =
                    size.saturating_sub(usage.bound + usage.offered + usage.declined + kept_out);
                usage
            })
            .collect()
    }

    /// (name, address) of every live named lease and every named static host.
    /// Every bound lease not expired at `now`, in address order.
    pub(crate) fn leases(&self, now: u64) -> Vec<Lease> {
        let mut leases: Vec<Lease> = self
            .slots
            .values()
            .filter_map(|s| match s {
                Slot::Bound(l) if l.expires > now => Some(l.clone()),
                _ => None,
            })
            .collect();
        leases.sort_by_key(|l| l.addr);
        leases
    }

    pub(crate) fn names(&self, now: u64) -> Vec<(String, Ipv4Addr)> {
        let mut out: Vec<_> = self
            .slots
            .values()
            .filter_map(|s| match s {
                Slot::Bound(l) if l.expires > now => l.name.clone().map(|n| (n, l.addr)),
                _ => None,
            })
            .collect();
        // Static hosts with an address and a name are published whether or not they hold
        // a lease, like libvirt's <host> entries.
        for h in self.statics.values() {
            if let (Some(addr), Some(label)) =
                (h.address, h.name.as_ref().and_then(|n| n.host_label()))
                && !out.iter().any(|(n, a)| *n == label && *a == addr)
            {
                out.push((label, addr));
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests;
