//! What systemd is told about the service (`Type=notify`, sd_notify(3)): READY=1 once DNS is
//! served, STOPPING=1 when virtdns stops, and a STATUS= line (`systemctl status` shows it)
//! made of what DNS and DHCP are doing now. Outside systemd (no NOTIFY_SOCKET) every call
//! does nothing.

use sd_notify::NotifyState;
use std::net::SocketAddr;
use std::sync::Mutex;

/// The parts of the status line: DNS's, then DHCP's.
static STATUS: Mutex<(String, String)> = Mutex::new((String::new(), String::new()));

/// DNS serves on `listen`: the service is ready.
pub(crate) fn ready(listen: &[SocketAddr]) {
    let addrs: Vec<String> = listen.iter().map(ToString::to_string).collect();
    let line = set(|s| s.0 = format!("DNS on {}", addrs.join(", ")));
    send(&[NotifyState::Ready, NotifyState::Status(&line)]);
}

/// What DHCP is doing now (serving on an interface, waiting for it).
pub(crate) fn dhcp(what: &str) {
    let line = set(|s| s.1 = format!("DHCP {what}"));
    send(&[NotifyState::Status(&line)]);
}

/// The configuration was reloaded (SIGHUP), or a reload was refused.
pub(crate) fn reloaded(outcome: &str) {
    let line = set(|_| ());
    send(&[NotifyState::Status(&format!("{line} ({outcome})"))]);
}

/// virtdns is stopping.
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Updates the parts and returns the whole line.
fn set(change: impl FnOnce(&mut (String, String))) -> String {
    let mut status = STATUS.lock().unwrap_or_else(|e| e.into_inner());
    change(&mut status);
    match (status.0.is_empty(), status.1.is_empty()) {
        (_, true) => status.0.clone(),
        (true, false) => status.1.clone(),
        (false, false) => format!("{}; {}", status.0, status.1),
    }
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "cannot notify systemd");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_joins_dns_and_dhcp() {
        assert_eq!(
            set(|s| s.1 = "DHCP waits for virbr0".into()),
            "DHCP waits for virbr0"
        );
        assert_eq!(
            set(|s| s.0 = "DNS on 192.168.122.1:53".into()),
            "DNS on 192.168.122.1:53; DHCP waits for virbr0"
        );
    }
}
