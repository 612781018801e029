//! WAL checkpoints of the lease database, kept off the commit path an ACK waits on.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold, so every
//! ACK waiting on that commit also waits for the copy of the whole log into the database file
//! and its fsync: the slowest 1 % of REQUEST->ACK under load (bench/dhcp at 8 000/s: p99
//! 4.3-5.7 ms with it, 3.0-3.7 ms with no checkpoint at all). Here the automatic checkpoint is
//! off, and once the log holds `CHECKPOINT_FRAMES` the writer nudges a thread of its own, which
//! checkpoints PASSIVE on a second connection: it takes no write lock, so commits go on
//! meanwhile. The writer reads the log's length (`mxFrame`) from the wal-index header in the
//! `-shm` file, whose layout SQLite documents (walformat.html, 2.1): rusqlite's WAL hook would
//! pass it, but needs SQLite 3.44, and Debian 12 has 3.40; the WAL file's size says nothing,
//! as SQLite reuses the file from its start (cutting it back to zero each time instead made
//! every fsync pay for growing it: p99 37-48 ms at 8 000/s).
//!
//! A passive checkpoint cannot catch up with a writer that keeps appending, and the log starts
//! again from its beginning only once all of it is in the database; with passes alone the log
//! grew by ~12 MB a second at 8 000 leases/s. Nor can another connection force the catch-up: a
//! FULL checkpoint waits for a gap between commits that a busy writer never leaves (it timed
//! out, and the log grew on). So past `RESTART_FRAMES` the writer itself finishes the job,
//! after a pass and between two of its own commits, with the ACKs of the commit before already
//! sent: it copies only what was committed during the pass, and its next commit starts the
//! log afresh.

use rusqlite::Connection;
use rusqlite::wal::CheckpointMode;
use std::ffi::c_int;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use super::StoreError;

/// WAL frames after which a commit asks for a checkpoint (SQLite's own automatic threshold;
/// tests use a smaller one, to see the log start again in a few thousand commits).
#[cfg(not(test))]
pub(super) const CHECKPOINT_FRAMES: c_int = 1000;
#[cfg(test)]
pub(super) const CHECKPOINT_FRAMES: c_int = 100;

/// WAL frames after which the log is made to start again.
pub(super) const RESTART_FRAMES: c_int = 4 * CHECKPOINT_FRAMES;

/// Where the wal-index header keeps `mxFrame`, the frames committed to the log (a u32 in the
/// machine's byte order; walformat.html 2.1).
const MX_FRAME_AT: u64 = 16;

/// Bytes of WAL file kept when the log starts again (SQLite's `journal_size_limit`).
const WAL_SIZE_LIMIT: i64 = 16 << 20;

/// The writer's side of the checkpointing.
pub(super) struct Checkpoints {
    /// Set by the checkpoint thread after a pass that leaves the restart to the writer; the
    /// thread starts no pass while it is set.
    writers_turn: Arc<AtomicBool>,
    /// The wal-index (`-shm`) file; `None` for checkpoints inside commits.
    index: Option<File>,
    /// Asks the checkpoint thread for a pass.
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
        let mut index = path.clone().into_os_string();
        index.push("-shm");
        let index = File::open(&index).map_err(|source| StoreError::Index {
            path: PathBuf::from(&index).display().to_string(),
            source,
        })?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let writers_turn = Arc::new(AtomicBool::new(false));
        let (nudge, nudged) = mpsc::sync_channel::<()>(1);
        let turn = writers_turn.clone();
        std::thread::Builder::new()
            .name("lease-checkpoint".into())
            .spawn(move || {
                while nudged.recv().is_ok() {
                    if turn.load(Ordering::Acquire) {
                        continue;
                    }
                    if passive(&side).is_some_and(|frames| frames >= RESTART_FRAMES) {
                        turn.store(true, Ordering::Release);
                    }
                }
            })
            .expect("lease checkpoint thread");
        Ok(Checkpoints {
            writers_turn,
            index: Some(index),
            nudge: Some(nudge),
        })
    }

    /// SQLite's automatic checkpoint, inside commits (where a second connection cannot be had).
    pub(super) fn inline() -> Checkpoints {
        Checkpoints {
            writers_turn: Arc::new(AtomicBool::new(false)),
            index: None,
            nudge: None,
        }
    }

    /// Called by the writer between commits, once the last one's ACKs are released: finishes
    /// the checkpoint when it is the writer's turn, or asks for a pass when the log is long.
    pub(super) fn after_commit(&mut self, conn: &Connection) {
        if self.writers_turn.load(Ordering::Acquire) {
            passive(conn);
            self.writers_turn.store(false, Ordering::Release);
            return;
        }
        let (Some(index), Some(nudge)) = (&self.index, &self.nudge) else {
            return;
        };
        let mut frames = [0; 4];
        // Read without SQLite's lock: a torn read only moves a pass by one commit.
        if index.read_exact_at(&mut frames, MX_FRAME_AT).is_ok()
            && u32::from_ne_bytes(frames) >= CHECKPOINT_FRAMES as u32
        {
            // Full: a pass is already due, and will cover this commit too.
            if let Err(mpsc::TrySendError::Disconnected(())) = nudge.try_send(()) {
                tracing::error!(
                    "lease checkpoint thread has stopped; checkpoints go back inside commits"
                );
                if let Err(e) = conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_FRAMES) {
                    tracing::error!(error = %e, "lease database: checkpoints cannot be turned back on");
                }
                *self = Checkpoints::inline();
            }
        }
    }
}

/// Copies what it can of the log into the database; returns the frames in the log. The next
/// pass tries again after a failure: one that found the log busy (the writer starting it
/// afresh) is routine.
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
