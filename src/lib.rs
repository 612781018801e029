//! virtdns: the name service for a virtual-machine network.
//!
//! # Layout
//! A query flows `dns::listener` → `dns::resolver` (after `dns::acl`) → { `dns::cache` |
//! `dns::local` | `dns::forward` (its walk over the servers) → `dns::guard` (cookies and
//! 0x20) → `dns::transport` / `dns::port_pool` } → reply; a forwarded UDP query's reply is
//! mostly taken, and its walk ended, by the thread's `port_pool` reader, without a task of its
//! own (`dns::forward`). `dns::router` decides which servers a name goes to;
//! `dns::upstream` holds what is known of each server and `dns::probe` learns it;
//! `dns::discover` finds the host's split domains; `dns::wire` reads and patches packet bytes
//! in place, with `dns::rcode` as its RCODE type.
//!
//! Beside it, `dhcp` hands out addresses (`dhcp::server` → `dhcp::rfc2131` over `dhcp::pool`,
//! durable in `dhcp::store`) and feeds guest names to the local names.
//!
//! Around both: `cli` (the command line, and its flags applied over the file), `config` (the TOML file), `resolv_conf` and `hosts` (the host's files),
//! `watch` (noticing they changed), `iface` (the machine's interface addresses), `types`
//! (the value types everything shares), `server` (the DNS service and its state),
//! `metrics` (counters and the Prometheus endpoint; `dns::observe` reports each query to it
//! and to `dns::querylog`), `ratelimit` (a token bucket for log lines), and `instance`, the
//! composition root that owns the lifecycle of one running virtdns, telling systemd how it
//! goes through `notify`.
//!
//! Underneath: `sys`, the only module allowed `unsafe`: the system calls made through libc
//! by hand, each behind a small safe function. The lints below keep it that way, keep
//! internal items `pub(crate)` (`unreachable_pub`) and what is `pub` documented.

#![deny(unsafe_code)]
#![warn(unreachable_pub, missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod cli;
pub mod config;
pub mod dhcp;
pub mod dns;
pub mod hosts;
pub mod iface;
pub mod instance;
pub mod libvirt;
pub(crate) mod metrics;
pub(crate) mod notify;
pub(crate) mod ports;
pub mod publish;
pub(crate) mod ratelimit;
pub(crate) mod resolv_conf;
pub mod server;
mod sys;
pub mod types;
pub(crate) mod watch;
