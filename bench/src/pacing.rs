//! Open-loop pacing: when the `i`th arrival at a fixed rate is due.

use std::time::Duration;

/// Offset of arrival `index` (0-based) from the start at `rate_per_s` arrivals per second.
pub fn arrival_offset(index: u64, rate_per_s: f64) -> Duration {
    Duration::from_secs_f64(index as f64 / rate_per_s)
}

/// How many arrivals are due once `elapsed` has passed (arrival 0 is due at once).
pub fn arrivals_due(elapsed: Duration, rate_per_s: f64) -> u64 {
    (elapsed.as_secs_f64() * rate_per_s).floor() as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_are_evenly_spaced() {
        assert_eq!(arrival_offset(0, 100.0), Duration::ZERO);
        assert_eq!(arrival_offset(50, 100.0), Duration::from_millis(500));
        assert_eq!(arrivals_due(Duration::ZERO, 100.0), 1);
        assert_eq!(arrivals_due(Duration::from_millis(9), 100.0), 1);
        assert_eq!(arrivals_due(Duration::from_millis(10), 100.0), 2);
        assert_eq!(arrivals_due(Duration::from_secs(1), 2000.0), 2001);
    }

    #[test]
    fn every_due_arrival_is_at_or_before_now() {
        for rate in [0.5, 7.0, 333.0, 2500.0] {
            for ms in [0u64, 1, 17, 999, 4321] {
                let elapsed = Duration::from_millis(ms);
                let due = arrivals_due(elapsed, rate);
                assert!(arrival_offset(due - 1, rate) <= elapsed);
                assert!(arrival_offset(due, rate) > elapsed);
            }
        }
    }
}
