//! What subscribers give the registry and get back: poll settings, a subscription, a
//! queue's latest state, and the hook that observes every poll.

use std::collections::HashMap;
use std::time::Duration;

use super::super::{Credentials, ProviderKind, QueueError, QueueMetrics, QueueUri};

/// Poll intervals per provider kind and the retry cap.
#[derive(Debug, Clone, PartialEq)]
pub struct PollSettings {
    /// Intervals set by the controller's flags; a kind without one polls at its table
    /// default ([`crate::queue::kinds::ProviderSpec::default_interval`]).
    intervals: HashMap<ProviderKind, Duration>,
    /// Longest wait between retries of an unreachable queue. Default 30 s.
    pub max_backoff: Duration,
}

impl Default for PollSettings {
    fn default() -> Self {
        Self {
            intervals: HashMap::new(),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl PollSettings {
    /// The same settings with `kind` polled every `interval`.
    pub fn with_interval(mut self, kind: ProviderKind, interval: Duration) -> Self {
        self.intervals.insert(kind, interval);
        self
    }

    /// The same settings with retries of an unreachable queue capped at `max_backoff`.
    pub fn with_max_backoff(mut self, max_backoff: Duration) -> Self {
        self.max_backoff = max_backoff;
        self
    }

    /// The interval used when a subscription does not set one.
    pub fn default_interval(&self, kind: ProviderKind) -> Duration {
        self.intervals
            .get(&kind)
            .copied()
            .unwrap_or(kind.spec().default_interval)
    }
}

/// What a subscriber wants to watch.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// One or more queues the same workers consume, in the order the WPA lists them.
    /// Must not be empty nor repeat a queue.
    pub queues: Vec<QueueUri>,
    pub credentials: Credentials,
    /// `None`: the provider kind's default from [`PollSettings`].
    pub poll_interval: Option<Duration>,
    /// Used to decide which backlog changes are worth a wakeup. Must be > 0.
    pub target_messages_per_worker: u64,
}

/// The latest knowledge about a subscriber's queue.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueueState {
    /// The last successful poll's metrics (kept while failing).
    pub metrics: Option<QueueMetrics>,
    /// Workers are idle (provider verdict or no backlog over the idle window). Always
    /// false while the queue is failing.
    pub idle: bool,
    /// The last poll failed: `metrics` are old (or absent).
    pub stale: bool,
    /// Why the last poll failed.
    pub error: Option<QueueError>,
    pub last_success: Option<jiff::Timestamp>,
    pub consecutive_failures: u32,
}

impl QueueState {
    /// The backlog of the last good sample (0 before one).
    pub fn backlog(&self) -> u64 {
        self.metrics.as_ref().map_or(0, QueueMetrics::backlog)
    }
}

/// Hook for poll latency and errors (e.g. Prometheus). Called from the poll loops after
/// every poll; keep it quick and non-blocking. `queue` is the redacted URI.
pub trait PollObserver: Send + Sync + 'static {
    fn observe(
        &self,
        kind: ProviderKind,
        queue: &str,
        duration: Duration,
        result: Result<(), &QueueError>,
    );
}
