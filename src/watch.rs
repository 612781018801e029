//! Noticing that a file changed: resolv.conf and hosts files are usually replaced by rename,
//! often behind a symlink whose target moves too.
//!
//! Written by hand because no dependency we take watches files; polling `stat` of the path
//! (following symlinks) and of the symlink itself every 250 ms costs two syscalls and catches
//! every kind of replacement (rename over, symlink retargeted, edited in place, deleted)
//! without the pitfalls of inotify watches on replaced inodes.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// What identifies one version of a file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    target: Option<PathBuf>,
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
    changed: i64,
    changed_ns: i64,
}

/// The current fingerprint of `path`, or None if it does not exist.
pub(crate) fn fingerprint(path: &Path) -> Option<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        target: std::fs::canonicalize(path).ok(),
        inode: meta.ino(),
        len: meta.len(),
        modified: meta.modified().ok(),
        changed: meta.ctime(),
        changed_ns: meta.ctime_nsec(),
    })
}

/// Calls `on_change` every time any of the files `paths()` names changes, or the list
/// itself changes (a reload named other files), until the task is dropped.
pub(crate) async fn watch_files(paths: impl Fn() -> Vec<PathBuf>, mut on_change: impl FnMut()) {
    let look = |paths: Vec<PathBuf>| {
        let prints: Vec<_> = paths.iter().map(|p| fingerprint(p)).collect();
        (paths, prints)
    };
    let mut last = look(paths());
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = look(paths());
        if now != last {
            last = now;
            on_change();
        }
    }
}
