//! The deadlines of the queries no task awaits (`port_pool::start`), kept by their thread's
//! reader: by the millisecond they fall in, lazily. A query that ends before its deadline
//! leaves its entry behind, and the entry is passed over when it comes due (its token no
//! longer names a waiting query). So a query costs one append, and each entry is looked at
//! once. Written by hand: a timer per query (tokio's, or `DelayQueue`'s) is a registration
//! and a removal per query, which this saves; a deadline is kept to the millisecond.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Entries (a socket's key, a query's token) by the millisecond they are due in.
pub(super) struct Deadlines {
    epoch: Instant,
    /// By milliseconds since `epoch`, rounded up: never due before the deadline itself.
    due: BTreeMap<u64, Vec<(u64, u64)>>,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            epoch: Instant::now(),
            due: BTreeMap::new(),
        }
    }
}

impl Deadlines {
    /// The query `token` on the socket of `key` is due to end `at`.
    pub(super) fn add(&mut self, at: Instant, key: u64, token: u64) {
        let ms = at
            .saturating_duration_since(self.epoch)
            .as_micros()
            .div_ceil(1000);
        let ms = u64::try_from(ms).unwrap_or(u64::MAX);
        self.due.entry(ms).or_default().push((key, token));
    }

    /// Takes every entry due by `now`, each once, earliest first.
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<(u64, u64)> {
        let now_ms = now.saturating_duration_since(self.epoch).as_millis();
        let now_ms = u64::try_from(now_ms).unwrap_or(u64::MAX);
        let later = self.due.split_off(&now_ms.saturating_add(1));
        let due = std::mem::replace(&mut self.due, later);
        due.into_values().flatten().collect()
    }

    /// When the earliest entry falls due (perhaps for a query that ended since).
    pub(super) fn next(&self) -> Option<Instant> {
        let (&ms, _) = self.due.first_key_value()?;
        Some(self.epoch + Duration::from_millis(ms))
    }

    pub(super) fn clear(&mut self) {
        self.due.clear();
    }

    /// Entries kept, due or not.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.due.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_due_once_in_order_never_before_their_deadline() {
        let mut d = Deadlines::default();
        let t = d.epoch;
        let ms = Duration::from_millis;
        d.add(t + ms(5), 1, 10);
        d.add(t + ms(2) + Duration::from_micros(1), 2, 20);
        d.add(t + ms(5), 3, 30);
        assert_eq!(d.next(), Some(t + ms(3)), "rounded up to the millisecond");
        let due = d.take_due(t + ms(2) + Duration::from_micros(999));
        assert!(due.is_empty(), "not before its deadline");
        assert_eq!(d.take_due(t + ms(3)), [(2, 20)]);
        assert_eq!(d.take_due(t + ms(9)), [(1, 10), (3, 30)]);
        assert_eq!((d.len(), d.next()), (0, None));
        assert!(d.take_due(t + ms(9)).is_empty(), "each entry once");
    }
}
