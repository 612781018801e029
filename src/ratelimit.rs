//! A token bucket for log lines: at most `burst` at once, refilled at `per_second`, counting
//! what it refused so one line can say how many were left out. Time is passed in, so its
//! behaviour is tested without sleeping.

use std::time::Instant;

#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    /// Refused since `take_suppressed` was last called.
    suppressed: u64,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub(crate) fn new(per_second: u32, burst: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
            suppressed: 0,
        }
    }

    /// Whether a line may go out at `now`; a refused line is counted.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        // A hair under one counts: a stream exactly at the rate must not lose a line to
        // rounding.
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// The lines refused since the last call, and starts counting again.
    pub(crate) fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, 5, t0);
        let allowed = (0..100).filter(|_| bucket.allow(t0)).count();
        assert_eq!(allowed, 5, "the burst, at one instant");
        assert_eq!(bucket.take_suppressed(), 95);
        assert_eq!(bucket.take_suppressed(), 0, "counting starts again");
        // One second later: ten more (the rate), not more than the burst would allow either.
        let t1 = t0 + Duration::from_secs(1);
        let allowed = (0..100).filter(|_| bucket.allow(t1)).count();
        assert_eq!(allowed, 5, "refill is capped at the burst");
        let t2 = t1 + Duration::from_millis(300);
        let allowed = (0..100).filter(|_| bucket.allow(t2)).count();
        assert_eq!(allowed, 3, "0.3 s at 10/s");
        assert_eq!(bucket.take_suppressed(), 95 + 97);
    }

    #[test]
    fn a_steady_stream_at_the_rate_loses_nothing() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(50, 1, t0);
        for i in 0..1000 {
            assert!(bucket.allow(t0 + Duration::from_millis(20) * i), "line {i}");
        }
        assert_eq!(bucket.take_suppressed(), 0);
    }

    #[test]
    fn time_going_backwards_gives_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut bucket = TokenBucket::new(1, 1, t0);
        assert!(bucket.allow(t0));
        assert!(!bucket.allow(t0 - Duration::from_secs(5)));
        assert!(!bucket.allow(t0 + Duration::from_millis(500)));
        assert!(bucket.allow(t0 + Duration::from_secs(1)));
    }
}
