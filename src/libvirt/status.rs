//! The lease status file `/var/lib/libvirt/dnsmasq/<bridge>.status` that every libvirt tool
//! reads: `virsh net-dhcp-leases` (`virNetworkGetDHCPLeases`, and through it virt-manager,
//! `virsh domifaddr --source lease`, vagrant-libvirt, terraform-provider-libvirt) and the
//! `libvirt` NSS module.
//!
//! It is a JSON array with one object per lease, as libvirt's leases helper writes it for
//! dnsmasq (`src/network/leaseshelper.c`, `virLeaseNew` in `src/util/virlease.c`):
//!
//! ```json
//! [
//!   {
//!     "ip-address": "192.168.122.220",
//!     "mac-address": "52:54:00:11:22:33",
//!     "hostname": "guest1",
//!     "client-id": "01:52:54:00:11:22:33",
//!     "expiry-time": 1795646991
//!   }
//! ]
//! ```
//!
//! `hostname` and `client-id` are left out when there is none; `client-id` is dnsmasq's
//! colon-separated hex. `expiry-time` is in Unix seconds. Readers need `ip-address` (a string)
//! and `expiry-time` (an integer), skip leases whose expiry is past, and take an empty file as
//! no leases (`virLeaseReadCustomLeaseFile`). IPv6 leases add `iaid` and `server-duid`.
//!
//! [`write_status`] replaces the file atomically, so a reader sees the old list or the new one,
//! never half of one. [`read_status`] is for the setup where libvirt's dnsmasq keeps DHCP and
//! virtdns only takes guest names from its leases: it keeps the IPv4 leases it can use, expired
//! ones included (the caller decides with [`StatusLease::is_expired`]), and skips the rest.

use crate::types::Mac;
use serde::Serialize;
use serde_json::Value;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use thiserror::Error;

/// One IPv4 lease of the status file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatusLease {
    pub(crate) ip: Ipv4Addr,
    pub(crate) mac: [u8; 6],
    pub(crate) hostname: Option<String>,
    /// The client identifier (DHCP option 61), as bytes.
    pub(crate) client_id: Option<Vec<u8>>,
    /// When the lease ends, in Unix seconds.
    pub(crate) expiry_time: i64,
}

impl StatusLease {
    /// Whether the lease is over at `now` (Unix seconds), as libvirt's readers decide it.
    pub(crate) fn is_expired(&self, now: i64) -> bool {
        self.expiry_time < now
    }
}

/// A status file that could not be read.
#[derive(Debug, Error)]
pub(crate) enum StatusError {
    #[error("{}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: not JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: not a JSON array of leases", path.display())]
    NotArray { path: PathBuf },
}

/// The fields in the order libvirt writes them.
#[derive(Serialize)]
struct Entry<'a> {
    #[serde(rename = "ip-address")]
    ip: String,
    #[serde(rename = "mac-address")]
    mac: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<&'a str>,
    #[serde(rename = "client-id", skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    #[serde(rename = "expiry-time")]
    expiry_time: i64,
}

/// Writes `leases` to `path`, replacing it atomically with mode 0644. An error names the file
/// and keeps the underlying error's kind.
pub(crate) fn write_status(path: &Path, leases: &[StatusLease]) -> io::Result<()> {
    let entries: Vec<Entry> = leases
        .iter()
        .map(|l| Entry {
            ip: l.ip.to_string(),
            mac: Mac(l.mac).to_string(),
            hostname: l.hostname.as_deref(),
            client_id: l.client_id.as_deref().map(hex_colon),
            expiry_time: l.expiry_time,
        })
        .collect();
    let mut text = serde_json::to_vec_pretty(&entries).map_err(io::Error::other)?;
    text.push(b'\n');
    replace_file(path, 0o644, |f| f.write_all(&text))
        .map_err(|e| io::Error::new(e.kind(), format!("{}: cannot write: {e}", path.display())))
}

/// Reads the leases of `path`: an empty file is no leases; entries that are not IPv4 leases
/// with an address, a MAC and an expiry time are skipped, and so are malformed optional fields.
pub(crate) fn read_status(path: &Path) -> Result<Vec<StatusLease>, StatusError> {
    let text = fs::read_to_string(path).map_err(|source| StatusError::Read {
        path: path.to_owned(),
        source,
    })?;
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let value: Value = serde_json::from_str(&text).map_err(|source| StatusError::Json {
        path: path.to_owned(),
        source,
    })?;
    let Value::Array(entries) = value else {
        return Err(StatusError::NotArray {
            path: path.to_owned(),
        });
    };
    Ok(entries.iter().filter_map(lease_of).collect())
}

/// The lease an entry describes, if it is a usable IPv4 one.
fn lease_of(entry: &Value) -> Option<StatusLease> {
    let text = |key: &str| entry.get(key).and_then(Value::as_str);
    Some(StatusLease {
        ip: text("ip-address")?.parse().ok()?,
        mac: text("mac-address")?.parse::<Mac>().ok()?.0,
        hostname: text("hostname").map(str::to_owned),
        client_id: text("client-id").and_then(parse_hex_colon),
        expiry_time: entry.get("expiry-time")?.as_i64()?,
    })
}

/// `01:52:54:00:11:22:33`, as dnsmasq formats a client-id.
fn hex_colon(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn parse_hex_colon(s: &str) -> Option<Vec<u8>> {
    s.split(':')
        .map(|g| {
            let hex = !g.is_empty() && g.len() <= 2 && g.bytes().all(|b| b.is_ascii_hexdigit());
            hex.then(|| u8::from_str_radix(g, 16).ok()).flatten()
        })
        .collect()
}

/// Replaces `path` with what `write` puts in a new file: a temporary file in the same directory
/// is written, given `mode` (whatever the umask), synced and renamed over `path`, and the
/// directory is synced. On any failure the temporary file is removed and `path` is untouched.
fn replace_file(
    path: &Path,
    mode: u32,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file path", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    // create_new: never follow or reuse something already at the temporary name.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    let result = (|| {
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        write(&mut file)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    // The rename is durable once the directory is: a crash then leaves the new file.
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
