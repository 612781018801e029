//! One running virtdns, the composition root: it owns the lifecycle of everything else.
//!
//! It binds the DNS sockets (before the addresses exist, if need be), starts DNS
//! (`server::Server`), DHCP following its interface (`dhcp::service`) and the watch on the
//! machine's interfaces that keeps the clients answered current, and the publisher of guests'
//! names to the organisation's DNS (`publish`, with `[publish]`), all under one cancellation
//! token. A task that ends on its own is an error: it is logged and the process exits
//! non-zero (a supervisor restarts it) rather than serve on half-dead. SIGHUP reloads the
//! configuration: a bad new one is logged and the running one stays. SIGUSR1 switches the
//! query log on or off. SIGTERM and SIGINT stop everything, with a short grace period. With
//! `[metrics]`, the Prometheus endpoint is one more part. systemd hears of each step
//! (`notify`).

use crate::config::Config;
use crate::dhcp::service::{self, LINK_POLL, Serving, Settings};
use crate::dns::querylog;
use crate::server::Server;
use anyhow::{Result, anyhow};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long running tasks get to finish after a stop.
const GRACE: Duration = Duration::from_secs(2);

/// The configuration as the command line gives it: the file with flags applied, and the
/// listen addresses. Called at start and on every SIGHUP.
pub trait Load: Fn() -> Result<(Config, Vec<SocketAddr>)> {}
impl<F: Fn() -> Result<(Config, Vec<SocketAddr>)>> Load for F {}

/// Runs until SIGTERM or SIGINT, or until a part fails.
pub async fn run(load: impl Load) -> Result<()> {
    crate::metrics::started();
    let mut toggle_log = signal(SignalKind::user_defined1())?;
    let (config, listen) = load()?;
    let started = config.clone();
    let publisher = crate::publish::from_config(&config)?;
    querylog::set(config.dns.log_queries);
    let metrics = crate::metrics::Endpoint::bind(&config)
        .await
        .map_err(|e| anyhow!(e))?;
    let (udp, tcp) = Server::bind(&listen, config.dns.threads).await?;
    let server = Arc::new(Server::new(config.dns.clone(), listen.clone()));
    let cancel = CancellationToken::new();
    let dhcp_serving = Arc::new(Serving::default());
    let (dhcp_settings, dhcp_watch) = watch::channel(settings(&config, &listen));
    let (status_path, status_watch) = watch::channel(libvirt_leases(&config));
    let mut tasks = JoinSet::new();
    let (dhcp_ready, dhcp_started) = tokio::sync::oneshot::channel();
    supervise(
        &mut tasks,
        "DHCP",
        service::follow_interface(
            dhcp_watch,
            server.clone(),
            dhcp_serving.clone(),
            cancel.clone(),
            dhcp_ready,
        ),
    );
    // DNS answers once DHCP's names (static hosts included) are published, or DHCP waits.
    let _ = dhcp_started.await;
    supervise(
        &mut tasks,
        "DNS",
        server.clone().run(udp, tcp, cancel.clone()),
    );
    supervise(
        &mut tasks,
        "interface watch",
        follow_interfaces(server.clone(), cancel.clone()),
    );
    supervise(
        &mut tasks,
        "libvirt lease file",
        follow_libvirt_leases(status_watch, server.clone(), cancel.clone()),
    );
    let publish_view = publisher.as_ref().map(|p| crate::metrics::PublishView {
        progress: p.progress.clone(),
        primaries: p.updater.clone(),
    });
    if let Some(publisher) = publisher {
        tracing::info!(zone = %publisher.zones.forward, "publishing guests' names (RFC 2136)");
        supervise(
            &mut tasks,
            "name publisher",
            publisher.run(server.guest_names_changed(), cancel.clone()),
        );
    }
    supervise(
        &mut tasks,
        "query log",
        querylog::keep_reporting(cancel.clone()),
    );
    if let Some(endpoint) = metrics {
        let part = endpoint.serve(server.clone(), dhcp_serving, publish_view, cancel.clone());
        supervise(&mut tasks, "metrics endpoint", part);
    }
    tracing::info!(listen = ?listen, "virtdns serving");
    crate::notify::ready(&listen);

    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let outcome = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break Ok(()),
            _ = terminate.recv() => break Ok(()),
            _ = hangup.recv() => reload(&load, &started, &server, &dhcp_settings, &status_path),
            _ = toggle_log.recv() => {
                let on = querylog::toggle();
                tracing::info!("SIGUSR1: query log {}", if on { "on" } else { "off" });
            }
            Some(ended) = tasks.join_next() => {
                break Err(match ended {
                    Ok((part, Ok(()))) => anyhow!("{part} stopped on its own"),
                    Ok((part, Err(why))) => anyhow!("{part} failed: {why}"),
                    Err(e) => anyhow!("a task failed: {e}"),
                });
            }
        }
    };
    crate::notify::stopping();
    cancel.cancel();
    let drained =
        tokio::time::timeout(GRACE, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!("tasks still running after {GRACE:?}; stopping anyway");
    }
    match &outcome {
        Ok(()) => tracing::info!("virtdns stopped"),
        Err(e) => tracing::error!("virtdns stops: {e:#}"),
    }
    outcome
}

/// What the DHCP service runs with under `config`.
fn settings(config: &Config, listen: &[SocketAddr]) -> Option<Settings> {
    config.dhcp.clone().map(|dhcp| Settings {
        dhcp,
        dns: config.dns.clone(),
        listen: listen.to_vec(),
        status_file: config.network.as_ref().and_then(|n| n.write_status.clone()),
    })
}

/// Where guests' names come from when libvirt's dnsmasq serves DHCP: its lease status file.
fn libvirt_leases(config: &Config) -> Option<PathBuf> {
    config.network.as_ref().and_then(|n| n.read_status.clone())
}

/// Re-reads the configuration and applies it; keeps the running one if it is bad. What only
/// a start applies (compared with `started`, the configuration virtdns started with) is named
/// in the log and in the status systemd shows.
fn reload(
    load: &impl Load,
    started: &Config,
    server: &Arc<Server>,
    dhcp: &watch::Sender<Option<Settings>>,
    leases: &watch::Sender<Option<PathBuf>>,
) {
    let (config, listen) = match load() {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::error!("reload refused, the running configuration stays: {e:#}");
            crate::notify::reloaded("reload refused, see the log");
            return;
        }
    };
    tracing::info!("SIGHUP: configuration reloaded");
    if config.dns.log_queries != server.dns().log_queries {
        querylog::set(config.dns.log_queries);
    }
    let waiting = started.changes_awaiting_restart(&config);
    if waiting.is_empty() {
        crate::notify::reloaded("configuration reloaded");
    } else {
        let settings = waiting.join(", ");
        tracing::warn!("{settings} changed: applied at the next start, not by a reload");
        crate::notify::reloaded(&format!(
            "configuration reloaded; {settings} wait for a restart"
        ));
    }
    server.reload(config.dns.clone());
    replace(dhcp, settings(&config, &listen));
    replace(leases, libvirt_leases(&config));
    let server = server.clone();
    tokio::spawn(async move {
        server.learn().await;
    });
}

/// Keeps the clients answered and the networks served in step with the machine's
/// interfaces (a bridge that appears brings its subnet and its reverse zone).
async fn follow_interfaces(server: Arc<Server>, cancel: CancellationToken) -> Result<(), String> {
    let mut tick = tokio::time::interval(LINK_POLL);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tick.tick() => server.refresh_interfaces(),
        }
    }
}

/// Sends `next` if it differs from what `sender` holds.
fn replace<T: PartialEq>(sender: &watch::Sender<T>, next: T) {
    sender.send_if_modified(|current| {
        let changed = *current != next;
        *current = next;
        changed
    });
}

/// Serves the names of the guests libvirt's dnsmasq leased, from the lease status file it
/// keeps (recipe: libvirt keeps DHCP, virtdns serves DNS), following the file as it changes.
async fn follow_libvirt_leases(
    mut path: watch::Receiver<Option<PathBuf>>,
    server: Arc<Server>,
    cancel: CancellationToken,
) -> Result<(), String> {
    loop {
        let current = path.borrow_and_update().clone();
        let follow = async {
            let Some(file) = current else {
                return std::future::pending().await;
            };
            let publish = || {
                if let Some(names) = guest_names(&file) {
                    let domain = server.dns().domain.as_ref().map(|d| d.0.clone());
                    server.set_guest_names(domain.as_deref(), &names);
                }
            };
            publish();
            crate::watch::watch_files(|| vec![file.clone()], publish).await;
        };
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = path.changed() => {}
            _ = follow => {}
        }
    }
}

/// The live leases with a usable host name in libvirt's status file at `file` (none while
/// the file does not exist yet); None if it cannot be read, so the names stay as they were.
fn guest_names(file: &std::path::Path) -> Option<Vec<(String, std::net::Ipv4Addr)>> {
    let now = crate::dhcp::server::now() as i64;
    match crate::libvirt::read_status(file) {
        Ok(leases) => Some(
            leases
                .into_iter()
                .filter(|l| !l.is_expired(now))
                .filter_map(|l| Some((crate::types::host_label(l.hostname.as_deref()?)?, l.ip)))
                .collect(),
        ),
        Err(crate::libvirt::StatusError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Some(Vec::new())
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read libvirt's lease status file; guests' names unchanged");
            None
        }
    }
}

/// Runs `part` in `tasks`, labelled with its name for the log.
fn supervise(
    tasks: &mut JoinSet<(&'static str, Result<(), String>)>,
    name: &'static str,
    part: impl Future<Output = Result<(), String>> + Send + 'static,
) {
    tasks.spawn(async move { (name, part.await) });
}
