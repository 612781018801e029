//! The lease store: SQLite (WAL, `synchronous = FULL`), so a lease is on disk before its ACK
//! is sent. One writer thread owns the connection and commits whatever has queued up in one
//! transaction (group commit): under load a single fsync covers many ACKs, so durability
//! does not cap throughput. Copying the WAL into the database (checkpoints) is mostly done
//! beside it (`checkpoint`), outside the commits ACKs wait for.

mod checkpoint;
mod pending;

use crate::dhcp::pool::Lease;
use crate::types::Mac;
use checkpoint::Checkpoints;
pub(crate) use pending::Pending;
use pending::Settle;
use rusqlite::{Connection, params};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::mpsc;
use thiserror::Error;

/// Most changes committed in one transaction.
const MAX_BATCH: usize = 4096;

/// Why the lease database failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database could not be opened or set up.
    #[error("lease database {path}: {source}")]
    Open {
        /// The database file.
        path: String,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A statement failed.
    #[error("lease database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The database is not in WAL mode (the file system refused it).
    #[error("lease database is in journal mode {0}, not WAL")]
    NotWal(String),
    /// A commit failed (SQLite's error, as the writer logged it).
    #[error("lease database commit failed: {0}")]
    Commit(String),
    /// The writer thread has stopped: nothing more is made durable.
    #[error("lease database writer has stopped")]
    Stopped,
}

/// A change to make durable.
#[derive(Debug, Clone)]
pub enum Change {
    /// Stores the lease, replacing any other of its address.
    Put(Lease),
    /// Deletes the lease of this address.
    Remove(Ipv4Addr),
}

type Job = (Vec<Change>, Settle);

/// Handle to the writer thread.
#[derive(Clone)]
pub(crate) struct Store {
    jobs: mpsc::Sender<Job>,
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS leases (
        addr     TEXT PRIMARY KEY,
        client   BLOB NOT NULL,
        mac      TEXT NOT NULL,
        name     TEXT,
        expires  INTEGER NOT NULL
    );";

pub(crate) fn open(path: &Path) -> Result<Connection, StoreError> {
    open_wal(path, "FULL", SCHEMA)
}

/// Opens (creating it and its folder if need be) the SQLite database at `path` in WAL mode
/// with `synchronous` as given, and makes sure `schema` exists.
pub(crate) fn open_wal(
    path: &Path,
    synchronous: &str,
    schema: &str,
) -> Result<Connection, StoreError> {
    let wrap = |source| StoreError::Open {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    let conn = Connection::open(path).map_err(wrap)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(wrap)?;
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(wrap)?;
    conn.execute_batch(schema).map_err(wrap)?;
    Ok(conn)
}

/// Every stored lease (expired ones included; the caller filters).
pub fn load(conn: &Connection) -> Result<Vec<Lease>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT addr, client, mac, name, expires FROM leases ORDER BY addr")?;
    let rows = stmt.query_map([], |row| {
        let addr: String = row.get(0)?;
        let mac: String = row.get(2)?;
        let expires: i64 = row.get(4)?;
        Ok((
            addr,
            row.get::<_, Vec<u8>>(1)?,
            mac,
            row.get::<_, Option<String>>(3)?,
            expires,
        ))
    })?;
    let mut leases = Vec::new();
    for row in rows {
        let (addr, client, mac, name, expires) = row?;
        let (Ok(addr), Ok(mac)) = (addr.parse::<Ipv4Addr>(), mac.parse::<Mac>()) else {
            tracing::warn!(%addr, %mac, "skipping unreadable lease row");
            continue;
        };
        leases.push(Lease {
            addr,
            client,
            mac,
            name,
            expires: expires.max(0) as u64,
        });
    }
    Ok(leases)
}

/// Whether a lease database exists and can be read (for `virtdns leases`).
pub fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(
        |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        },
    )
}

impl Store {
    /// Starts the writer thread on `conn`, and its checkpointer.
    pub(crate) fn start(conn: Connection) -> Store {
        let checkpoints = Checkpoints::start(&conn).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "lease database: checkpoints stay inside commits");
            Checkpoints::inline()
        });
        Store::with(conn, checkpoints)
    }

    fn with(conn: Connection, checkpoints: Checkpoints) -> Store {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("lease-writer".into())
            .spawn(move || writer(conn, queue, checkpoints))
            .expect("lease writer thread");
        Store { jobs }
    }

    /// Makes `changes` durable; returns once they are committed to disk.
    #[cfg(test)]
    pub(crate) async fn commit(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        self.enqueue(changes).durable().await
    }
}

/// Where decisions' lease changes go, in the order they are queued: the seam between the
/// DHCP decisions and the database (a scripted log in tests).
pub(crate) trait LeaseLog {
    type Pending;
    /// Queues `changes` behind everything queued before; returns at once.
    fn enqueue(&self, changes: Vec<Change>) -> Self::Pending;
}

impl LeaseLog for Store {
    type Pending = Pending;

    fn enqueue(&self, changes: Vec<Change>) -> Pending {
        if changes.is_empty() {
            return Pending::done();
        }
        let (settle, pending) = pending::job();
        // A job the writer can no longer take comes back and is dropped: its Settle then
        // fails it (`StoreError::Stopped`).
        let _ = self.jobs.send((changes, settle));
        pending
    }
}

fn writer(mut conn: Connection, queue: mpsc::Receiver<Job>, mut checkpoints: Checkpoints) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let result = apply(&mut conn, batch.iter().flat_map(|(changes, _)| changes));
        crate::metrics::lease_commit(started.elapsed());
        let result = result.map_err(|e| {
            tracing::error!(error = %e, "lease database write failed; ACKs withheld");
            e.to_string()
        });
        // ACKs go out from here, in the continuations their decisions handed over.
        for (_, settle) in batch {
            settle.settle(result.clone().map_err(StoreError::Commit));
        }
        checkpoints.after_commit(&conn);
    }
}

fn apply<'a>(
    conn: &mut Connection,
    changes: impl Iterator<Item = &'a Change>,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut put = tx.prepare_cached(
            "INSERT OR REPLACE INTO leases (addr, client, mac, name, expires) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut remove = tx.prepare_cached("DELETE FROM leases WHERE addr = ?1")?;
        for change in changes {
            match change {
                Change::Put(l) => {
                    put.execute(params![
                        l.addr.to_string(),
                        l.client,
                        l.mac.to_string(),
                        l.name,
                        l.expires as i64
                    ])?;
                }
                Change::Remove(addr) => {
                    remove.execute(params![addr.to_string()])?;
                }
            }
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::OptionalExtension;

    /// One stored lease.
    fn find(conn: &Connection, addr: Ipv4Addr) -> Result<Option<Lease>, StoreError> {
        let row = conn
            .query_row(
                "SELECT client, mac, name, expires FROM leases WHERE addr = ?1",
                params![addr.to_string()],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                },
            )
            .optional()?;
        Ok(row.and_then(|(client, mac, name, expires)| {
            Some(Lease {
                addr,
                client,
                mac: mac.parse().ok()?,
                name,
                expires: expires.max(0) as u64,
            })
        }))
    }

    /// An empty folder of its own for a test's database, and the database's path in it.
    fn scratch(test: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("virtdns-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (dir.clone(), dir.join("leases.sqlite"))
    }

    fn lease(n: u8) -> Lease {
        Lease {
            addr: Ipv4Addr::new(198, 18, 0, n),
            client: vec![1, 2, 3, n],
            mac: Mac([0x52, 0x54, 0, 0, 0, n]),
            name: Some(format!("vm{n}")),
            expires: 2_000_000_000,
        }
    }

    #[tokio::test]
    async fn committed_leases_survive_reopening() {
        let (dir, path) = scratch("store");
        let store = Store::start(open(&path).unwrap());
        let commits = (1..=50).map(|n| {
            let store = store.clone();
            tokio::spawn(async move { store.commit(vec![Change::Put(lease(n))]).await })
        });
        for c in commits.collect::<Vec<_>>() {
            c.await.unwrap().unwrap();
        }
        store
            .commit(vec![Change::Remove(lease(7).addr)])
            .await
            .unwrap();
        let conn = open_read_only(&path).unwrap();
        let leases = load(&conn).unwrap();
        assert_eq!(leases.len(), 49);
        assert_eq!(find(&conn, lease(8).addr).unwrap(), Some(lease(8)));
        assert_eq!(find(&conn, lease(7).addr).unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A store whose checkpoints run beside its writer (`Store::start` would fall back to
    /// SQLite's own, and the tests below would pass on that too).
    fn beside(conn: Connection) -> Store {
        let checkpoints = checkpoint::Checkpoints::start(&conn).unwrap();
        assert!(checkpoints.beside());
        Store::with(conn, checkpoints)
    }

    /// Commits go to the WAL; only a checkpoint copies them into the database file. With the
    /// automatic checkpoint off, only the checkpoint thread and the writer's turns do.
    #[tokio::test]
    async fn the_checkpointer_copies_the_wal_into_the_database() {
        let (dir, path) = scratch("ckpt");
        let store = beside(open(&path).unwrap());
        let empty = std::fs::metadata(&path).unwrap().len();
        for n in 0..50 {
            let mut l = lease(1);
            l.addr = Ipv4Addr::from(0xc612_0000 + n as u32);
            store.commit(vec![Change::Put(l)]).await.unwrap();
        }
        // Wait for the checkpointer (a readiness poll: it runs beside the commits).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::fs::metadata(&path).unwrap().len() == empty {
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint reached the file"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The log's blocks are written ahead when the store opens (with the database's mode),
    /// and the zeros past the frames change nothing a reopened database reads.
    #[tokio::test]
    async fn the_log_is_written_ahead_and_read_back_intact() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, path) = scratch("prewrite");
        drop(open(&path).unwrap()); // creates it; a clean close removes the log
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let store = beside(open(&path).unwrap());
        store.commit(vec![Change::Put(lease(3))]).await.unwrap();
        let wal = std::fs::metadata(dir.join("leases.sqlite-wal")).unwrap();
        let limit = checkpoint::log_size_limit(4096) as u64;
        assert!(wal.len() >= limit, "log {} bytes, limit {limit}", wal.len());
        assert_eq!(wal.permissions().mode() & 0o777, 0o640);
        drop(store);
        let conn = open_read_only(&path).unwrap();
        assert_eq!(find(&conn, lease(3).addr).unwrap(), Some(lease(3)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A writer that never pauses still gets its log started again: the WAL file stays near
    /// RESTART_FRAMES pages, where passive passes alone let it grow with every commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_starts_again_under_a_writer_that_never_pauses() {
        let (dir, path) = scratch("restart");
        let store = beside(open(&path).unwrap());
        let wal = dir.join("leases.sqlite-wal");
        let mut largest = 0;
        let mut in_flight = std::collections::VecDeque::new();
        for n in 0..20_000u32 {
            let mut l = lease(1);
            l.addr = Ipv4Addr::from(0xc612_0000 + n * 7919 % 65_536);
            in_flight.push_back(store.enqueue(vec![Change::Put(l)]));
            if in_flight.len() > 32 {
                in_flight.pop_front().unwrap().durable().await.unwrap();
                largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
            }
        }
        let limit = 3 * checkpoint::RESTART_FRAMES as u64 * 4120;
        assert!(
            largest < limit,
            "WAL reached {largest} bytes (limit {limit})"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
