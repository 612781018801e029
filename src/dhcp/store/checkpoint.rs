//! WAL checkpoints of the lease database, kept off the commit path an ACK waits on.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold, so every
//! ACK waiting on that commit also waits for the copy of the whole log into the database file
//! and its fsync: the slowest 1 % of REQUEST->ACK under load (bench/dhcp at 8 000/s: p99
//! 4.3-5.7 ms with it, 3.0-3.7 ms with no checkpoint at all). Here the automatic checkpoint is
//! off; after each commit the writer nudges a thread of its own, which checkpoints PASSIVE on a
//! second connection, at most once per `PASS_INTERVAL`: a passive checkpoint takes no write
//! lock, so commits go on meanwhile. The thread learns the log's length from each pass.
//!
//! A passive checkpoint cannot catch up with a writer that keeps appending, and the log starts
//! again from its beginning only once all of it is in the database; with passes alone the log
//! grew by ~6 MB a second at 8 000 leases/s. Nor can another connection force the catch-up: a
//! FULL checkpoint waits for a gap between commits that a busy writer never leaves (it timed
//! out, and the log grew on). So once a pass finds `RESTART_FRAMES` in the log, the writer
//! itself finishes the job, between two of its own commits, with the ACKs of the commit before
//! already sent: it copies what was committed since the pass, and its next commit starts the
//! log afresh (unless a reader still holds an older snapshot: then the next pass tries again).
//!
//! Nothing here opens the `-shm` file itself: closing any handle to it would drop SQLite's
//! POSIX locks on it (sqlite.org/howtocorrupt.html 2.2). rusqlite's WAL hook, which would give
//! the log's length directly, needs SQLite 3.44, and Debian 12 has 3.40.

use rusqlite::Connection;
use rusqlite::wal::CheckpointMode;
use std::ffi::c_int;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::StoreError;

/// WAL frames after which the log is made to start again (tests use a smaller figure, to see
/// it start again within a few thousand commits).
#[cfg(not(test))]
pub(super) const RESTART_FRAMES: c_int = 4000;
#[cfg(test)]
pub(super) const RESTART_FRAMES: c_int = 400;

/// Least time between two passes of the checkpoint thread: under load a pass copies what this
/// long brought, and costs one fsync of the database file. (Tests commit on tmpfs, thousands a
/// second: they keep passes close so the log's bound stays near `RESTART_FRAMES`.)
#[cfg(not(test))]
const PASS_INTERVAL: Duration = Duration::from_millis(100);
#[cfg(test)]
const PASS_INTERVAL: Duration = Duration::from_millis(2);

/// Failed passes in a row (five seconds of them under load) after which checkpoints go back
/// inside commits.
const GIVE_UP_AFTER: u32 = 50;

/// What the checkpoint thread tells the writer.
#[derive(Default)]
struct Signals {
    /// A pass left the restart to the writer; the thread starts no pass while it is set.
    writers_turn: AtomicBool,
    /// Passes keep failing (or the thread stopped): checkpoints go back inside commits.
    given_up: AtomicBool,
}

/// The writer's side of the checkpointing.
pub(super) struct Checkpoints {
    signals: Arc<Signals>,
    /// Asks the checkpoint thread for a pass; `None` for checkpoints inside commits.
    nudge: Option<mpsc::SyncSender<()>>,
}

impl Checkpoints {
    /// Starts the checkpoint thread beside the writer's connection `conn`. It ends when the
    /// `Checkpoints` returned is dropped.
    pub(super) fn start(conn: &Connection) -> Result<Checkpoints, StoreError> {
        let Some(path) = conn.path().filter(|p| !p.is_empty()).map(PathBuf::from) else {
            return Ok(Checkpoints::inline()); // an in-memory database has no WAL
        };
        let side = Connection::open(&path)?;
        // A connection checkpoints only once it has read the database and so knows it is in
        // WAL mode; before that a checkpoint does nothing (and reports -1 frames).
        let mode: String = side.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NotWal(mode));
        }
        // The checkpointing connection's own setting decides whether the database file is
        // synced before the log may be reused: never leave it to how SQLite was built.
        side.pragma_update(None, "synchronous", "FULL")?;
        let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let size_limit = log_size_limit(page);
        conn.pragma_update(None, "journal_size_limit", size_limit)?;
        if let Err(e) = prewrite_wal(&path, size_limit as u64) {
            tracing::warn!(error = %e, "lease database: cannot write the log's blocks ahead");
        }
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let signals = Arc::new(Signals::default());
        let (nudge, nudged) = mpsc::sync_channel::<()>(1);
        let shared = signals.clone();
        std::thread::Builder::new()
            .name("lease-checkpoint".into())
            .spawn(move || passes(&side, &nudged, &shared))
            .expect("lease checkpoint thread");
        Ok(Checkpoints {
            signals,
            nudge: Some(nudge),
        })
    }

    /// SQLite's automatic checkpoint, inside commits (where a second connection cannot be had).
    pub(super) fn inline() -> Checkpoints {
        Checkpoints {
            signals: Arc::default(),
            nudge: None,
        }
    }

    /// Whether checkpoints run beside the writer.
    #[cfg(test)]
    pub(super) fn beside(&self) -> bool {
        self.nudge.is_some()
    }

    /// Called by the writer between commits, once the last one's ACKs are released: finishes
    /// the checkpoint when it is the writer's turn, or asks for a pass.
    pub(super) fn after_commit(&mut self, conn: &Connection) {
        let Some(nudge) = &self.nudge else { return };
        if self.signals.writers_turn.load(Ordering::Acquire) {
            // Nothing else writes now; a reader on an older snapshot may still hold part of
            // the log back, and the next pass finds that.
            let _ = passive(conn);
            self.signals.writers_turn.store(false, Ordering::Release);
            return;
        }
        let stopped = matches!(
            nudge.try_send(()),
            Err(mpsc::TrySendError::Disconnected(()))
        );
        if stopped || self.signals.given_up.load(Ordering::Acquire) {
            tracing::error!("lease database checkpoints go back inside commits");
            if let Err(e) = conn.pragma_update(None, "wal_autocheckpoint", 1000) {
                tracing::error!(error = %e, "lease database: checkpoints cannot be turned back on");
            }
            *self = Checkpoints::inline();
        }
    }
}

/// The checkpoint thread: a pass per nudge, at most one per `PASS_INTERVAL`.
fn passes(side: &Connection, nudged: &mpsc::Receiver<()>, signals: &Signals) {
    let mut failures = 0;
    let mut last = None::<Instant>;
    while nudged.recv().is_ok() {
        if signals.writers_turn.load(Ordering::Acquire) {
            continue;
        }
        if let Some(wait) = last.and_then(|t: Instant| PASS_INTERVAL.checked_sub(t.elapsed())) {
            std::thread::sleep(wait);
        }
        last = Some(Instant::now());
        match passive(side) {
            Some(frames) => {
                failures = 0;
                if frames >= RESTART_FRAMES {
                    signals.writers_turn.store(true, Ordering::Release);
                }
            }
            None => {
                failures += 1;
                if failures == GIVE_UP_AFTER {
                    tracing::error!(failures, "lease database checkpoints keep failing");
                    signals.given_up.store(true, Ordering::Release);
                    return;
                }
            }
        }
    }
}

/// Copies what it can of the log into the database; returns the frames in the log. SQLITE_BUSY
/// (another checkpoint running, or a commit updating the log's index at that moment) is
/// routine once in a while: the next pass tries again.
fn passive(conn: &Connection) -> Option<c_int> {
    match conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
        Ok((frames, _)) => Some(frames),
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
            tracing::debug!("lease database busy; checkpoint left to the next pass");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "lease database checkpoint failed; will retry");
            None
        }
    }
}

/// The log's bound for pages of `page` bytes (frames carry a 24-byte header): room for a full
/// log and what comes during the passes that end it, so the file is reused as it is rather
/// than cut back and grown again.
pub(super) fn log_size_limit(page: i64) -> i64 {
    2 * i64::from(RESTART_FRAMES) * (page + 24)
}

/// Writes the log file's blocks once, up to `size`, past what it already holds: a commit
/// that writes into blocks never written before leaves ext4 (xfs alike) converting their
/// unwritten extents in a kernel worker before its fdatasync returns, and on a host whose
/// CPUs are busy that worker waits for a CPU for seconds while every ACK waits on the commit.
/// Zeros past the last frame are ignored by SQLite's recovery (a frame counts only if its
/// salt and checksum match). The log already exists: SQLite made it (with the database's
/// mode and owner) when the writer's connection first read the database.
fn prewrite_wal(db: &std::path::Path, size: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    const CHUNK: u64 = 1 << 20;
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let file = std::fs::OpenOptions::new().write(true).open(&wal)?;
    let start = file.metadata()?.len();
    let zeros = vec![0u8; CHUNK as usize];
    for at in (start..size).step_by(CHUNK as usize) {
        file.write_all_at(&zeros[..CHUNK.min(size - at) as usize], at)?;
    }
    if start < size {
        file.sync_data()?;
    }
    Ok(())
}
