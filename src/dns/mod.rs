//! The DNS half of virtdns, in the order a query meets it: `listener` (sockets) → `resolver`
//! (the router of the flow) → `local` (local names) | `cache` | `forward` (the walk over the
//! servers) → `guard` (cookies and 0x20: what a query carries and a reply must match) →
//! `transport` (one exchange with one server, behind the `Exchanger` seam, over `port_pool`'s
//! sockets; a walk begun by the listener ends where its first reply is read, if that reply
//! ends it). `upstream` holds what is known of each server and `probe` learns
//! it; `acl` says which clients are answered, `router` holds the routing table, `discover`
//! finds split domains, `wire` reads and patches packet bytes (`rcode` is its RCODE type),
//! `trace` records decisions for `virtdns explain`. `served` says how a query was answered,
//! `observe` reports it (counted, and logged by `querylog` while that is on). `posted` batches
//! what many send into one sender's turn.

pub mod acl;
pub mod cache;
pub(crate) mod discover;
pub mod forward;
pub mod guard;
pub(crate) mod listener;
pub mod local;
pub mod observe;
pub(crate) mod port_pool;
pub(crate) mod posted;
pub(crate) mod probe;
pub(crate) mod querylog;
pub(crate) mod rcode;
pub mod resolver;
pub(crate) mod reverse;
pub mod router;
pub mod served;
pub(crate) mod trace;
pub mod transport;
pub(crate) mod udp_batch;
pub mod upstream;
pub mod wire;
