//! What `[libvirt] network = "NAME"` adds to a configuration: the network's definition is the
//! source of truth for DNS (the bridge address to listen on, the domain, forwarders,
//! `<dns><host>`, `<txt>`, `<srv>`, forwardPlainNames), read from libvirt's own files without
//! calling libvirt; the TOML's `[dns]` keys override it and its record and forwarder lists add
//! to it. `[dhcp]` stays the TOML's (libvirt cannot define ranges without running its own DHCP
//! server); its interface defaults to the bridge. Which lease status file to write (virtdns
//! serves DHCP) or to read guest names from (libvirt's dnsmasq does) follows from the two.

use super::{Config, ConfigError, DnsConfig, dhcp::default_lease_db};
use crate::libvirt::{self, LibvirtPaths};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The `[libvirt]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LibvirtConfig {
    /// The libvirt network this instance serves.
    pub(crate) network: String,
    #[serde(default = "default_run_dir")]
    pub(crate) run_dir: PathBuf,
    #[serde(default = "default_etc_dir")]
    pub(crate) etc_dir: PathBuf,
    #[serde(default = "default_status_dir")]
    pub(crate) status_dir: PathBuf,
}

fn default_run_dir() -> PathBuf {
    LibvirtPaths::default().run_dir
}
fn default_etc_dir() -> PathBuf {
    LibvirtPaths::default().etc_dir
}
fn default_status_dir() -> PathBuf {
    LibvirtPaths::default().status_dir
}

impl LibvirtConfig {
    pub(crate) fn paths(&self) -> LibvirtPaths {
        LibvirtPaths {
            run_dir: self.run_dir.clone(),
            etc_dir: self.etc_dir.clone(),
            status_dir: self.status_dir.clone(),
        }
    }
}

/// What the network's definition settled, beside the `[dns]` it gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LibvirtNetwork {
    /// The definition read (live or persistent).
    pub(crate) definition: PathBuf,
    pub(crate) bridge: Option<String>,
    /// Lease status file to write: virtdns serves DHCP on the bridge.
    pub(crate) write_status: Option<PathBuf>,
    /// Lease status file to read guests' names from: libvirt's dnsmasq serves DHCP.
    pub(crate) read_status: Option<PathBuf>,
}

/// Applies the network's definition to `config`, parsed from `text` (the TOML at `path`).
pub(crate) fn apply(config: &mut Config, text: &str, path: &Path) -> Result<(), ConfigError> {
    let Some(lv) = config.libvirt.clone() else {
        return Ok(());
    };
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_owned(),
        line: super::line_of_key(text, "network"),
        message,
    };
    let loaded = libvirt::load(&lv.paths(), &lv.network).map_err(|e| invalid(e.to_string()))?;
    let imported = libvirt::config_toml(&loaded.def, Some(&loaded.path));
    let imported: toml::Table = toml::from_str(&imported)
        .map_err(|e| invalid(format!("network {}: {}", lv.network, e.message())))?;
    let mut dns = imported
        .get("dns")
        .and_then(|d| d.as_table())
        .cloned()
        .unwrap_or_default();
    let user: toml::Table = toml::from_str(text).unwrap_or_default();
    if let Some(own) = user.get("dns").and_then(|d| d.as_table()) {
        merge(&mut dns, own);
    }
    config.dns = DnsConfig::deserialize(toml::Value::Table(dns)).map_err(|e| {
        invalid(format!(
            "[dns] with network {}'s definition ({}): {e}",
            lv.network,
            loaded.path.display()
        ))
    })?;
    let bridge = loaded.def.bridge.clone();
    if let (Some(dhcp), Some(bridge)) = (config.dhcp.as_mut(), bridge.as_ref())
        && dhcp.interface.is_empty()
    {
        dhcp.interface = bridge.clone();
        if dhcp.lease_db == default_lease_db("") {
            dhcp.lease_db = default_lease_db(bridge);
        }
    }
    if config.dhcp.as_ref().is_some_and(|d| d.interface.is_empty()) {
        return Err(invalid(format!(
            "[dhcp] has no interface and network {} names no bridge",
            lv.network
        )));
    }
    let status = bridge.as_ref().map(|b| lv.paths().status_file(b));
    let serves_dhcp_here = config
        .dhcp
        .as_ref()
        .is_some_and(|d| Some(&d.interface) == bridge.as_ref());
    let libvirt_dhcp = loaded
        .def
        .ips
        .iter()
        .any(|ip| !ip.is_ipv6() && ip.dhcp.is_some());
    config.network = Some(LibvirtNetwork {
        definition: loaded.path,
        write_status: status.clone().filter(|_| serves_dhcp_here),
        read_status: status.filter(|_| config.dhcp.is_none() && libvirt_dhcp),
        bridge,
    });
    Ok(())
}

/// `own` over `base`: tables merge key by key, arrays of tables (records, forwarders) add
/// up, anything else of `own` replaces `base`'s.
fn merge(base: &mut toml::Table, own: &toml::Table) {
    for (key, value) in own {
        match (base.get_mut(key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (Some(toml::Value::Array(b)), toml::Value::Array(o))
                if o.iter().all(toml::Value::is_table) && b.iter().all(toml::Value::is_table) =>
            {
                b.extend(o.iter().cloned())
            }
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}
