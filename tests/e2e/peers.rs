//! The servers a scenario sets up: real BIND, NSD (also as the lab's root), Unbound (failing,
//! recursing from that root as a real resolver does, or forwarding) and dnsmasq from Debian,
//! the real virtdns binary, and a scripted fake only for what no real server does (silence,
//! NOTIMP).

use crate::lab::{Lab, wait_for_tcp};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

const ZONES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/zones");

/// Zone text from tests/e2e/zones, with `extra` records appended.
fn zone(file: &str, extra: &str) -> String {
    let base = std::fs::read_to_string(format!("{ZONES}/{file}")).expect("zone file");
    format!("{base}{extra}\n")
}

/// Extra records for example.com: a TXT too large for UDP, and many distinct names.
fn example_com_extras() -> String {
    let mut extra = String::new();
    let chunk = "x".repeat(200);
    extra.push_str("big TXT");
    for i in 0..10 {
        extra.push_str(&format!(" \"{i}{chunk}\""));
    }
    extra.push('\n');
    for i in 0..200 {
        extra.push_str(&format!("n{i} A 192.0.2.{}\n", i % 250 + 1));
    }
    extra
}

pub enum Fake {
    /// Never answers.
    Silent,
    /// Answers every query with this RCODE and no records.
    Rcode(u8),
}

/// A scripted upstream on UDP, stopped when dropped.
pub struct FakeUpstream {
    stop: Arc<AtomicBool>,
    received: Arc<AtomicUsize>,
}

impl FakeUpstream {
    /// How many queries it has received.
    pub fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Waits until the server at `addr` answers for `zone` with authority: BIND accepts
/// connections before its zones are loaded, and answers REFUSED until then.
pub fn wait_for_zone(addr: SocketAddr, zone: &str) {
    crate::lab::wait_until(Duration::from_secs(10), "the zone loaded", || {
        let out = Command::new("dig")
            .args([&format!("@{}", addr.ip()), "-p", &addr.port().to_string()])
            .args([zone, "SOA", "+norec", "+tries=1", "+time=1"])
            .output();
        out.is_ok_and(|o| {
            let text = String::from_utf8_lossy(&o.stdout);
            text.contains("status: NOERROR") && text.contains(" aa")
        })
    });
}

impl Lab {
    /// BIND with `recursion no`, authoritative for corp.example only: REFUSED for the rest.
    pub fn bind_internal(&mut self, host: u8) -> SocketAddr {
        let addr = self.addr(host);
        let dir = self.path(&format!("bind{host}"));
        std::fs::create_dir_all(&dir).unwrap();
        let zone_file = self.write(
            &format!("bind{host}/corp.example.zone"),
            &zone("corp.example.zone", ""),
        );
        let conf = self.write(
            &format!("bind{host}/named.conf"),
            &format!(
                "options {{\n  directory \"{dir}\";\n  pid-file \"{dir}/named.pid\";\n  \
                 listen-on port 53 {{ {ip}; }};\n  listen-on-v6 {{ none; }};\n  recursion no;\n  \
                 dnssec-validation no;\n  notify no;\n}};\ncontrols {{ }};\n\
                 zone \"corp.example\" {{ type primary; file \"{zone}\"; }};\n",
                dir = dir.display(),
                ip = addr.ip(),
                zone = zone_file.display()
            ),
        );
        self.spawn(
            &format!("named-{host}"),
            Command::new("named").args(["-g", "-c"]).arg(conf),
        );
        wait_for_tcp(addr, "BIND");
        wait_for_zone(addr, "corp.example");
        addr
    }

    /// NSD serving the given zones (origin, zone text).
    fn nsd(&mut self, host: u8, zones: &[(&str, String)]) -> SocketAddr {
        let addr = self.addr(host);
        self.nsd_at(&host.to_string(), &addr.ip().to_string(), addr, zones)
    }

    /// NSD listening on `listen` as NSD's `ip-address:` spells it (which may carry an
    /// interface scope, `fe80::53%vB`), ready once `addr` accepts TCP. `tag` names its folder.
    fn nsd_at(
        &mut self,
        tag: &str,
        listen: &str,
        addr: SocketAddr,
        zones: &[(&str, String)],
    ) -> SocketAddr {
        let dir = self.path(&format!("nsd{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut conf = format!(
            "server:\n  ip-address: {listen}\n  port: 53\n  username: \"\"\n  chroot: \"\"\n  \
             zonesdir: \"{dir}\"\n  database: \"\"\n  pidfile: \"{dir}/nsd.pid\"\n  \
             xfrdfile: \"{dir}/xfrd.state\"\n  zonelistfile: \"{dir}/zone.list\"\n  \
             server-count: 1\n  verbosity: 1\n  rrl-ratelimit: 0\n  hide-version: yes\n\
             remote-control:\n  control-enable: no\n",
            dir = dir.display()
        );
        for (i, (origin, text)) in zones.iter().enumerate() {
            self.write(&format!("nsd{tag}/{i}.zone"), text);
            conf.push_str(&format!(
                "zone:\n  name: \"{origin}\"\n  zonefile: \"{i}.zone\"\n"
            ));
        }
        let conf = self.write(&format!("nsd{tag}/nsd.conf"), &conf);
        self.spawn(
            &format!("nsd-{tag}"),
            Command::new("nsd").args(["-d", "-c"]).arg(conf),
        );
        wait_for_tcp(addr, "NSD");
        addr
    }

    /// NSD as a general server that knows every name: corp.example and example.com.
    pub fn nsd_everything(&mut self, host: u8) -> SocketAddr {
        self.nsd(
            host,
            &[
                ("corp.example", zone("corp.example.zone", "")),
                (
                    "example.com",
                    zone("example.com.zone", &example_com_extras()),
                ),
            ],
        )
    }

    /// NSD serving corp.example only (REFUSED for everything else) on `listen`, an address
    /// NSD's `ip-address:` accepts such as `fe80::53%vB`; ready once `addr` accepts TCP.
    pub fn nsd_internal_at(&mut self, tag: &str, listen: &str, addr: SocketAddr) -> SocketAddr {
        self.nsd_at(
            tag,
            listen,
            addr,
            &[("corp.example", zone("corp.example.zone", ""))],
        )
    }

    /// The lab's root server: NSD serving "." with example.com delegated to `example_com`.
    /// Resolvers given `root_hints` recurse from it for real; corp.example does not exist here.
    pub fn lab_root(&mut self, host: u8, example_com: SocketAddr) -> SocketAddr {
        let addr = self.addr(host);
        let text = zone("root-lab.zone", "")
            .replace("@ROOT@", &addr.ip().to_string())
            .replace("@EXAMPLE_COM@", &example_com.ip().to_string());
        self.nsd(host, &[(".", text)])
    }

    /// NSD with the public example.com (and its many names) as the lab root delegates it: its
    /// own name server record points at itself, so recursion stays inside the lab.
    pub fn nsd_public(&mut self, host: u8) -> SocketAddr {
        let addr = self.addr(host);
        let text = zone("example.com.zone", &example_com_extras())
            .replace("192.0.2.53", &addr.ip().to_string());
        self.nsd(host, &[("example.com", text)])
    }

    /// NSD as the general server: example.com and its many names.
    pub fn nsd_outside(&mut self, host: u8) -> SocketAddr {
        self.nsd(
            host,
            &[(
                "example.com",
                zone("example.com.zone", &example_com_extras()),
            )],
        )
    }

    /// Another general server whose www.example.com is 192.0.2.81 (to see a switch of servers).
    pub fn nsd_outside_variant(&mut self, host: u8) -> SocketAddr {
        let text =
            zone("example.com.zone", &example_com_extras()).replace("192.0.2.80", "192.0.2.81");
        self.nsd(host, &[("example.com", text)])
    }

    /// NSD as an internal server that answers NXDOMAIN for every outside name.
    pub fn nsd_internal_nxdomain(&mut self, host: u8) -> SocketAddr {
        self.nsd(
            host,
            &[
                ("corp.example", zone("corp.example.zone", "")),
                (".", zone("root-internal.zone", "")),
            ],
        )
    }

    /// Unbound that can reach no server (do-not-query-localhost): SERVFAIL for everything.
    pub fn unbound_servfail(&mut self, host: u8) -> SocketAddr {
        let conf = self.unbound_conf(
            host,
            "  do-not-query-localhost: yes\n",
            "forward-zone:\n  name: \".\"\n  forward-addr: 127.0.0.1\n",
        );
        self.start_unbound(host, &conf)
    }

    /// The configuration of an Unbound that recurses for real from the lab root (`lab_root`):
    /// a full resolver, as a home router or a VPN's resolver is. `server` adds lines to its
    /// `server:` clause (local-zone, local-data), `clauses` adds clauses (stub-zone). Start it
    /// with `start_unbound`.
    pub fn unbound_recursor_conf(
        &self,
        host: u8,
        root: SocketAddr,
        server: &str,
        clauses: &str,
    ) -> PathBuf {
        let hints = self.write(
            &format!("unbound{host}/root.hints"),
            &format!(
                ".  3600000 NS a.root-servers.lab.\na.root-servers.lab. 3600000 A {}\n",
                root.ip()
            ),
        );
        self.unbound_conf(
            host,
            &format!(
                "  do-not-query-localhost: no\n  root-hints: \"{}\"\n  do-ip6: no\n  \
                 qname-minimisation: no\n  harden-referral-path: no\n{server}",
                hints.display()
            ),
            clauses,
        )
    }

    /// An Unbound resolver recursing from the lab root, started at once.
    pub fn unbound_recursor(
        &mut self,
        host: u8,
        root: SocketAddr,
        server: &str,
        clauses: &str,
    ) -> SocketAddr {
        let conf = self.unbound_recursor_conf(host, root, server, clauses);
        self.start_unbound(host, &conf)
    }

    /// Unbound as a plain forwarder to `upstream` (forward-zone "."), its defaults otherwise
    /// (no 0x20: `use-caps-for-id: no`; no cookies to upstreams in this version) but for the
    /// `test.` zone it would answer itself.
    pub fn unbound_forwarder(&mut self, host: u8, upstream: SocketAddr) -> SocketAddr {
        let conf = self.unbound_conf(
            host,
            "  do-not-query-localhost: no\n  do-ip6: no\n  qname-minimisation: no\n  \
             local-zone: \"test.\" nodefault\n",
            &format!(
                "forward-zone:\n  name: \".\"\n  forward-addr: {}\n",
                upstream.ip()
            ),
        );
        self.start_unbound(host, &conf)
    }

    /// Writes unbound{host}/unbound.conf: Unbound on 127.N.0.host:53 without validation.
    fn unbound_conf(&self, host: u8, server: &str, clauses: &str) -> PathBuf {
        let addr = self.addr(host);
        let dir = self.path(&format!("unbound{host}"));
        std::fs::create_dir_all(&dir).unwrap();
        self.write(
            &format!("unbound{host}/unbound.conf"),
            &format!(
                "server:\n  interface: {ip}\n  port: 53\n  username: \"\"\n  chroot: \"\"\n  \
                 directory: \"{dir}\"\n  pidfile: \"{dir}/unbound.pid\"\n  use-syslog: no\n  \
                 logfile: \"\"\n  module-config: \"iterator\"\n  \
                 access-control: 127.0.0.0/8 allow\n  num-threads: 1\n{server}\
                 remote-control:\n  control-enable: no\n{clauses}",
                ip = addr.ip(),
                dir = dir.display()
            ),
        )
    }

    /// Starts Unbound on 127.N.0.host with `conf`; returns once it accepts TCP.
    pub fn start_unbound(&mut self, host: u8, conf: &std::path::Path) -> SocketAddr {
        let addr = self.addr(host);
        self.spawn(
            &format!("unbound-{host}"),
            Command::new("unbound").args(["-d", "-c"]).arg(conf),
        );
        wait_for_tcp(addr, "Unbound");
        addr
    }

    /// A scripted upstream for behaviour no real server shows.
    pub fn fake(&mut self, host: u8, behaviour: Fake) -> (SocketAddr, FakeUpstream) {
        let addr = self.addr(host);
        let socket = UdpSocket::bind(addr).expect("fake upstream socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let received = Arc::new(AtomicUsize::new(0));
        let counter = received.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                if let (Fake::Rcode(code), true) = (&behaviour, n >= 12) {
                    let mut reply = buf[..n].to_vec();
                    reply[2] |= 0x80;
                    reply[3] = (reply[3] & 0xf0) | code;
                    reply[6..12].fill(0);
                    let _ = socket.send_to(&reply, peer);
                }
            }
        });
        (addr, FakeUpstream { stop, received })
    }

    /// A resolv.conf for the lab's servers.
    pub fn resolv_conf(&self, name: &str, servers: &[SocketAddr], extra: &str) -> PathBuf {
        let mut text: String = servers
            .iter()
            .map(|s| format!("nameserver {}\n", s.ip()))
            .collect();
        text.push_str(extra);
        self.write(name, &text)
    }

    /// The real virtdns binary, listening on 127.N.0.host:53.
    pub fn virtdns(&mut self, host: u8, resolv_conf: &std::path::Path, config: &str) -> SocketAddr {
        self.virtdns_with(host, resolv_conf, config, &[])
    }

    /// virtdns with extra command-line arguments.
    pub fn virtdns_with(
        &mut self,
        host: u8,
        resolv_conf: &std::path::Path,
        config: &str,
        args: &[&str],
    ) -> SocketAddr {
        let addr = self.addr(host);
        let conf = self.write(&format!("virtdns{host}.toml"), config);
        let name = format!("virtdns-{host}");
        self.spawn(
            &name,
            Command::new(virtdns_bin())
                .arg("run")
                .arg("--config")
                .arg(conf)
                .arg("--listen")
                .arg(addr.to_string())
                .arg("--resolv-conf")
                .arg(resolv_conf)
                .args(args)
                .env("VIRTDNS_LOG", "debug"),
        );
        wait_for_tcp(addr, "virtdns");
        addr
    }

    /// dnsmasq 2.90 as libvirt runs it: strict-order, following the given resolv.conf.
    pub fn dnsmasq(&mut self, host: u8, resolv_conf: &std::path::Path) -> SocketAddr {
        if crate::lab::in_user_namespace() {
            crate::lab::skip(
                "dnsmasq cannot drop privileges in a user namespace (setgroups is denied); run as root",
            );
        }
        let addr = self.addr(host);
        self.spawn(
            &format!("dnsmasq-{host}"),
            Command::new("dnsmasq")
                .args([
                    "--keep-in-foreground",
                    "--log-facility=-",
                    "--user=root",
                    "--group=root",
                    "--no-hosts",
                ])
                // A name dnsmasq answers itself, to tell "alive but waiting" from "not running".
                .arg("--address=/alive.test/192.0.2.99")
                .args([
                    "--strict-order",
                    "--bind-interfaces",
                    "--port=53",
                    "--pid-file=",
                ])
                .arg(format!("--listen-address={}", addr.ip()))
                .arg(format!("--resolv-file={}", resolv_conf.display())),
        );
        wait_for_tcp(addr, "dnsmasq");
        addr
    }
}

/// The virtdns binary under test: this build's, or `VIRTDNS_E2E_BIN` (to run a scenario
/// against another build, e.g. to show it fails there).
pub fn virtdns_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("VIRTDNS_E2E_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_virtdns").into())
    })
}
