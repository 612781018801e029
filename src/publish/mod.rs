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

pub(crate) mod dhcid;
pub(crate) mod key;
pub(crate) mod primary;
pub(crate) mod publisher;
pub mod state;
pub(crate) mod update;

use crate::config::Config;
use std::sync::{Arc, Mutex};

/// The publisher `config` asks for, its key read and checked; None without `[publish]`.
/// An unreadable or world-readable key file is an error: virtdns does not start.
pub fn from_config(
    config: &Config,
) -> Result<Option<publisher::Publisher<primary::Primaries>>, key::KeyError> {
    let (Some(publish), Some(dhcp), Some(zone)) =
        (&config.publish, &config.dhcp, config.publish_zone())
    else {
        return Ok(None);
    };
    let key = key::Key::load(publish)?;
    let name = |d: &crate::types::DomainName| {
        hickory_proto::rr::Name::from_ascii(format!("{}.", d.0.trim_end_matches('.')))
            .expect("a checked domain name")
    };
    let mut reverse: Vec<_> = publish.reverse_zones.iter().map(name).collect();
    reverse.sort_by_key(|z| std::cmp::Reverse(z.num_labels()));
    let servers = publish.servers.iter().map(|s| s.0).collect();
    Ok(Some(publisher::Publisher {
        updater: Arc::new(primary::Primaries::new(servers, key)),
        zones: update::Zones {
            forward: name(zone),
            reverse,
            ttl: publish.ttl_secs,
        },
        lease_db: dhcp.lease_db.clone(),
        statics: dhcp.hosts.clone(),
        progress: Arc::new(Mutex::new(publisher::Progress::default())),
    }))
}
