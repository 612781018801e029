//! Items posted by many and taken together by one task: the batching behind both of the DNS
//! path's batched sends (replies to clients in `listener`, queries to upstreams in
//! `port_pool`). What one event sets off (a batch of client queries, a batch of upstream
//! replies, and the tasks they wake) runs one after another in a turn of its thread's
//! runtime, and each posts what it has to send; the first post wakes the taker, which runs
//! after them all and takes the lot.

use std::sync::Mutex;
use tokio::sync::Notify;

/// What was posted since the taker last took it.
pub(crate) struct Posted<T> {
    items: Mutex<Vec<T>>,
    posted: Notify,
}

impl<T> Default for Posted<T> {
    fn default() -> Self {
        Posted {
            items: Mutex::new(Vec::new()),
            posted: Notify::new(),
        }
    }
}

impl<T> Posted<T> {
    /// Leaves `item` for the taker, waking it if it is the first since it last took.
    pub(crate) fn post(&self, item: T) {
        let mut items = self.items.lock().unwrap();
        items.push(item);
        if items.len() == 1 {
            self.posted.notify_one();
        }
    }

    /// Waits until something is posted, then moves all of it into `batch` (which should be
    /// empty: its room is kept for the next post). Cancel-safe: dropped while waiting, it
    /// takes nothing.
    pub(crate) async fn take(&self, batch: &mut Vec<T>) {
        self.posted.notified().await;
        std::mem::swap(batch, &mut *self.items.lock().unwrap());
    }

    /// Drops whatever is waiting to be taken.
    pub(crate) fn clear(&self) {
        self.items.lock().unwrap().clear();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items.lock().unwrap().len()
    }
}
