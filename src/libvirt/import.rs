//! A [`NetworkDef`] turned into the virtdns config text that serves the network as libvirt's
//! dnsmasq does (`virtdns libvirt import NET` prints it for review): `[dns]` on the bridge's
//! addresses with the network's domain, forwarders and records, and `[dhcp]` on the bridge with
//! its IPv4 ranges, static hosts and lease time.
//!
//! The mapping follows what libvirt writes into dnsmasq's config
//! (`networkDnsmasqConfContents` in libvirt's `src/network/bridge_driver.c`): plain host names
//! get the network's domain (`expand-hosts`), an SRV record without a domain is in the network's
//! domain, a TXT value is split at commas, an SRV port defaults to 1. Whatever virtdns cannot
//! express, or expresses differently, is written as a `# NOTE:` comment where it applies and left
//! out, so the text always parses as a virtdns config.

use super::network::{Dhcp, DhcpHost, IpDef, LeaseTime, NetworkDef};
use crate::types::{DomainName, Mac};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// dnsmasq's lease time when libvirt gives none, which is virtdns's default too.
const DEFAULT_LEASE_SECS: u32 = 3600;

/// The config text for `def`; `source`, the file it was read from, is named in the header.
pub fn config_toml(def: &NetworkDef, source: Option<&Path>) -> String {
    let mut out = Out::default();
    let name = &def.name;
    out.comment(&format!(
        "virtdns config for libvirt network '{name}' (`virtdns libvirt import {name}`)"
    ));
    if let Some(src) = source {
        out.comment(&format!("read from {}", src.display()));
    }
    out.comment(
        "Review it before use: each NOTE says where virtdns differs from libvirt's dnsmasq.",
    );
    out.blank();
    dns_section(&mut out, def);
    dhcp_section(&mut out, def);
    out.text
}

fn dns_section(out: &mut Out, def: &NetworkDef) {
    let dns = &def.dns;
    let domain = def.domain.as_ref().and_then(|d| {
        let parsed = dns_name(&d.name);
        if parsed.is_none() {
            out.note(&format!(
                "<domain name='{}'> is not a name virtdns accepts; left out",
                d.name
            ));
        }
        parsed.map(|n| (n, d))
    });
    out.line("[dns]");
    if dns.enable == Some(false) {
        out.comment(
            "libvirt's DNS is off on this network (<dns enable='no'/>): virtdns takes port 53.",
        );
        if def.ips.iter().any(|ip| !ip.is_ipv6() && serves_dhcp(ip)) {
            out.note(
                "with <dns enable='no'/> libvirt's dnsmasq gives DHCP guests no DNS server \
                 (option 6): let virtdns serve [dhcp] below, or add <dnsmasq:option \
                 value='dhcp-option=option:dns-server,ADDR'/> to the network",
            );
        }
    } else {
        out.note(&format!(
            "libvirt's dnsmasq answers DNS on these addresses: give the network \
             <dnsmasq:options xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>\
             <dnsmasq:option value='port=0'/></dnsmasq:options> (virsh net-edit {}) so that \
             virtdns can; <dns enable='no'/> does too, but libvirt then refuses <host>, <txt> \
             and <srv> records",
            def.name
        ));
    }
    let listen: Vec<String> = def.ips.iter().map(|ip| ip.address.to_string()).collect();
    if listen.is_empty() {
        out.note("the network has no <ip>: no address to listen on");
    } else {
        out.key("listen", strings(&listen));
    }
    if let Some((name, d)) = &domain {
        if !d.local_only {
            out.note(
                "virtdns answers names in its domain from local data only, as localOnly='yes' \
                 does; libvirt's dnsmasq forwards the names it does not know",
            );
        }
        out.key("domain", string(&name.0));
    }
    out.key(
        "forward_plain_names",
        toml::Value::Boolean(dns.forward_plain_names.unwrap_or(true)),
    );
    if def.forward_mode.is_none() {
        out.note(
            "an isolated network (no <forward>): libvirt's dnsmasq forwards nothing (no-resolv); \
             virtdns forwards to the host's servers",
        );
    }
    forwarders(out, def);
    records(out, def, domain.as_ref().map(|(n, _)| n.0.as_str()));
}

/// `[[dns.forwarder]]`, one per domain (and one for the default), in the order first named.
fn forwarders(out: &mut Out, def: &NetworkDef) {
    let mut groups: Vec<(Option<String>, Vec<IpAddr>)> = Vec::new();
    for f in &def.dns.forwarders {
        let domain = match f.domain.as_deref().map(|d| (d, dns_name(d))) {
            None => None,
            Some((_, Some(name))) => Some(name.0),
            Some((raw, None)) => {
                out.blank();
                out.note(&format!(
                    "<forwarder domain='{raw}'> is not a name virtdns accepts; left out"
                ));
                continue;
            }
        };
        let i = match groups.iter().position(|(d, _)| *d == domain) {
            Some(i) => i,
            None => {
                groups.push((domain, Vec::new()));
                groups.len() - 1
            }
        };
        let list = &mut groups[i].1;
        if let Some(a) = f.addr.filter(|a| !list.contains(a)) {
            list.push(a);
        }
    }
    for (domain, addrs) in groups {
        out.blank();
        match (&domain, addrs.is_empty()) {
            (Some(_), true) => out.comment(
                "domain only: answered from local data, never forwarded (libvirt's dnsmasq \
                 forwards it upstream anyway: libvirt issue 597)",
            ),
            (None, _) => out.comment("addr only: these replace the host's resolv.conf servers"),
            (Some(_), false) => {}
        }
        out.line("[[dns.forwarder]]");
        if let Some(d) = &domain {
            out.key("domain", string(d));
        }
        let addrs: Vec<String> = addrs.iter().map(IpAddr::to_string).collect();
        match addrs.as_slice() {
            [] => {}
            [one] => out.key("addr", string(one)),
            _ => out.key("addr", strings(&addrs)),
        }
    }
}

/// `[[dns.record]]` for `<host>`, `<txt>` and `<srv>`.
fn records(out: &mut Out, def: &NetworkDef, domain: Option<&str>) {
    for host in &def.dns.hosts {
        let rtype = if host.ip.is_ipv4() { "A" } else { "AAAA" };
        for hostname in &host.hostnames {
            // dnsmasq's expand-hosts: a plain name is also name.domain; virtdns looks a plain
            // name up under its domain, so the expanded name serves both.
            let full = match domain {
                Some(d) if !hostname.contains('.') => format!("{hostname}.{d}"),
                _ => hostname.clone(),
            };
            record(out, &full, rtype, string(&host.ip.to_string()));
        }
    }
    for txt in &def.dns.txts {
        let values: Vec<String> = txt.value.split(',').map(str::to_owned).collect();
        let value = match values.as_slice() {
            [one] => string(one),
            _ => strings(&values),
        };
        record(out, &txt.name, "TXT", value);
    }
    for srv in &def.dns.srvs {
        let mut name = format!("_{}._{}", srv.service, srv.protocol);
        if let Some(d) = srv.domain.as_deref().or(domain) {
            name = format!("{name}.{d}");
        }
        let target = srv.target.as_deref().filter(|t| !t.is_empty() && *t != ".");
        let Some(target) = target else {
            out.blank();
            out.note(&format!(
                "SRV {name} has no target (the service is not available, RFC 2782): virtdns \
                 cannot serve such a record; left out"
            ));
            continue;
        };
        let Some(target) = dns_name(target) else {
            out.blank();
            out.note(&format!(
                "SRV {name}: target '{target}' is not a name virtdns accepts; left out"
            ));
            continue;
        };
        // libvirt writes port 0 as unset, and dnsmasq's default port is 1.
        let port = srv.port.filter(|p| *p != 0).unwrap_or(1);
        let value = format!(
            "{} {} {port} {}",
            srv.priority.unwrap_or(0),
            srv.weight.unwrap_or(0),
            target.0
        );
        record(out, &name, "SRV", string(&value));
    }
}

fn record(out: &mut Out, name: &str, rtype: &str, value: toml::Value) {
    out.blank();
    let Some(parsed) = dns_name(name) else {
        out.note(&format!(
            "{rtype} record '{name}' is not a name virtdns accepts; left out"
        ));
        return;
    };
    out.line("[[dns.record]]");
    out.key("name", string(&parsed.0));
    out.key("type", string(rtype));
    out.key("value", value);
}

fn dhcp_section(out: &mut Out, def: &NetworkDef) {
    let serves = |ip: &&IpDef| serves_dhcp(ip);
    for ip in def.ips.iter().filter(serves).filter(|ip| ip.is_ipv6()) {
        out.blank();
        out.note(&format!(
            "DHCPv6 on {}/{} is not served by virtdns (DHCPv4 only); libvirt's dnsmasq keeps \
             serving it",
            ip.address, ip.prefix
        ));
    }
    let mut v4 = def
        .ips
        .iter()
        .filter(serves)
        .filter_map(|ip| Some((ip.ipv4()?, ip)));
    let Some((addr, ip)) = v4.next() else {
        out.blank();
        out.comment("No IPv4 <dhcp> on this network: virtdns serves no DHCP for it.");
        return;
    };
    for (other, _) in v4 {
        out.blank();
        out.note(&format!(
            "<dhcp> on {other} left out: libvirt serves DHCP on one IPv4 address only"
        ));
    }
    let Some(dhcp) = &ip.dhcp else {
        return;
    };
    out.blank();
    let Some(bridge) = def.bridge.as_deref() else {
        out.note(
            "the definition names no bridge (<bridge name=>): start the network and import \
             again for [dhcp]",
        );
        return;
    };
    let mut ranges: Vec<(Ipv4Addr, Ipv4Addr)> = Vec::new();
    for r in &dhcp.ranges {
        let (IpAddr::V4(start), IpAddr::V4(end)) = (r.start, r.end) else {
            continue;
        };
        let overlaps = ranges.iter().any(|(s, e)| start <= *e && *s <= end);
        if start > end || overlaps {
            out.note(&format!(
                "range {start}-{end} is reversed or overlaps another; left out"
            ));
            continue;
        }
        ranges.push((start, end));
    }
    if ranges.is_empty() {
        out.note(&format!(
            "<dhcp> on {addr} has no usable <range> (static hosts only): virtdns needs a range; \
             no [dhcp] written"
        ));
        return;
    }
    out.note(&format!(
        "libvirt's dnsmasq serves DHCP on {bridge} while {addr} has a <dhcp>: remove it \
         (virsh net-edit {}) before virtdns serves this section",
        def.name
    ));
    out.line("[dhcp]");
    out.key("interface", string(bridge));
    out.key(
        "lease_db",
        string(
            &crate::config::default_lease_db(bridge)
                .display()
                .to_string(),
        ),
    );
    let lease_secs = lease_time(out, dhcp);
    out.key("lease_time_secs", toml::Value::Integer(lease_secs.into()));
    for (start, end) in ranges {
        out.blank();
        out.line("[[dhcp.range]]");
        out.key("start", string(&start.to_string()));
        out.key("end", string(&end.to_string()));
    }
    let mut seen: Vec<&DhcpHost> = Vec::new();
    for h in &dhcp.hosts {
        static_host(out, h, &mut seen);
    }
}

/// Whether libvirt serves DHCP on `ip`: it does when its `<dhcp>` has a range or a host.
fn serves_dhcp(ip: &IpDef) -> bool {
    ip.dhcp
        .as_ref()
        .is_some_and(|d| !d.ranges.is_empty() || !d.hosts.is_empty())
}

/// The lease time of the first range that has one; differing ones, and per-host ones, are
/// noted.
fn lease_time(out: &mut Out, dhcp: &Dhcp) -> u32 {
    if dhcp.hosts.iter().any(|h| h.lease.is_some()) {
        out.note("per-host lease times are left out: virtdns has one lease time for all");
    }
    let Some(first) = dhcp.ranges.iter().find_map(|r| r.lease) else {
        return DEFAULT_LEASE_SECS;
    };
    // A range without <lease> has dnsmasq's default.
    let default = LeaseTime::Seconds(DEFAULT_LEASE_SECS.into());
    if dhcp
        .ranges
        .iter()
        .any(|r| r.lease.unwrap_or(default) != first)
    {
        out.note("the ranges have different lease times: virtdns has one, the first one given");
    }
    match first {
        LeaseTime::Infinite => {
            out.note("infinite leases (expiry='0') are not supported: one hour instead");
            DEFAULT_LEASE_SECS
        }
        LeaseTime::Seconds(s) if s < 60 => {
            out.note(&format!(
                "a lease of {s} s is below virtdns's minimum: 60 s instead"
            ));
            60
        }
        LeaseTime::Seconds(s) => u32::try_from(s).unwrap_or_else(|_| {
            out.note(&format!(
                "a lease of {s} s is too long: {} s instead",
                u32::MAX
            ));
            u32::MAX
        }),
    }
}

/// One `[[dhcp.host]]`, unless virtdns cannot take it (noted), or an earlier host has its MAC
/// or address.
fn static_host<'a>(out: &mut Out, h: &'a DhcpHost, seen: &mut Vec<&'a DhcpHost>) {
    let label = h
        .mac
        .as_ref()
        .map(|m| Mac(*m).to_string())
        .or_else(|| h.name.clone())
        .or_else(|| h.id.clone())
        .unwrap_or_default();
    out.blank();
    let Some(mac) = h.mac else {
        out.note(&format!(
            "static host '{label}' has no MAC: virtdns knows static hosts by MAC only; left out"
        ));
        return;
    };
    let Some(IpAddr::V4(address)) = h.ip else {
        out.note(&format!(
            "static host {label} has no address: libvirt passes it to dnsmasq not at all; left out"
        ));
        return;
    };
    let clash = seen.iter().any(|s| s.mac == h.mac || s.ip == h.ip);
    if clash {
        out.note(&format!(
            "static host {label} ({address}) repeats an earlier host's MAC or address; left out"
        ));
        return;
    }
    seen.push(h);
    let name = h.name.as_deref().and_then(|n| {
        let parsed = dns_name(n);
        if parsed.is_none() {
            out.note(&format!(
                "static host {label}: name '{n}' is not a name virtdns accepts; left out"
            ));
        }
        parsed
    });
    out.line("[[dhcp.host]]");
    out.key("mac", string(&Mac(mac).to_string()));
    out.key("address", string(&address.to_string()));
    if let Some(n) = name {
        out.key("name", string(&n.0));
    }
}

/// `s` as virtdns's config takes a domain name, if it does.
fn dns_name(s: &str) -> Option<DomainName> {
    s.parse().ok()
}

fn string(s: &str) -> toml::Value {
    toml::Value::String(s.to_owned())
}

fn strings(list: &[String]) -> toml::Value {
    toml::Value::Array(list.iter().map(|s| string(s)).collect())
}

/// The text being built. Values are written by the TOML serializer, so they are quoted and
/// escaped as TOML wants; comments carry text from the XML, so they are kept to one line.
#[derive(Default)]
struct Out {
    text: String,
}

impl Out {
    fn line(&mut self, s: &str) {
        self.text.push_str(s);
        self.text.push('\n');
    }

    fn blank(&mut self) {
        if !self.text.ends_with("\n\n") && !self.text.is_empty() {
            self.text.push('\n');
        }
    }

    fn key(&mut self, key: &str, value: toml::Value) {
        let _ = writeln!(self.text, "{key} = {value}");
    }

    fn comment(&mut self, s: &str) {
        let _ = writeln!(self.text, "# {}", one_line(s));
    }

    fn note(&mut self, s: &str) {
        let _ = writeln!(self.text, "# NOTE: {}", one_line(s));
    }
}

/// `s` with control characters (line breaks among them) escaped, so that it cannot leave its
/// comment.
fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests;
