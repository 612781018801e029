//! A real libvirtd (network driver only) in the lab, the stack virtdns plugs into.
//!
//! Mount isolation: the e2e binary already runs in private network and mount namespaces, but
//! its scenarios share both, one after another, and /run, /etc and /var there are still the
//! machine's own files. So libvirtd runs in a nested mount namespace of its own (`unshare
//! --mount`, whose default propagation is private: nothing mounted there shows anywhere else),
//! where a setup script, before `exec libvirtd`, binds the lab's scratch folders over /run,
//! /etc/libvirt and /var/{lib,cache,log}/libvirt (a folder that does not exist on the machine
//! gets a tmpfs over its parent first, so no mount point is ever created outside), a folder
//! holding only libvirt_driver_network.so over the connection-driver folder, a private
//! /etc/nsswitch.conf (`hosts: files libvirt dns`), and mounts a fresh sysfs that shows the
//! lab's network namespace (the inherited /sys shows the machine's). Every other command that
//! must see libvirt's view (virsh, getent through the libvirt NSS module) enters that same
//! mount namespace with `nsenter --mount=/proc/PID/ns/mnt`. Nothing is ever unmounted: the
//! namespace, and every mount in it, goes away when its last process (libvirtd and the dnsmasq
//! it started) exits, which `Drop` ensures. The network namespace is the lab's, so the bridge,
//! guests' veths and libvirt's iptables rules are all in the e2e namespace and nowhere else.
//!
//! libvirt's dnsmasq logs to syslog: where /dev/log is a socket (or a link into /run), the
//! harness binds a socket of its own over it and copies what arrives to `libvirt-syslog.log`,
//! so nothing reaches the machine's syslog (where there is no /dev/log, dnsmasq logs nothing).

use crate::guests::{Guest, Network};
use crate::lab::{Lab, poll_until, run, wait_until};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Run in the nested mount namespace as `sh -c SETUP sh SCRATCH DRIVER_DIR`, then execs
/// libvirtd in the foreground.
const SETUP: &str = r#"set -eu
s=$1 drivers=$2
log_target=""
if [ -L /dev/log ]; then log_target=$(readlink -m /dev/log)
elif [ -S /dev/log ]; then log_target=/dev/log
fi
sock="$s/syslog.sock"
[ -S "$sock" ] || sock=/dev/null
mount --bind "$s/run" /run
mount -t sysfs sysfs /sys
mount --bind "$s/etc" /etc/libvirt
for d in lib cache log; do
  if [ ! -d /var/$d/libvirt ]; then mount -t tmpfs tmpfs /var/$d; mkdir /var/$d/libvirt; fi
  mount --bind "$s/$d" /var/$d/libvirt
done
mount --bind "$s/drivers" "$drivers"
mount --bind "$s/nsswitch.conf" /etc/nsswitch.conf
case "$log_target" in
  /run/*)
    mkdir -p "$(dirname "$log_target")"
    : > "$log_target"
    mount --bind "$sock" "$log_target" ;;
  /dev/log) mount --bind "$sock" /dev/log ;;
esac
exec libvirtd
"#;

/// The network libvirt ships as `default` (virbr0, 192.168.122.0/24, NAT).
const DEFAULT_XML: &str = "/usr/share/libvirt/networks/default.xml";

/// A libvirt network of this lab: its name, bridge, and the host's address on it.
#[derive(Debug, Clone)]
pub struct LibvirtNet {
    pub name: String,
    pub bridge: String,
    pub host: Ipv4Addr,
}

impl LibvirtNet {
    /// The lab's own network: `e2eN` on bridge `virbrtN`, 192.168.N.0/24 with the host at .1
    /// (N is the lab's number, so no two labs share a name, a bridge or a subnet, and the
    /// guests' veth names from guests.rs differ too).
    pub fn for_lab(lab: &Lab) -> LibvirtNet {
        let n = lab.ip(0).octets()[1];
        LibvirtNet {
            name: format!("e2e{n}"),
            bridge: format!("virbrt{n}"),
            host: Ipv4Addr::new(192, 168, n, 1),
        }
    }

    /// The NAT network libvirt ships (libvirt-daemon-config-network's default.xml: bridge
    /// with STP on and no forward delay, DHCP on .2-.254), moved to this lab's name, bridge
    /// and subnet, with `<domain name=DOMAIN/>` added.
    pub fn stock_xml(&self, domain: &str) -> String {
        let shipped = std::fs::read_to_string(DEFAULT_XML).unwrap_or_else(|e| {
            panic!(
                "{DEFAULT_XML}: {e}: run scripts/install-test-deps (libvirt-daemon-config-network)"
            )
        });
        let xml = shipped
            .replace(
                "<name>default</name>",
                &format!("<name>{}</name>", self.name),
            )
            .replace("'virbr0'", &format!("'{}'", self.bridge))
            .replace("192.168.122.", &format!("{}.", self.prefix()))
            .replacen("  <ip ", &format!("  <domain name='{domain}'/>\n  <ip "), 1);
        assert!(
            xml.contains(&self.bridge) && xml.contains("<domain ") && !xml.contains("122."),
            "{DEFAULT_XML} is not the file this harness knows: {shipped}"
        );
        xml
    }

    /// "192.168.N"
    pub fn prefix(&self) -> String {
        let o = self.host.octets();
        format!("{}.{}.{}", o[0], o[1], o[2])
    }

    /// The bridge as guests.rs sees it, to attach guests to.
    pub fn network(&self) -> Network {
        Network {
            bridge: self.bridge.clone(),
            host: self.host,
        }
    }

    /// The bridge's interface index, None while it does not exist.
    pub fn ifindex(&self) -> Option<u32> {
        ifindex(&self.bridge)
    }

    /// The host end of guest `index`'s veth (guests.rs names it `v{third octet}g{index}`).
    pub fn host_end(&self, index: u8) -> String {
        format!("v{}g{index}", self.host.octets()[2])
    }
}

/// The index of interface `name` in this network namespace (from `ip`: /sys shows another).
pub fn ifindex(name: &str) -> Option<u32> {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "dev", name])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// libvirtd running in its own mount namespace; everything it made is undone on drop.
pub struct Libvirtd {
    pid: u32,
    scratch: PathBuf,
    drivers: PathBuf,
    networks: Vec<LibvirtNet>,
    syslog_stop: Arc<AtomicBool>,
    /// Added to libvirtd's environment.
    env: Vec<(String, String)>,
    /// virtdns's network hook, when installed (`Lab::libvirtd_with_virtdns_hook`).
    hook: Option<VirtdnsHook>,
    /// How long libvirtd took to answer virsh.
    pub startup: Duration,
}

impl Lab {
    /// libvirtd with no hooks.
    pub fn libvirtd(&mut self) -> Libvirtd {
        self.libvirtd_with_hooks(&[])
    }

    /// libvirtd with executable network hooks in /etc/libvirt/hooks/network.d/, as (file
    /// name, script text). libvirt looks for hooks only when it starts.
    pub fn libvirtd_with_hooks(&mut self, hooks: &[(&str, &str)]) -> Libvirtd {
        self.libvirtd_with(hooks, &[])
    }

    /// libvirtd with network hooks (as `libvirtd_with_hooks`) and `env` added to libvirtd's
    /// environment. libvirt runs hooks with an environment of its own making (LC_ALL=C, and
    /// PATH, HOME, USER, LOGNAME, TMPDIR, LD_PRELOAD, LD_LIBRARY_PATH passed on): a hook does
    /// not see the rest of `env` (`libvirt_hook_environment` pins this).
    pub fn libvirtd_with(&mut self, hooks: &[(&str, &str)], env: &[(&str, &str)]) -> Libvirtd {
        if crate::lab::in_user_namespace() {
            crate::lab::skip(
                "net-start fails in a user namespace: libvirt's dnsmasq exits 5 with \
                 `failed to change group-id to dip` (only uid/gid 0 are mapped); run as root",
            );
        }
        let drivers = connection_driver_dir().unwrap_or_else(|| {
            panic!("no libvirt_driver_network.so: run scripts/install-test-deps (libvirt-daemon)")
        });
        let s = self.path("libvirt");
        for d in [
            "run/lock",
            "etc/hooks/network.d",
            "lib",
            "cache",
            "log",
            "drivers",
            "home",
        ] {
            std::fs::create_dir_all(s.join(d)).unwrap();
        }
        std::fs::copy(
            drivers.join("libvirt_driver_network.so"),
            s.join("drivers/libvirt_driver_network.so"),
        )
        .expect("copy the network driver");
        let nsswitch = std::fs::read_to_string("/etc/nsswitch.conf").unwrap_or_default();
        let mut nsswitch: Vec<String> = nsswitch
            .lines()
            .filter(|l| !l.starts_with("hosts:"))
            .map(str::to_owned)
            .collect();
        nsswitch.push("hosts: files libvirt dns".into());
        std::fs::write(s.join("nsswitch.conf"), nsswitch.join("\n") + "\n").unwrap();
        for (name, text) in hooks {
            let path = s.join("etc/hooks/network.d").join(name);
            std::fs::write(&path, text).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let syslog_stop = Arc::new(AtomicBool::new(false));
        capture_syslog(
            &s.join("syslog.sock"),
            self.path("libvirt-syslog.log"),
            syslog_stop.clone(),
        );
        let mut libvirtd = Libvirtd {
            pid: 0,
            scratch: s,
            drivers,
            networks: Vec::new(),
            syslog_stop,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            hook: None,
            startup: Duration::ZERO,
        };
        libvirtd.spawn(self);
        libvirtd
    }

    /// libvirtd with virtdns's network hook (dist/libvirt/network-hook) installed as
    /// /etc/libvirt/hooks/network.d/virtdns, as a user installs it. libvirt gives a hook no
    /// variable of libvirtd's environment but PATH, HOME and a few others, so the file libvirt
    /// runs is a wrapper that sets VIRTDNS_BIN, VIRTDNS_CONF_DIR, VIRTDNS_RUN_DIR and
    /// VIRTDNS_LOG_DIR to this lab's (see `VirtdnsHook`) and execs the hook itself. The hook
    /// takes its direct path (setsid, pid file): libvirtd's private /run has no
    /// /run/systemd/system. A virtdns it started that outlives the lab's networks is stopped
    /// on drop.
    pub fn libvirtd_with_virtdns_hook(&mut self) -> Libvirtd {
        let hook = VirtdnsHook::in_lab(self);
        let wrapper = hook.wrapper();
        let mut libvirtd = self.libvirtd_with_hooks(&[("virtdns", &wrapper)]);
        self.attach_log("virtdns started by the hook", hook.log_dir.clone());
        libvirtd.hook = Some(hook);
        libvirtd
    }

    /// A guest on libvirt network `net` (see `Lab::guest`).
    pub fn libvirt_guest(&mut self, net: &LibvirtNet, index: u8, name: &str) -> Guest {
        self.guest(&net.network(), index, name)
    }
}

/// The folder libvirtd loads its connection drivers from (its path depends on the
/// architecture).
fn connection_driver_dir() -> Option<PathBuf> {
    let mut candidates = vec![
        PathBuf::from("/usr/lib64/libvirt/connection-driver"),
        PathBuf::from("/usr/lib/libvirt/connection-driver"),
    ];
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        for e in entries.flatten() {
            candidates.push(e.path().join("libvirt/connection-driver"));
        }
    }
    candidates
        .into_iter()
        .find(|d| d.join("libvirt_driver_network.so").is_file())
}

/// Copies what arrives on the datagram socket `sock` (syslog lines) to `log` until `stop`.
/// Without that socket (a path too long for one), SETUP binds /dev/null over /dev/log instead.
fn capture_syslog(sock: &Path, log: PathBuf, stop: Arc<AtomicBool>) {
    let Ok(socket) = UnixDatagram::bind(sock) else {
        return;
    };
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    std::thread::spawn(move || {
        use std::io::Write;
        let mut out = std::fs::File::create(log).unwrap();
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            if let Ok(n) = socket.recv(&mut buf) {
                let _ = writeln!(out, "{}", String::from_utf8_lossy(&buf[..n]).trim_end());
            }
        }
    });
}

impl Libvirtd {
    /// Starts libvirtd in a new mount namespace set up by SETUP and waits until it answers.
    fn spawn(&mut self, lab: &mut Lab) {
        let started = Instant::now();
        self.pid = lab
            .spawn(
                "libvirtd",
                Command::new("unshare")
                    .args(["--mount", "--", "sh", "-c", SETUP, "sh"])
                    .arg(&self.scratch)
                    .arg(&self.drivers)
                    .env("HOME", self.scratch.join("home"))
                    .env("LIBVIRT_LOG_OUTPUTS", "3:stderr")
                    .envs(self.env.iter().map(|(k, v)| (k, v))),
            )
            .pid();
        let ready = poll_until(Duration::from_secs(15), || {
            assert!(
                lab.proc("libvirtd").is_running(),
                "libvirtd exited at start"
            );
            self.try_virsh(&["net-list", "--all"]).is_ok()
        });
        assert!(ready.is_some(), "libvirtd did not answer virsh within 15 s");
        self.startup = started.elapsed();
    }

    /// Stops libvirtd (SIGTERM, as systemd does) and waits until it has exited. Its networks
    /// stay up: dnsmasq and the bridge outlive it.
    pub fn stop_daemon(&mut self) {
        signal(self.pid, "-TERM");
        wait_until(Duration::from_secs(10), "libvirtd exits on SIGTERM", || {
            !alive(self.pid)
        });
    }

    /// Starts libvirtd again on the same state (after `stop_daemon`).
    pub fn start_daemon(&mut self, lab: &mut Lab) {
        self.spawn(lab);
    }

    /// A command run in libvirtd's mount namespace (its /run, /etc/libvirt, /var/lib/libvirt
    /// and nsswitch.conf). The working folder there is `/`: give paths in full.
    pub fn cmd(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--mount=/proc/{}/ns/mnt", self.pid))
            .arg("--")
            .args(argv)
            .env("HOME", self.scratch.join("home"));
        c
    }

    /// `virsh -c network:///system ARGS`, its output or its error.
    pub fn try_virsh(&self, args: &[&str]) -> Result<String, String> {
        let mut argv = vec!["timeout", "30", "virsh", "-c", "network:///system"];
        argv.extend(args);
        let out = self
            .cmd(&argv)
            .output()
            .map_err(|e| format!("cannot run virsh: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "virsh {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// `virsh -c network:///system ARGS`; fails the scenario when virsh fails.
    pub fn virsh(&self, args: &[&str]) -> String {
        self.try_virsh(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Defines `net` from `xml` (`net-define`) and starts it; undefined and destroyed on drop.
    pub fn define_and_start(&mut self, net: &LibvirtNet, xml: &str) {
        self.define(net, xml);
        self.virsh(&["net-start", &net.name]);
    }

    /// Defines `net` from `xml` (`net-define`) without starting it; undefined on drop.
    pub fn define(&mut self, net: &LibvirtNet, xml: &str) {
        self.virsh(&["net-define", &self.xml_file(net, xml)]);
        self.networks.push(net.clone());
    }

    /// `xml` in a file libvirt can read (its mount namespace sees the lab's folder), for
    /// virsh commands that take one.
    pub fn xml_file(&self, net: &LibvirtNet, xml: &str) -> String {
        let file = self.scratch.join(format!("{}.define.xml", net.name));
        std::fs::write(&file, xml).unwrap();
        file.display().to_string()
    }

    /// `net-destroy` then `net-start`: the bridge is deleted and made again.
    pub fn restart_network(&self, net: &LibvirtNet) {
        self.virsh(&["net-destroy", &net.name]);
        self.virsh(&["net-start", &net.name]);
    }

    /// virtdns's network hook as installed by `Lab::libvirtd_with_virtdns_hook`.
    pub fn virtdns_hook(&self) -> &VirtdnsHook {
        self.hook
            .as_ref()
            .expect("libvirtd started with Lab::libvirtd_with_virtdns_hook")
    }

    /// The `[libvirt]` keys that point virtdns at this libvirtd's files as the lab sees them
    /// (virtdns runs outside libvirtd's mount namespace, and paths under the lab's folder
    /// are the same inside it): run_dir, etc_dir and status_dir, one per line.
    pub fn libvirt_dirs_toml(&self) -> String {
        format!(
            "run_dir = \"{}\"\netc_dir = \"{}\"\nstatus_dir = \"{}\"\n",
            self.path("run/libvirt/network").display(),
            self.path("etc/qemu/networks").display(),
            self.path("lib/dnsmasq").display()
        )
    }

    /// The pid of the dnsmasq libvirt runs for `net`, from its pid file.
    pub fn dnsmasq_pid(&self, net: &LibvirtNet) -> Option<u32> {
        std::fs::read_to_string(self.path(&format!("run/libvirt/network/{}.pid", net.name)))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The lease status file libvirt's tools read, as the lab sees it.
    pub fn status_file(&self, net: &LibvirtNet) -> PathBuf {
        self.scratch
            .join(format!("lib/dnsmasq/{}.status", net.bridge))
    }

    /// A file under libvirt's /etc/libvirt, /run, /var/lib/libvirt, ... as the lab sees it:
    /// `path("run/libvirt/network/NET.xml")`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.scratch.join(rel)
    }

    /// `getent hosts NAME` on the host, through nsswitch.conf's `hosts: files libvirt dns`:
    /// the addresses, sorted.
    pub fn getent_hosts(&self, name: &str) -> Vec<String> {
        let out = self
            .cmd(&["getent", "hosts", name])
            .output()
            .expect("getent");
        let mut addrs: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect();
        addrs.sort();
        addrs.dedup();
        addrs
    }

    /// Enslaves guest `index`'s veth to `net`'s bridge again (after the bridge was made anew).
    pub fn reattach(&self, net: &LibvirtNet, index: u8) {
        let port = net.host_end(index);
        run(Command::new("ip").args(["link", "set", &port, "master", &net.bridge]));
    }

    /// The dnsmasq processes libvirt started, from their pid files.
    fn dnsmasq_pids(&self) -> Vec<u32> {
        std::fs::read_dir(self.scratch.join("run/libvirt/network"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".pid"))
            .filter(|e| e.file_name() != "driver.pid")
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter_map(|t| t.trim().parse().ok())
            .collect()
    }
}

/// True while process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                != Some("Z")
        })
        .unwrap_or(false)
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status();
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        // libvirt's way first, so it stops dnsmasq and removes its bridges and firewall rules.
        for net in &self.networks {
            let _ = self.try_virsh(&["net-destroy", &net.name]);
            let _ = self.try_virsh(&["net-undefine", &net.name]);
        }
        // dnsmasq daemonizes out of libvirtd: stop any left before libvirtd, whose pid the
        // lab still holds (a zombie until the lab reaps it, so never reused meanwhile).
        let stragglers = self.dnsmasq_pids();
        for &pid in &stragglers {
            if alive(pid)
                && std::fs::read_link(format!("/proc/{pid}/exe"))
                    .is_ok_and(|e| e.ends_with("dnsmasq"))
            {
                signal(pid, "-KILL");
            }
        }
        if alive(self.pid) {
            signal(self.pid, "-TERM");
            if poll_until(Duration::from_secs(5), || !alive(self.pid)).is_none() {
                signal(self.pid, "-KILL");
            }
        }
        // A virtdns the hook started and did not stop (a network the scenario left defined
        // but the hook never saw stop): by its pid file, only if it is that virtdns.
        if let Some(hook) = &self.hook {
            for pid in hook.running() {
                signal(pid, "-KILL");
            }
        }
        for net in &self.networks {
            if ifindex(&net.bridge).is_some() {
                let _ = Command::new("ip")
                    .args(["link", "del", &net.bridge])
                    .status();
            }
        }
        self.syslog_stop.store(true, Ordering::Relaxed);
    }
}

/// Waits until `virsh net-dhcp-leases NET` lists `ip`; returns its output.
pub fn wait_dhcp_lease(libvirtd: &Libvirtd, net: &LibvirtNet, ip: Ipv4Addr) -> String {
    let mut last = String::new();
    let found = poll_until(Duration::from_secs(10), || {
        last = libvirtd.virsh(&["net-dhcp-leases", &net.name]);
        last.contains(&format!("{ip}/"))
    });
    assert!(
        found.is_some(),
        "net-dhcp-leases {} never lists {ip}:\n{last}",
        net.name
    );
    last
}

/// virtdns's network hook, dist/libvirt/network-hook.
pub const NETWORK_HOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/libvirt/network-hook");

/// The folders virtdns's network hook uses in a lab: `conf/NET.toml` (the lab's
/// /etc/virtdns), `run/NET.pid` (its /run/virtdns) and `log/NET.log` (its /var/log/virtdns).
#[derive(Debug, Clone)]
pub struct VirtdnsHook {
    pub conf_dir: PathBuf,
    pub run_dir: PathBuf,
    pub log_dir: PathBuf,
}

impl VirtdnsHook {
    /// The hook's folders under the lab's, created empty.
    pub fn in_lab(lab: &Lab) -> VirtdnsHook {
        let hook = VirtdnsHook {
            conf_dir: lab.path("virtdns-hook/conf"),
            run_dir: lab.path("virtdns-hook/run"),
            log_dir: lab.path("virtdns-hook/log"),
        };
        for d in [&hook.conf_dir, &hook.run_dir, &hook.log_dir] {
            std::fs::create_dir_all(d).unwrap();
        }
        hook
    }

    /// The hook's variables for this lab: (name, value).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("VIRTDNS_BIN", crate::peers::virtdns_bin().to_string()),
            ("VIRTDNS_CONF_DIR", self.conf_dir.display().to_string()),
            ("VIRTDNS_RUN_DIR", self.run_dir.display().to_string()),
            ("VIRTDNS_LOG_DIR", self.log_dir.display().to_string()),
        ]
    }

    /// A hook that sets the variables and execs the real one with its arguments and stdin.
    pub fn wrapper(&self) -> String {
        let mut text = String::from("#!/bin/sh\n");
        for (k, v) in self.env() {
            text.push_str(&format!("{k}='{v}'\nexport {k}\n"));
        }
        text.push_str(&format!("exec '{NETWORK_HOOK}' \"$@\"\n"));
        text
    }

    /// Where the hook looks for network `net`'s config.
    pub fn config_path(&self, net: &LibvirtNet) -> PathBuf {
        self.conf_dir.join(format!("{}.toml", net.name))
    }

    /// Writes network `net`'s config (the lab's /etc/virtdns/NET.toml).
    pub fn write_config(&self, net: &LibvirtNet, text: &str) -> PathBuf {
        let path = self.config_path(net);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// What the hook and the virtdns it started wrote to NET.log.
    pub fn log(&self, net: &LibvirtNet) -> String {
        std::fs::read_to_string(self.log_dir.join(format!("{}.log", net.name))).unwrap_or_default()
    }

    /// Waits until NET.log has a line containing `needle` after its first `after` bytes;
    /// returns that line.
    pub fn wait_log(
        &self,
        net: &LibvirtNet,
        after: usize,
        needle: &str,
        limit: Duration,
    ) -> String {
        let mut found = None;
        let seen = poll_until(limit, || {
            let log = self.log(net);
            found = log
                .get(after.min(log.len())..)
                .unwrap_or("")
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_owned);
            found.is_some()
        });
        assert!(
            seen.is_some(),
            "no line with {needle:?} in {}.log within {limit:?}:\n{}",
            net.name,
            self.log(net)
        );
        found.unwrap()
    }

    /// The pid of the virtdns the hook runs for `net` (from its pid file), while it runs.
    pub fn pid(&self, net: &LibvirtNet) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.run_dir.join(format!("{}.pid", net.name)))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        self.is_ours(pid).then_some(pid)
    }

    /// Every virtdns still running from a pid file of this lab's.
    fn running(&self) -> Vec<u32> {
        std::fs::read_dir(&self.run_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter_map(|t| t.trim().parse().ok())
            .filter(|&pid| self.is_ours(pid))
            .collect()
    }

    /// True when `pid` is a live virtdns run with a config from this lab's conf_dir.
    fn is_ours(&self, pid: u32) -> bool {
        alive(pid)
            && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c).contains(&self.conf_dir.display().to_string())
            })
    }
}
