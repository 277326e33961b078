//! The circuit breaker: a source whose rejects pile up (a producer deploying a broken schema,
//! say) is paused instead of pouring into the quarantine at full speed. More than
//! `max_rejects` rejects of one topic within `window` opens it: the ingestor pauses that
//! topic's partitions (what is buffered is still committed; reading later resumes at the next
//! offset, so nothing is dropped), sets `finlake_ingest_circuit_open` and logs an alert. It
//! closes after `cool_down`, or at once on SIGUSR1.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The breaker's settings (the spec's `processing.config.circuit_breaker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Rejects tolerated within `window`.
    pub max_rejects: u64,
    /// The sliding window.
    pub window: Duration,
    /// How long a source stays paused.
    pub cool_down: Duration,
}

#[derive(Debug, Default)]
struct TopicState {
    recent: VecDeque<(Instant, u64)>,
    sum: u64,
    open_until: Option<Instant>,
}

/// Reject counts per topic over a sliding window, and which topics are open.
#[derive(Debug)]
pub struct Breaker {
    cfg: BreakerConfig,
    topics: HashMap<String, TopicState>,
}

impl Breaker {
    /// A breaker with every topic closed.
    pub fn new(cfg: BreakerConfig) -> Self {
        Breaker {
            cfg,
            topics: HashMap::new(),
        }
    }

    /// Counts `rejects` of `topic` seen at `now`; returns the rejects within the window
    /// when this opens the breaker (it was closed and the count now exceeds the limit).
    pub fn record(&mut self, topic: &str, rejects: u64, now: Instant) -> Option<u64> {
        if rejects == 0 && !self.topics.contains_key(topic) {
            return None;
        }
        let cfg = self.cfg;
        let st = self.topics.entry(topic.to_string()).or_default();
        if rejects > 0 {
            st.recent.push_back((now, rejects));
            st.sum += rejects;
        }
        while let Some(&(t, n)) = st.recent.front() {
            if now.duration_since(t) <= cfg.window {
                break;
            }
            st.recent.pop_front();
            st.sum -= n;
        }
        if st.open_until.is_none() && st.sum > cfg.max_rejects {
            st.open_until = Some(now + cfg.cool_down);
            return Some(st.sum);
        }
        None
    }

    /// Whether `topic` is paused.
    pub fn is_open(&self, topic: &str) -> bool {
        self.topics
            .get(topic)
            .is_some_and(|s| s.open_until.is_some())
    }

    /// Topics whose cool-down has passed at `now` (or every open one when `all`, the
    /// operator's signal), closed again with their count cleared.
    pub fn close_due(&mut self, now: Instant, all: bool) -> Vec<String> {
        let mut out = Vec::new();
        for (topic, st) in self.topics.iter_mut() {
            if st.open_until.is_some_and(|t| all || now >= t) {
                st.open_until = None;
                st.recent.clear();
                st.sum = 0;
                out.push(topic.clone());
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            max_rejects: 10,
            window: Duration::from_secs(60),
            cool_down: Duration::from_secs(300),
        }
    }

    #[test]
    fn opens_above_the_limit_within_the_window_only() {
        let mut b = Breaker::new(cfg());
        let t0 = Instant::now();
        assert_eq!(b.record("t", 10, t0), None, "at the limit: still closed");
        // the first 10 leave the window before the next 5 come
        assert_eq!(b.record("t", 5, t0 + Duration::from_secs(61)), None);
        assert!(!b.is_open("t"));
        assert_eq!(b.record("t", 6, t0 + Duration::from_secs(62)), Some(11));
        assert!(b.is_open("t"));
        assert!(!b.is_open("other"));
        // once open, more rejects do not open it again
        assert_eq!(b.record("t", 100, t0 + Duration::from_secs(63)), None);
    }

    #[test]
    fn closes_after_the_cool_down_or_on_the_signal_with_the_count_cleared() {
        let mut b = Breaker::new(cfg());
        let t0 = Instant::now();
        b.record("a", 11, t0);
        b.record("b", 11, t0 + Duration::from_secs(100));
        assert!(b.close_due(t0 + Duration::from_secs(299), false).is_empty());
        assert_eq!(b.close_due(t0 + Duration::from_secs(300), false), vec!["a"]);
        assert!(!b.is_open("a") && b.is_open("b"));
        // cleared: one more reject does not reopen it
        assert_eq!(b.record("a", 1, t0 + Duration::from_secs(301)), None);
        assert_eq!(b.close_due(t0 + Duration::from_secs(301), true), vec!["b"]);
        assert!(!b.is_open("b"));
    }
}
