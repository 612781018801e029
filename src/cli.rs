//! The command line's shape: every subcommand and flag of `virtdns`, with the help texts that
//! `--help`, the man page virtdns(8) and the shell completions are made from, and how the
//! shared flags apply over the configuration file (`Common::load`). Acting on the commands is
//! the binary's business (`src/main.rs`); rendering them as a man page and completions is
//! `virtdns-docs`'s (`src/bin/virtdns-docs.rs`).

use crate::config::{Config, DEFAULT_LISTEN, DnsConfig};
use crate::types::ServerAddr;
use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The version `--version` prints: the crate's, and the git revision it was built from
/// ("unknown" for a build outside a git checkout; see build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("VIRTDNS_GIT_REV"),
    ")"
);

/// The command line of `virtdns`.
#[derive(Parser)]
#[command(
    name = "virtdns",
    version = VERSION,
    about = "DNS forwarder and DHCPv4 server for a virtual-machine network",
    long_about = "virtdns is the name service for a virtual-machine network (a libvirt/QEMU NAT \
network such as virbr0), replacing the DNS and DHCP roles libvirt gives dnsmasq. It gives guests \
exactly the host's view of DNS, split DNS included: servers are asked in the host's resolv.conf \
order and by glibc's rules, a dead server is skipped instead of costing every new name a \
timeout, and resolv.conf is followed as the host's network changes. It answers the network's \
own names (static records, hosts files, a local domain) without forwarding them, hands out \
addresses over DHCPv4 and publishes each guest's host name in DNS, and never loses an \
acknowledged lease.\n\n\
One virtdns serves one network, configured by one TOML file (see virtdns.toml(5)). Under \
systemd the unit virtdns@NET.service runs `virtdns run --config /etc/virtdns/NET.toml`; \
libvirt's network hook starts and stops it with the network NET.",
    after_long_help = "Run `virtdns COMMAND --help` for a command's own options. Configuration: \
virtdns.toml(5). Logging: the environment variable VIRTDNS_LOG (error, warn, info, debug, trace; \
default info) sets what is written to standard error."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Serve DNS, and DHCP when configured, until stopped.
    #[command(
        long_about = "Serve DNS, and DHCPv4 when the configuration has a [dhcp] section, \
until SIGTERM or SIGINT. Without a configuration file it serves 127.0.0.1:5300, forwarding \
per /etc/resolv.conf and answering /etc/hosts names.\n\n\
It starts even when its bridge does not exist yet: DNS sockets are bound with IP_FREEBIND, and \
DHCP waits for the interface to appear with an IPv4 address, and binds again when it is \
replaced. SIGHUP re-reads the configuration (and the libvirt network's definition) and applies \
what changed, keeping leases; a configuration that does not load is logged and the running one \
stays. A part that stops on its own is logged and virtdns exits non-zero, for its supervisor \
to restart it. Under systemd (Type=notify) it reports READY=1 once it serves DNS, STATUS= \
lines as DHCP binds or waits, and STOPPING=1 when it stops."
    )]
    Run(Common),
    /// Validate the configuration and print the effective routing.
    #[command(
        long_about = "Validate the configuration, as `run` would load it, and print the \
effective routing: the listen addresses (and whether they are free), the DHCP interface and \
whether the ranges fit it, the upstream servers with what is known of each, and the domains \
routed to them. Exits non-zero, naming the file and line, when the configuration is wrong."
    )]
    Check(Common),
    /// List the DHCP leases in the lease database.
    #[command(
        long_about = "List the live DHCP leases in the lease database named by the \
configuration's [dhcp] lease_db: address, MAC, client identifier, host name and the seconds \
left. Reads the database without locking out a running virtdns."
    )]
    Leases {
        /// Print a JSON array of objects (address, mac, client_id, name, expires, expires_in)
        /// instead of a table.
        #[arg(long)]
        json: bool,
        /// The shared flags.
        #[command(flatten)]
        common: Common,
    },
    /// Work with libvirt's networks.
    Libvirt {
        /// What to do with libvirt.
        #[command(subcommand)]
        command: LibvirtCommand,
    },
    /// Resolve NAME once and print every decision taken on the way.
    #[command(
        long_about = "Resolve NAME once, as a guest's query would be, and print every \
decision taken on the way: what is known of each upstream server (and the probe that showed \
it), the routing rule that applied, each server asked with its reply and what was made of it, \
and the final answer. What to run when a guest cannot resolve something."
    )]
    Explain {
        /// The name to resolve, e.g. www.example.com.
        name: String,
        /// The record type to ask for (A, AAAA, MX, SRV, TXT, PTR, ...).
        #[arg(default_value = "A")]
        rtype: String,
        /// The shared flags.
        #[command(flatten)]
        common: Common,
    },
}

/// The subcommands of `virtdns libvirt`.
#[derive(Subcommand)]
pub enum LibvirtCommand {
    /// Print the virtdns configuration equivalent to a libvirt network's definition, for
    /// review (read from libvirt's files; libvirt is not called).
    #[command(
        long_about = "Print the TOML configuration equivalent to a libvirt network's \
definition: the bridge address to listen on, the domain, forwarders, host, TXT and SRV records, \
with a `# NOTE:` wherever virtdns differs from libvirt's dnsmasq or the network must change \
first. The definition is read from libvirt's files (the live one first); libvirt is not called."
    )]
    Import {
        /// The network's name, as `virsh net-list` shows it.
        network: String,
        /// Where libvirt keeps live network definitions.
        #[arg(long, value_name = "DIR", default_value = "/run/libvirt/network")]
        run_dir: PathBuf,
        /// Where libvirt keeps persistent network definitions.
        #[arg(long, value_name = "DIR", default_value = "/etc/libvirt/qemu/networks")]
        etc_dir: PathBuf,
    },
}

/// The flags every serving command shares; each overrides the configuration file's value.
#[derive(Args)]
pub struct Common {
    /// The TOML configuration file (see virtdns.toml(5)); without one, built-in defaults.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Serve DNS on ADDR (repeatable; IPv4 or [IPv6], with an optional :PORT; a bare address
    /// means port 53). Replaces the configuration's [dns] listen.
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub(crate) listen: Vec<ServerAddr>,
    /// Follow PATH as the host's resolver configuration (default /etc/resolv.conf).
    #[arg(long, value_name = "PATH")]
    pub(crate) resolv_conf: Option<PathBuf>,
    /// Answer names from the hosts file PATH (repeatable; default /etc/hosts).
    #[arg(long, value_name = "PATH")]
    pub(crate) hosts: Vec<PathBuf>,
    /// Answer no names from hosts files.
    #[arg(long)]
    pub(crate) no_hosts: bool,
}

impl Common {
    /// The configuration file, or the built-in defaults without one.
    pub fn config(&self) -> Result<Config> {
        Ok(match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        })
    }

    /// The `[dns]` settings with command-line flags applied, and the listen addresses.
    pub fn settings(&self) -> Result<(DnsConfig, Vec<SocketAddr>)> {
        let (config, listen) = self.load()?;
        Ok((config.dns, listen))
    }

    /// The config file, read once, with command-line flags applied over it; and the
    /// listen addresses.
    pub fn load(&self) -> Result<(Config, Vec<SocketAddr>)> {
        let mut config = self.config()?;
        let dns = &mut config.dns;
        if !self.listen.is_empty() {
            dns.listen = self.listen.clone();
        }
        if let Some(p) = &self.resolv_conf {
            dns.resolv_conf = p.clone();
        }
        if !self.hosts.is_empty() {
            dns.hosts = self.hosts.clone();
        }
        dns.no_hosts |= self.no_hosts;
        let mut listen: Vec<SocketAddr> = dns.listen.iter().map(|a| a.0).collect();
        if listen.is_empty() {
            listen.push(DEFAULT_LISTEN.parse().expect("default listen address"));
        }
        Ok((config, listen))
    }
}
