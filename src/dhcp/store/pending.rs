//! Queued lease changes on their way to disk: the writer thread settles each job once its
//! commit has ended, and the side that queued it either awaits that (`durable`) or hands
//! over what to do then (`then`). A handed-over continuation runs on whichever side comes
//! second: on the writer thread right after the commit's fdatasync, or at once when the
//! commit had already ended. That is what lets a DHCP ACK leave straight from the writer,
//! without a task and a wake-up of the runtime per ACK.
//!
//! Written by hand: it is a oneshot that can also carry a callback, a few lines over a
//! mutex; tokio's and futures' oneshots only wake a task.

use super::StoreError;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// How a commit ended: Ok once on disk.
pub(super) type Outcome = Result<(), StoreError>;

type Continuation = Box<dyn FnOnce(Outcome) + Send>;

enum State {
    /// Neither the commit nor the caller's continuation has come.
    Open,
    /// The commit ended first.
    Settled(Outcome),
    /// The continuation came first.
    Waiting(Continuation),
    /// Both came; the continuation has run.
    Finished,
}

type Shared = Arc<Mutex<State>>;

/// The writer's side of one queued job. Dropped unsettled (the writer thread went away), it
/// settles the job as failed: nothing waits forever.
pub(super) struct Settle(Shared);

/// Lease changes queued to the writer, not yet known to be on disk.
pub(crate) struct Pending(Shared);

/// A job's two sides.
pub(super) fn job() -> (Settle, Pending) {
    let shared = Arc::new(Mutex::new(State::Open));
    (Settle(shared.clone()), Pending(shared))
}

impl Settle {
    /// The commit ended with `outcome`: runs the waiting continuation, if there is one.
    pub(super) fn settle(self, outcome: Outcome) {
        settle(&self.0, outcome);
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        settle(&self.0, Err(StoreError::Stopped));
    }
}

/// Settles once; a second call (the drop after `settle`) finds the job no longer open.
fn settle(shared: &Shared, outcome: Outcome) {
    let mut state = shared.lock().unwrap();
    match std::mem::replace(&mut *state, State::Finished) {
        State::Open => *state = State::Settled(outcome),
        State::Waiting(then) => {
            drop(state);
            then(outcome);
        }
        done @ (State::Settled(_) | State::Finished) => *state = done,
    }
}

impl Pending {
    /// Changes already on disk (there were none to make durable).
    pub(super) fn done() -> Pending {
        Pending(Arc::new(Mutex::new(State::Settled(Ok(())))))
    }

    /// Runs `then` with the commit's outcome once it has ended: on the writer thread if it
    /// ends later, here and now if it already has.
    pub(crate) fn then(self, then: impl FnOnce(Outcome) + Send + 'static) {
        let mut state = self.0.lock().unwrap();
        match std::mem::replace(&mut *state, State::Finished) {
            State::Open => *state = State::Waiting(Box::new(then)),
            State::Settled(outcome) => {
                drop(state);
                then(outcome);
            }
            State::Waiting(_) | State::Finished => unreachable!("a job has one Pending"),
        }
    }

    /// Waits until the changes are committed to disk.
    pub(crate) async fn durable(self) -> Outcome {
        let (done, wait) = oneshot::channel();
        self.then(move |outcome| {
            let _ = done.send(outcome);
        });
        wait.await.unwrap_or(Err(StoreError::Stopped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn seen() -> (
        impl FnOnce(Outcome) + Send + 'static,
        mpsc::Receiver<String>,
    ) {
        let (tx, rx) = mpsc::channel();
        let then = move |outcome: Outcome| {
            let _ = tx.send(format!("{outcome:?}"));
        };
        (then, rx)
    }

    #[test]
    fn a_continuation_runs_when_the_commit_ends_after_it() {
        let (settle, pending) = job();
        let (then, rx) = seen();
        pending.then(then);
        assert!(rx.try_recv().is_err(), "not before the commit");
        settle.settle(Ok(()));
        assert_eq!(rx.try_recv().unwrap(), "Ok(())");
    }

    #[test]
    fn a_continuation_runs_at_once_when_the_commit_ended_before() {
        let (settle, pending) = job();
        settle.settle(Err(StoreError::Commit("disk full".into())));
        let (then, rx) = seen();
        pending.then(then);
        assert_eq!(rx.try_recv().unwrap(), r#"Err(Commit("disk full"))"#);
    }

    #[test]
    fn a_job_the_writer_drops_fails_before_or_after_the_continuation() {
        let (settle, pending) = job();
        let (then, rx) = seen();
        pending.then(then);
        drop(settle);
        assert_eq!(rx.try_recv().unwrap(), "Err(Stopped)");
        let (settle, pending) = job();
        drop(settle);
        let (then, rx) = seen();
        pending.then(then);
        assert_eq!(rx.try_recv().unwrap(), "Err(Stopped)");
    }

    #[test]
    fn the_continuation_runs_once() {
        let (settle, pending) = job();
        let (then, rx) = seen();
        pending.then(then);
        settle.settle(Ok(()));
        assert_eq!(rx.try_iter().count(), 1);
    }
}
