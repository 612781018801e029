//! DHCP that follows its interface: a libvirt bridge may not exist yet when virtdns starts,
//! and `virsh net-destroy` + `net-start` replaces it with a new one (a new index, perhaps a
//! new address). This waits for the interface, serves on it, and starts again on the new one
//! when it changes, when it comes back, or when `[dhcp]` is reloaded. Leases live in the
//! store, so a restart of the service loses none; guest names stay published meanwhile.

use crate::config::{DhcpConfig, DnsConfig};
use crate::dhcp::server::DhcpServer;
use crate::iface::{self, Link};
use crate::server::Server;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

/// How often the interface is looked at.
pub(crate) const LINK_POLL: Duration = Duration::from_millis(250);
/// Longest wait for a stopped DHCP service to let go of its port.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// What the DHCP service runs with; replaced whole on reload. None: no `[dhcp]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    pub(crate) dhcp: DhcpConfig,
    pub(crate) dns: DnsConfig,
    pub(crate) listen: Vec<SocketAddr>,
    /// libvirt's lease status file for this network, to keep current.
    pub(crate) status_file: Option<PathBuf>,
}

/// The DHCP service serving now, if any, for whoever reads its state (the metrics).
#[derive(Default)]
pub(crate) struct Serving(Mutex<Weak<DhcpServer>>);

impl Serving {
    fn set(&self, server: &Arc<DhcpServer>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(server);
    }

    /// The service serving now; None while none does.
    pub(crate) fn get(&self) -> Option<Arc<DhcpServer>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).upgrade()
    }
}

/// Serves DHCP per the latest `settings` until `cancel` fires. An error ends the service:
/// a config that does not fit the interface it names, or a socket that cannot be bound.
/// `ready` fires once the first attempt is made: the service serves and its guests' names
/// (static hosts among them) are published, or it waits for its interface, or there is none.
/// `serving` holds the service while it serves.
pub(crate) async fn follow_interface(
    mut settings: watch::Receiver<Option<Settings>>,
    dns: Arc<Server>,
    serving: Arc<Serving>,
    cancel: CancellationToken,
    ready: oneshot::Sender<()>,
) -> Result<(), String> {
    let mut waiting_for: Option<String> = None;
    let mut ready = Some(ready);
    loop {
        let current = settings.borrow_and_update().clone();
        let Some(current) = current else {
            ready.take().map(|r| r.send(()));
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = settings.changed() => continue,
            }
        };
        let interface = current.dhcp.interface.clone();
        let Some(link) = iface::link(&interface) else {
            if waiting_for.as_deref() != Some(interface.as_str()) {
                tracing::warn!(%interface, "DHCP waits for the interface to exist and have an IPv4 address");
                crate::notify::dhcp(&format!("waits for {interface}"));
                waiting_for = Some(interface);
            }
            ready.take().map(|r| r.send(()));
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = settings.changed() => {}
                _ = tokio::time::sleep(LINK_POLL) => {}
            }
            continue;
        };
        waiting_for = None;
        let server = DhcpServer::start(
            &current.dhcp,
            &current.dns,
            &current.listen,
            current.status_file.clone(),
        )
        .map_err(|e| e.to_string())?;
        let server = Arc::new(server);
        serving.set(&server);
        tracing::info!(%interface, index = link.index, addr = %link.v4.addr, "DHCP serving");
        crate::notify::dhcp(&format!("serving on {interface} ({})", link.v4.addr));
        dns.set_guest_names(server.domain(), &server.names().borrow());
        ready.take().map(|r| r.send(()));
        let names = publish_guest_names(server.clone(), dns.clone());
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = server.clone().run() => return Err("the DHCP receive loop ended".into()),
            _ = names => return Err("guest name publishing ended".into()),
            _ = settings.changed() => tracing::info!("[dhcp] reloaded: DHCP starts again with it"),
            now = link_changes(&interface, link) => match now {
                Some(new) => tracing::warn!(%interface, old_index = link.index, new_index = new.index, addr = %new.v4.addr, "interface changed: DHCP binds again"),
                None => tracing::warn!(%interface, "interface gone: DHCP waits for it to come back"),
            },
        }
        released(server).await;
    }
}

/// Drops the service and waits until its last holder (a task, or the lease writer's last
/// continuation) has dropped it, its socket closed, before the next one binds the same port.
async fn released(server: Arc<DhcpServer>) {
    let mut closed = server.closed();
    drop(server);
    // Nothing is ever sent: `changed` ends with an error when the service is gone.
    if tokio::time::timeout(RELEASE_WAIT, closed.changed())
        .await
        .is_err()
    {
        tracing::warn!("the previous DHCP service is still finishing a commit; binding anyway");
    }
}

/// Returns when the interface is no longer `was`: what it is now, or None if it is gone.
async fn link_changes(interface: &str, was: Link) -> Option<Link> {
    let mut tick = tokio::time::interval(LINK_POLL);
    loop {
        tick.tick().await;
        let now = iface::link(interface);
        if now != Some(was) {
            return now;
        }
    }
}

/// Keeps DNS answering for the guests DHCP knows.
async fn publish_guest_names(dhcp: Arc<DhcpServer>, server: Arc<Server>) {
    let mut names = dhcp.names();
    loop {
        let current = names.borrow_and_update().clone();
        server.set_guest_names(dhcp.domain(), &current);
        if names.changed().await.is_err() {
            // The service stopped; the names stay published until it starts again.
            std::future::pending::<()>().await;
        }
    }
}
