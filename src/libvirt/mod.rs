//! What virtdns reads from and writes for libvirt, as plain values and files, with no other I/O.
//!
//! - `network`: a network definition (`virsh net-dumpxml`'s XML, the live copy under
//!   `/run/libvirt/network` or the persistent one under `/etc/libvirt/qemu/networks`) read into a
//!   [`NetworkDef`].
//! - `import`: a [`NetworkDef`] turned into the virtdns config text that serves it
//!   (`virtdns libvirt import NET`).
//! - `status`: the lease status file `/var/lib/libvirt/dnsmasq/<bridge>.status` that
//!   `virsh net-dhcp-leases`, the `libvirt` NSS module and the tools built on them read.
//!
//! [`LibvirtPaths`] says where those files are, so that tests and the end-to-end suite can point
//! elsewhere.

use std::path::PathBuf;

pub(crate) mod import;
pub(crate) mod network;
pub(crate) mod status;

pub use import::config_toml;
pub use network::{Loaded, NetworkDef, NetworkError, load};
pub(crate) use status::{StatusError, StatusLease, read_status, write_status};

#[cfg(test)]
mod testutil;

/// Where libvirt keeps the files this module reads and writes. `Default` is a system
/// (privileged) libvirtd's, as set in libvirt's `src/network/bridge_driver_conf.c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtPaths {
    /// Live definitions of running networks, `NAME.xml`, with the bridge name filled in.
    pub run_dir: PathBuf,
    /// Persistent definitions, `NAME.xml`.
    pub etc_dir: PathBuf,
    /// Lease status files, `BRIDGE.status` (libvirt's `dnsmasqStateDir`).
    pub status_dir: PathBuf,
}

impl Default for LibvirtPaths {
    fn default() -> Self {
        LibvirtPaths {
            run_dir: PathBuf::from("/run/libvirt/network"),
            etc_dir: PathBuf::from("/etc/libvirt/qemu/networks"),
            status_dir: PathBuf::from("/var/lib/libvirt/dnsmasq"),
        }
    }
}

impl LibvirtPaths {
    /// The live definition of network `name` (present while it runs).
    pub(crate) fn live_definition(&self, name: &str) -> PathBuf {
        self.run_dir.join(format!("{name}.xml"))
    }

    /// The persistent definition of network `name` (present while it is defined).
    pub(crate) fn persistent_definition(&self, name: &str) -> PathBuf {
        self.etc_dir.join(format!("{name}.xml"))
    }

    /// The lease status file of the network on `bridge`: named after the bridge, not the
    /// network.
    pub(crate) fn status_file(&self, bridge: &str) -> PathBuf {
        self.status_dir.join(format!("{bridge}.status"))
    }
}
