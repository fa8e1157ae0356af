//! Keeps a repeated log line from flooding: a line keyed by a peer passes at most once per
//! interval (every group retries a refused peer several times a second).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::types::NodeId;

/// How often a line about the same peer is let through.
pub(crate) const PEER_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Per-peer rate limit for one kind of log line.
pub(crate) struct LogLimiter {
    interval: Duration,
    last: Mutex<HashMap<NodeId, Instant>>,
}

impl LogLimiter {
    pub(crate) fn new(interval: Duration) -> Self {
        LogLimiter {
            interval,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// True if the line about `peer` should be logged now.
    pub(crate) fn allow(&self, peer: NodeId) -> bool {
        let Ok(mut last) = self.last.lock() else {
            return true;
        };
        let now = Instant::now();
        match last.get(&peer) {
            Some(at) if now.duration_since(*at) < self.interval => false,
            _ => {
                last.insert(peer, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_peer_per_interval() {
        let limiter = LogLimiter::new(Duration::from_secs(3600));
        assert!(limiter.allow(1));
        assert!(!limiter.allow(1));
        assert!(limiter.allow(2));
        let open = LogLimiter::new(Duration::ZERO);
        assert!(open.allow(1) && open.allow(1));
    }
}
