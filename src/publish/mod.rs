//! Publishing guests' names to an organisation's DNS: RFC 2136 dynamic updates, signed with
//! TSIG, to the zone's primary servers, with RFC 4703's rules so that no name someone else
//! holds is ever overwritten.
//!
//! The data flows one way: the lease database (what DHCP last decided, durable) and the
//! static hosts are what this host wants in the zone (`Entry`); the `published` table in
//! the same database is what it has put there; `publisher` makes the zone follow the first,
//! recording each step in the second. A pending update is therefore never a message kept
//! somewhere: it is the difference between the two tables, written in the same transaction
//! as the lease change that caused it, so it survives kill -9 and is retried until the
//! zone agrees.

pub mod dhcid;
pub mod key;
pub mod update;
