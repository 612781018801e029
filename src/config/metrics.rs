//! The `[metrics]` section: where the Prometheus endpoint listens. The section's presence
//! turns the endpoint on.

use serde::Deserialize;
use std::net::SocketAddr;

/// Where the endpoint listens when `[metrics]` names no address.
pub(crate) const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9153";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MetricsConfig {
    /// Address and port of the HTTP endpoint (`GET /metrics`).
    #[serde(default = "default_listen")]
    pub(crate) listen: MetricsListen,
}

/// The endpoint's address: an address and a port, the port not 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct MetricsListen(pub(crate) SocketAddr);

impl TryFrom<String> for MetricsListen {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 => Ok(MetricsListen(a)),
            Ok(_) => Err(format!("[metrics] listen '{s}': the port cannot be 0")),
            Err(_) => Err(format!(
                "[metrics] listen '{s}' is not an address and port (such as \
                 {DEFAULT_METRICS_LISTEN}, or [::1]:9153)"
            )),
        }
    }
}

fn default_listen() -> MetricsListen {
    MetricsListen(DEFAULT_METRICS_LISTEN.parse().expect("a valid default"))
}
