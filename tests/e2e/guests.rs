//! A virtual network of the lab's own: a bridge in the lab's namespace (the "host") and guest
//! namespaces wired to it with veth pairs, each running a real DHCP client (dhclient, udhcpc,
//! dhcpcd) whose script records what the server handed out. Guest namespaces belong to a
//! `sleep` process the lab owns, so they vanish with it; nothing is left in /run/netns.

use crate::lab::{Lab, run, wait_until};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/dhcp-clients");

/// The lab's bridge: 198.18.N.0/24 with the host at .1.
pub struct Network {
    pub bridge: String,
    pub host: Ipv4Addr,
}

/// What a guest's client reported last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub event: String,
    pub ip: Ipv4Addr,
    pub dns: String,
    pub search: String,
}

pub struct Guest {
    pub name: String,
    pub mac: String,
    pid: u32,
    state: PathBuf,
    dir: PathBuf,
    pub client: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Dhclient,
    Udhcpc,
    Dhcpcd,
}

impl Lab {
    /// Creates the bridge with the host's address on it.
    pub fn network(&mut self) -> Network {
        let n = self.ip(0).octets()[1];
        let bridge = format!("vbr{n}");
        let host = Ipv4Addr::new(198, 18, n, 1);
        run(Command::new("ip").args(["link", "add", &bridge, "type", "bridge"]));
        run(Command::new("ip").args(["addr", "add", &format!("{host}/24"), "dev", &bridge]));
        run(Command::new("ip").args(["link", "set", &bridge, "up"]));
        Network { bridge, host }
    }

    /// A guest namespace with one interface on the bridge and a fixed MAC.
    pub fn guest(&mut self, net: &Network, index: u8, name: &str) -> Guest {
        self.guest_with_mac(net, index, name, None)
    }

    /// A guest with a chosen MAC (default 52:54:00:12:NN:index).
    pub fn guest_with_mac(
        &mut self,
        net: &Network,
        index: u8,
        name: &str,
        mac: Option<&str>,
    ) -> Guest {
        let n = net.host.octets()[2];
        let pid = self
            .spawn(
                &format!("ns-{name}"),
                Command::new("unshare").args(["--net", "sleep", "3600"]),
            )
            .pid();
        let ns = format!("/proc/{pid}/ns/net");
        wait_until(Duration::from_secs(5), "guest namespace exists", || {
            std::fs::read_link(&ns).ok() != std::fs::read_link("/proc/self/ns/net").ok()
        });
        let host_end = format!("v{n}g{index}");
        let mac = mac.map_or_else(|| format!("52:54:00:12:{n:02x}:{index:02x}"), str::to_owned);
        run(Command::new("ip").args([
            "link",
            "add",
            &host_end,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &pid.to_string(),
        ]));
        run(Command::new("ip").args(["link", "set", &host_end, "master", &net.bridge, "up"]));
        let dir = self.path(&format!("guest-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let guest = Guest {
            name: name.into(),
            mac,
            pid,
            state: dir.join("state"),
            dir,
            client: None,
        };
        run(&mut guest.cmd(&["ip", "link", "set", "lo", "up"]));
        run(&mut guest.cmd(&["ip", "link", "set", "eth0", "address", &guest.mac, "up"]));
        // The kernel applies a carrier change (the bridge's own carrier once its first port is
        // up, the port's state, the guest's qdisc) from its link-watch work, for the bridge up
        // to a second later when links changed just before; a frame sent earlier is dropped
        // without a word (an OFFER sent into a bridge still without carrier, say). Wait until
        // the bridge, its port and the guest's end all pass frames.
        wait_until(
            Duration::from_secs(5),
            "guest link up and forwarding",
            || {
                link_line(&mut Command::new("ip"), &net.bridge).contains("state UP")
                    && link_line(&mut Command::new("ip"), &host_end)
                        .contains("bridge_slave state forwarding")
                    && link_line(&mut guest.cmd(&["ip"]), "eth0").contains("state UP")
            },
        );
        guest
    }

    /// Starts `client` in `guest`, sending `hostname`, with `extra` arguments. The client runs
    /// until the lab ends.
    pub fn start_client(
        &mut self,
        guest: &mut Guest,
        client: Client,
        hostname: &str,
        extra: &[&str],
    ) {
        let script = guest.script(client);
        let d = &guest.dir;
        let args: Vec<String> = match client {
            Client::Dhclient => {
                let conf = d.join("dhclient.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "send host-name \"{hostname}\";\nrequest subnet-mask, broadcast-address, routers, \
                         domain-name, domain-name-servers, domain-search, host-name;\n"
                    ),
                )
                .unwrap();
                ["dhclient", "-4", "-d", "-v", "-cf"]
                    .iter()
                    .map(|s| s.to_string())
                    .chain([
                        conf.display().to_string(),
                        "-sf".into(),
                        script,
                        "-lf".into(),
                    ])
                    .chain([d.join("leases").display().to_string(), "-pf".into()])
                    .chain([d.join("pid").display().to_string(), "eth0".into()])
                    .collect()
            }
            Client::Udhcpc => [
                "udhcpc",
                "-f",
                "-i",
                "eth0",
                "-s",
                &script,
                "-x",
                &format!("hostname:{hostname}"),
            ]
            .iter()
            .map(|s| s.to_string())
            .chain(
                ["-O", "search", "-t", "10", "-T", "1", "-A", "1"]
                    .iter()
                    .map(|s| s.to_string()),
            )
            .collect(),
            Client::Dhcpcd => {
                let conf = d.join("dhcpcd.conf");
                std::fs::write(
                    &conf,
                    "option domain_name_servers, domain_name, domain_search, host_name\nnoipv4ll\nipv4only\n",
                )
                .unwrap();
                // dhcpcd keeps its pid file in /run/dhcpcd and leases in /var/lib/dhcpcd:
                // give it private, empty ones (writable even in a user namespace, and
                // nothing left behind on the machine). It also forks privilege-separation
                // proxies that outlive a killed parent: a PID namespace of its own, whose
                // first process dies with `unshare` (--kill-child), takes them all along.
                [
                    "unshare",
                    "--mount",
                    "--pid",
                    "--fork",
                    "--kill-child",
                    "sh",
                    "-c",
                    "mount -t tmpfs none /run && mount -t tmpfs none /var/lib && exec \"$@\"",
                    "sh",
                    "dhcpcd",
                    "-B",
                    "-4",
                    "-f",
                    &conf.display().to_string(),
                    "-h",
                    hostname,
                    "-c",
                    &script,
                    "-t",
                    "30",
                    "eth0",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect()
            }
        };
        let name = format!("{:?}-{}", client, guest.name).to_lowercase();
        let mut argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let iface = if argv.last() == Some(&"eth0") {
            argv.pop()
        } else {
            None
        };
        argv.extend(extra);
        argv.extend(iface);
        self.spawn(&name, &mut guest.cmd(&argv));
        guest.client = Some(name);
    }
}

impl Guest {
    /// A command run inside this guest's network namespace.
    pub fn cmd(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/proc/{}/ns/net", self.pid))
            .arg("--")
            .args(argv);
        c
    }

    /// The command prefix that runs a program inside this guest.
    pub fn prefix(&self) -> Vec<String> {
        vec![
            "nsenter".into(),
            format!("--net=/proc/{}/ns/net", self.pid),
            "--".into(),
        ]
    }

    fn script(&self, client: Client) -> String {
        let file = match client {
            Client::Dhclient => "dhclient.sh",
            Client::Udhcpc => "udhcpc.sh",
            Client::Dhcpcd => "dhcpcd.sh",
        };
        let text = std::fs::read_to_string(format!("{SCRIPTS}/{file}")).unwrap();
        let path = self.dir.join(file);
        std::fs::write(
            &path,
            text.replace("STATE", &self.state.display().to_string()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    }

    /// Every event the client's script recorded, oldest first.
    pub fn events(&self) -> Vec<String> {
        std::fs::read_to_string(&self.state)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The last lease the client applied.
    pub fn seen(&self) -> Option<Seen> {
        self.events().iter().rev().find_map(|line| {
            let mut words = line.split_whitespace();
            let event = words.next()?.to_string();
            let field = |key: &str| {
                line.split(&format!("{key}="))
                    .nth(1)
                    .map(|rest| rest.split(" dns=").next().unwrap_or(rest))
                    .map(|rest| rest.split(" search=").next().unwrap_or(rest))
                    .map(|rest| {
                        rest.split(" domain=")
                            .next()
                            .unwrap_or(rest)
                            .trim()
                            .to_string()
                    })
            };
            Some(Seen {
                event,
                ip: field("ip")?.parse().ok()?,
                dns: field("dns").unwrap_or_default(),
                search: field("search").unwrap_or_default(),
            })
        })
    }

    /// Waits for a lease (at most 20 s) and returns it.
    pub fn wait_lease(&self) -> Seen {
        wait_until(
            Duration::from_secs(20),
            &format!("{} gets a lease", self.name),
            || self.seen().is_some(),
        );
        self.seen().unwrap()
    }

    /// `getent ahosts NAME` inside the guest, with a resolv.conf made from what DHCP said.
    pub fn getent(&self, name: &str) -> Vec<String> {
        let seen = self.seen().expect("guest has a lease");
        let dns = seen.dns.split_whitespace().next().unwrap_or("").to_string();
        let search: Vec<&str> = seen
            .search
            .split_whitespace()
            .map(|d| d.trim_end_matches('.'))
            .collect();
        let search = search.join(" ");
        let rc = self.dir.join("resolv.conf");
        std::fs::write(&rc, format!("nameserver {dns}\nsearch {search}\n")).unwrap();
        crate::clients::getent_with(self.cmd(&["unshare"]), &rc, name)
    }
}

/// `ip -d -o link show dev NAME` as run by `ip` (a plain or a guest's command), empty on failure.
fn link_line(ip: &mut Command, name: &str) -> String {
    ip.args(["-d", "-o", "link", "show", "dev", name])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}
