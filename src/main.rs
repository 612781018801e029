//! The `virtdns` command: parses flags, sets up logging, and hands over to the library.

#![forbid(unsafe_code)]

use anyhow::{Context, Result, bail};
use clap::Parser;
use hickory_proto::op::Message;
use std::net::SocketAddr;
use virtdns::cli::{Cli, Command, Common, LibvirtCommand};
use virtdns::dhcp::store;
use virtdns::dns::wire;
use virtdns::server::Server;

/// jemalloc, not glibc's malloc. The cache keeps small answers for minutes among a stream of
/// short-lived per-query buffers spread over several threads; glibc's arenas fragment under
/// that mix and keep it resident (in bench/dns, 100 000 cached answers held 326 MB RSS; at
/// 20 000 names heaptrack saw 9 MB of live heap where RSS was 86 MB; no glibc tunable helped),
/// where jemalloc stays near the live heap (42 MB for 100 000) and spends less CPU per query.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VIRTDNS_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into the journal or a file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // UDP is served by threads of its own (`[dns] threads`, see dns::listener::UdpWorkers); the
    // rest (TCP, DHCP, watchers) needs no more than one.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Run(common) => runtime.block_on(virtdns::instance::run(|| common.load())),
        Command::Check(common) => runtime.block_on(check(common)),
        Command::Explain {
            name,
            rtype,
            common,
        } => runtime.block_on(explain(name, rtype, common)),
        Command::Leases { json, common } => leases(json, common),
        Command::Libvirt {
            command:
                LibvirtCommand::Import {
                    network,
                    run_dir,
                    etc_dir,
                },
        } => {
            let paths = virtdns::libvirt::LibvirtPaths {
                run_dir,
                etc_dir,
                ..Default::default()
            };
            let loaded = virtdns::libvirt::load(&paths, &network)?;
            print!(
                "{}",
                virtdns::libvirt::config_toml(&loaded.def, Some(&loaded.path))
            );
            Ok(())
        }
    }
}

fn leases(json: bool, common: Common) -> Result<()> {
    let config = common.config()?;
    let Some(cfg) = &config.dhcp else {
        bail!("no [dhcp] section in the config: there are no leases");
    };
    let conn = store::open_read_only(&cfg.lease_db)?;
    let now = virtdns::dhcp::server::now();
    // Publishing state by address, when [publish] is on (an older database has no table).
    let table = virtdns::publish::state::table_path(&cfg.lease_db);
    let published = match config.publish {
        Some(_) => store::open_read_only(&table)
            .ok()
            .and_then(|t| virtdns::publish::state::rows(&t).ok())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let publish_state = |addr: std::net::Ipv4Addr, name: &str| -> Option<String> {
        config.publish.as_ref()?;
        let row = published
            .iter()
            .find(|r| r.entry.addr == addr && r.entry.fqdn.split('.').next() == Some(name));
        Some(match row {
            Some(r) => match &r.detail {
                Some(detail) => format!("{}: {detail}", r.state.as_str()),
                None => r.state.as_str().to_string(),
            },
            None if name.is_empty() => "-".into(),
            None => "pending".into(),
        })
    };
    let mut rows = Vec::new();
    // A row past its end is a lease that expired while nothing removed it yet: not a lease.
    for l in store::load(&conn)?.into_iter().filter(|l| l.expires > now) {
        let client: String = l.client.iter().map(|b| format!("{b:02x}")).collect();
        let name = l.name.clone().unwrap_or_default();
        let left = l.expires.saturating_sub(now);
        let publish = publish_state(l.addr, &name.to_ascii_lowercase());
        if json {
            rows.push(format!(
                "{{\"address\":\"{}\",\"mac\":\"{}\",\"client_id\":\"{client}\",\"name\":{},\"expires\":{},\"expires_in\":{left}{}}}",
                l.addr,
                l.mac,
                if name.is_empty() { "null".to_string() } else { format!("\"{name}\"") },
                l.expires,
                publish
                    .map(|p| format!(",\"publish\":{}", serde_json::Value::String(p)))
                    .unwrap_or_default()
            ));
        } else {
            rows.push(format!(
                "{:<16} {}  {:<20} {:<24} {:<10} {}",
                l.addr,
                l.mac,
                client,
                name,
                format!("{left}s"),
                publish.unwrap_or_default()
            ));
        }
    }
    if json {
        println!("[{}]", rows.join(","));
    } else {
        println!(
            "{:<16} {:<17}  {:<20} {:<24} {:<10} {}",
            "address",
            "mac",
            "client-id",
            "name",
            "expires in",
            if config.publish.is_some() {
                "published"
            } else {
                ""
            }
        );
        for r in rows {
            println!("{}", r.trim_end());
        }
    }
    Ok(())
}

async fn check(common: Common) -> Result<()> {
    let (config, listen) = common.load()?;
    if let Some(publisher) = virtdns::publish::from_config(&config)? {
        println!(
            "publish: zone {} with key {:?}, to {}",
            publisher.zones.forward,
            publisher.updater.key(),
            fmt_list(&publisher.updater.servers())
        );
    }
    if let Some(dhcp) = &config.dhcp {
        // What `run` checks when DHCP starts on the interface.
        match virtdns::iface::link(&dhcp.interface) {
            Some(link) => {
                dhcp.check_against(link.v4.subnet, link.v4.addr)
                    .map_err(|e| anyhow::anyhow!("[dhcp] {e}"))?;
                println!(
                    "dhcp: interface {} ({}, {}) fits the ranges and hosts",
                    dhcp.interface, link.v4.addr, link.v4.subnet
                );
            }
            None => println!(
                "dhcp: interface {} does not exist yet (or has no IPv4 address): DHCP will wait for it",
                dhcp.interface
            ),
        }
    }
    // What `run` does first: bind the listen addresses (then let them go).
    match Server::bind(&listen, config.dns.threads()).await {
        Ok(_) => println!("listen: {} free", fmt_list(&listen)),
        Err(virtdns::server::StartError::Taken { addr, holder }) if holder.contains("virtdns") => {
            println!("listen: {addr} is held by a running virtdns ({holder})")
        }
        Err(e @ virtdns::server::StartError::Taken { .. }) => return Err(e.into()),
        Err(e) => println!("note: {e} (run may need privileges this check lacks)"),
    }
    if let Some(path) = &common.config {
        println!("config {}: ok", path.display());
    } else {
        println!("no config file: built-in defaults");
    }
    let server = Server::new(config.dns, listen);
    server.learn().await;
    print!("{}", server.describe());
    Ok(())
}

async fn explain(name: String, rtype: String, common: Common) -> Result<()> {
    let (dns, listen) = common.settings()?;
    let qtype: hickory_proto::rr::RecordType = rtype
        .to_uppercase()
        .parse()
        .with_context(|| format!("unknown record type {rtype}"))?;
    let Some(wire_name) = wire::name_from_dotted(&name) else {
        bail!("'{name}' is not a valid name");
    };
    let server = Server::new(dns, listen);
    for probe in server.learn().await {
        println!("discovery: {probe}");
    }
    let query = wire::build_query(&wire_name, u16::from(qtype), rand::random());
    let (reply, trace) = server.resolver().explain(&query).await;
    // After the walk: what it taught about each server too (cookies, case).
    for upstream in server.upstreams() {
        println!("upstream {upstream}");
    }
    println!("explain {name} {qtype}:");
    print!("{}", trace.render());
    match reply.map(|r| Message::from_vec(&r)) {
        Some(Ok(m)) => {
            println!("final answer: {}", m.metadata.response_code);
            for r in m.answers.iter().chain(&m.authorities) {
                println!("  {r}");
            }
        }
        Some(Err(e)) => println!("final answer could not be decoded: {e}"),
        None => println!("no answer"),
    }
    Ok(())
}

fn fmt_list(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
