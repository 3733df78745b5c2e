//! Per-record log lines, rate-limited: a flood of bad records or failed deliveries (a
//! broken producer upstream, a cluster down) writes one line per reason per
//! [`LOG_INTERVAL`], with the count of the lines held back since, instead of one line
//! per record.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// At most one line per reason and stage this often.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Decides which per-record lines are written. One per stage (each relay owns its own).
#[derive(Debug)]
pub(crate) struct LogLimiter {
    interval: Duration,
    reasons: HashMap<&'static str, Window>,
}

#[derive(Debug)]
struct Window {
    logged_at: Instant,
    held_back: u64,
}

impl LogLimiter {
    /// A limiter letting one line per reason through every `interval`.
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            reasons: HashMap::new(),
        }
    }

    /// Whether a line about `reason` may be written at `now`: `Some(n)` when it may, `n`
    /// being the lines about `reason` held back since the last one written; `None` when
    /// it is held back (and counted).
    pub(crate) fn admit(&mut self, reason: &'static str, now: Instant) -> Option<u64> {
        match self.reasons.get_mut(reason) {
            Some(window) if now.saturating_duration_since(window.logged_at) < self.interval => {
                window.held_back += 1;
                None
            }
            Some(window) => {
                window.logged_at = now;
                Some(std::mem::take(&mut window.held_back))
            }
            None => {
                self.reasons.insert(
                    reason,
                    Window {
                        logged_at: now,
                        held_back: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new(LOG_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_reason_per_interval_with_the_count_held_back() {
        let mut limiter = LogLimiter::default();
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        assert_eq!(limiter.admit("malformed_json", at(0)), Some(0));
        for second in 1..10 {
            assert_eq!(limiter.admit("malformed_json", at(second)), None);
        }
        // Another reason has its own window.
        assert_eq!(limiter.admit("missing_field", at(5)), Some(0));
        assert_eq!(limiter.admit("malformed_json", at(10)), Some(9));
        assert_eq!(limiter.admit("malformed_json", at(11)), None);
        assert_eq!(limiter.admit("malformed_json", at(25)), Some(1));
        assert_eq!(limiter.admit("missing_field", at(25)), Some(0));
    }

    #[test]
    fn a_flood_writes_a_bounded_number_of_lines() {
        let mut limiter = LogLimiter::new(Duration::from_secs(10));
        let start = Instant::now();
        // 10 000 records a second for a minute, all rejected for one reason.
        let mut written = 0;
        let mut held_back = 0;
        for n in 0..600_000u64 {
            let now = start + Duration::from_micros(n * 100);
            if let Some(count) = limiter.admit("too_deep", now) {
                written += 1;
                held_back += count;
            }
        }
        assert_eq!(written, 6, "one line per 10 s over 60 s");
        assert_eq!(
            written + held_back,
            600_000 - limiter.reasons["too_deep"].held_back
        );
    }
}
