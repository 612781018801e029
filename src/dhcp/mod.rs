//! The DHCPv4 half of virtdns, beside the DNS flow and feeding its local names:
//! `server` (the service loop) → `rfc2131` (decisions) over `pool` (addresses in memory),
//! `store` (durable leases, group commit) and `socket` (delivery per RFC 2131 4.1); the
//! interface's address comes from `crate::iface`; `service` follows the interface as it
//! comes, goes and changes.

pub mod pool;
pub mod rfc2131;
pub mod server;
pub(crate) mod service;
pub mod socket;
pub mod store;
