//! What this host wants in the zone and what it has put there.
//!
//! Wanted: every live lease with a name in the lease database (read as a WAL reader, which
//! never blocks DHCP's commits), and every static host with a name and an address, as
//! `Entry`s. Put there: the `published` table, one row per entry this host added or is
//! adding, in a database file of its own beside the lease database (`table_path`), written
//! by the publisher alone. It is a separate file because a second writer on the lease
//! database makes DHCP's commits wait for its lock: measured with bench/publish, the mean
//! REQUEST->ACK went from 1.2 ms to 15 ms with the table inside it. `synchronous = NORMAL`:
//! a row survives kill -9, and after a power loss the next start re-adds everything wanted
//! anyway. A row is written *before* its update is sent ("adding"), so nothing can reach the
//! zone without a row that later removes it.

use super::dhcid::dhcid;
use super::update::Entry;
use crate::config::StaticHost;
use crate::dhcp::pool::client_id_from_mac;
use crate::dhcp::store;
use rusqlite::{Connection, params};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The `published` table.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS published (
        fqdn   TEXT NOT NULL,
        addr   TEXT NOT NULL,
        dhcid  BLOB NOT NULL,
        state  TEXT NOT NULL,
        detail TEXT,
        since  INTEGER NOT NULL,
        PRIMARY KEY (fqdn, addr)
    );";

/// Where a row stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Sent, or about to be: perhaps in the zone.
    Adding,
    /// In the zone, confirmed by the primary.
    Published,
    /// The name is someone else's; nothing of ours is in the zone.
    Conflict,
}

impl State {
    /// The word stored in the table (and shown by `virtdns leases`).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Adding => "adding",
            State::Published => "published",
            State::Conflict => "conflict",
        }
    }
    fn parse(s: &str) -> State {
        match s {
            "published" => State::Published,
            "conflict" => State::Conflict,
            _ => State::Adding,
        }
    }
}

/// One row of `published`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The name and address published.
    pub entry: Entry,
    /// Where it stands.
    pub state: State,
    /// The last error or conflict, as a person reads it.
    pub detail: Option<String>,
    /// Unix seconds the state was set.
    pub(crate) since: u64,
}

/// Where the `published` table of `lease_db` lives: `NAME.published.sqlite` beside it.
pub fn table_path(lease_db: &Path) -> PathBuf {
    let stem = lease_db.file_stem().unwrap_or_default().to_string_lossy();
    lease_db.with_file_name(format!("{stem}.published.sqlite"))
}

/// The publisher's connection to its table.
pub(crate) fn open_table(lease_db: &Path) -> Result<Connection, store::StoreError> {
    store::open_wal(&table_path(lease_db), "NORMAL", SCHEMA)
}

/// The entries this host wants in the zone `zone` at `now`.
pub(crate) fn wanted(
    conn: &Connection,
    statics: &[StaticHost],
    zone: &str,
    now: u64,
) -> Result<BTreeSet<Entry>, store::StoreError> {
    let entry = |label: &str, addr: Ipv4Addr, client: &[u8]| {
        let fqdn = format!("{}.{}", label, zone.trim_end_matches('.')).to_ascii_lowercase();
        Entry {
            dhcid: dhcid(client, &fqdn),
            fqdn,
            addr,
        }
    };
    let mut wanted = BTreeSet::new();
    for lease in store::load(conn)?.into_iter().filter(|l| l.expires > now) {
        if let Some(name) = &lease.name {
            wanted.insert(entry(name, lease.addr, &lease.client));
        }
    }
    for host in statics {
        if let (Some(name), Some(addr)) = (&host.name, host.address) {
            wanted.insert(entry(
                name.first_label(),
                addr,
                &client_id_from_mac(host.mac),
            ));
        }
    }
    Ok(wanted)
}

/// Every row of `published`.
pub fn rows(conn: &Connection) -> Result<Vec<Row>, store::StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT fqdn, addr, dhcid, state, detail, since FROM published")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Vec<u8>>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, i64>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (fqdn, addr, dhcid, state, detail, since) = row?;
        let Ok(addr) = addr.parse() else { continue };
        out.push(Row {
            entry: Entry { fqdn, addr, dhcid },
            state: State::parse(&state),
            detail,
            since: since.max(0) as u64,
        });
    }
    Ok(out)
}

/// Records where `entry` stands.
pub(crate) fn set(
    conn: &Connection,
    entry: &Entry,
    state: State,
    detail: Option<&str>,
    now: u64,
) -> Result<(), store::StoreError> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO published (fqdn, addr, dhcid, state, detail, since) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        entry.fqdn,
        entry.addr.to_string(),
        entry.dhcid,
        state.as_str(),
        detail,
        now as i64
    ])?;
    Ok(())
}

/// Forgets `entry`: nothing of it is in the zone.
pub(crate) fn forget(conn: &Connection, entry: &Entry) -> Result<(), store::StoreError> {
    conn.prepare_cached("DELETE FROM published WHERE fqdn = ?1 AND addr = ?2")?
        .execute(params![entry.fqdn, entry.addr.to_string()])?;
    Ok(())
}
