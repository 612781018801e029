//! WAL checkpoints of the lease database, kept off the commit path an ACK waits on.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold, so every
//! ACK waiting on that commit also waits for the copy of the whole log into the database file
//! and its fsync: the slowest 1 % of REQUEST->ACK under load (bench/dhcp at 8 000/s: p99
//! 4.3-5.7 ms with it, 3.0-3.7 ms with no checkpoint at all). Here the writer's WAL hook
//! (which replaces the automatic checkpoint) nudges a thread of its own, which checkpoints
//! PASSIVE on a second connection: it takes no write lock, so commits go on meanwhile.
//!
//! A passive checkpoint cannot catch up with a writer that keeps appending, and the log starts
//! again from its beginning only once all of it is in the database; with passes alone the log
//! grew by ~12 MB a second at 8 000 leases/s. Nor can another connection force the catch-up: a
//! FULL checkpoint waits for a gap between commits that a busy writer never leaves (it timed
//! out, and the log grew on). So past `RESTART_FRAMES` the writer itself finishes the job,
//! after a pass and between two of its own commits, with the ACKs of the commit before already
//! sent: it copies only what was committed during the pass, and its next commit starts the
//! log afresh. `journal_size_limit` then gives the file's space back.

use rusqlite::Connection;
use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;
use std::ffi::c_int;
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

/// Bytes of WAL file kept when the log starts again (SQLite's `journal_size_limit`).
const WAL_SIZE_LIMIT: i64 = 16 << 20;

/// The writer's side of the checkpointing.
pub(super) struct Checkpoints {
    /// Set by the checkpoint thread after a pass that leaves the restart to the writer; the
    /// thread starts no pass while it is set.
    writers_turn: Arc<AtomicBool>,
}

impl Checkpoints {
    /// Starts the checkpoint thread beside the writer's connection `conn`. It ends when `conn`
    /// is dropped.
    pub(super) fn start(conn: &mut Connection) -> Result<Checkpoints, StoreError> {
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
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        let writers_turn = Arc::new(AtomicBool::new(false));
        let (nudge, nudged) = mpsc::sync_channel::<c_int>(1);
        let turn = writers_turn.clone();
        std::thread::Builder::new()
            .name("lease-checkpoint".into())
            .spawn(move || {
                while let Ok(frames) = nudged.recv() {
                    if turn.load(Ordering::Acquire) {
                        continue;
                    }
                    passive(&side);
                    if frames >= RESTART_FRAMES {
                        turn.store(true, Ordering::Release);
                    }
                }
            })
            .expect("lease checkpoint thread");
        conn.wal_hook(Some(move |_: &mut Wal, frames: c_int| {
            if frames >= CHECKPOINT_FRAMES {
                // Full: a pass is already due, and will cover this commit too.
                let _ = nudge.try_send(frames);
            }
            // The commit has happened whatever is returned; an error would only make it
            // look failed.
            Ok(())
        }))?;
        Ok(Checkpoints { writers_turn })
    }

    /// SQLite's automatic checkpoint, inside commits (where a second connection cannot be had).
    pub(super) fn inline() -> Checkpoints {
        Checkpoints {
            writers_turn: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Called by the writer between commits, once the last one's ACKs are released: finishes
    /// the checkpoint when it is the writer's turn.
    pub(super) fn after_commit(&self, conn: &Connection) {
        if self.writers_turn.load(Ordering::Acquire) {
            passive(conn);
            self.writers_turn.store(false, Ordering::Release);
        }
    }
}

/// Copies what it can of the log into the database. The next pass tries again after a
/// failure: one that found the log busy (the writer starting it afresh) is routine.
fn passive(conn: &Connection) {
    match conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
        Ok(_) => {}
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
            tracing::debug!("lease database busy; checkpoint left to the next pass");
        }
        Err(e) => tracing::warn!(error = %e, "lease database checkpoint failed; will retry"),
    }
}
