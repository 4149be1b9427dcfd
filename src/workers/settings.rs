//! How the worker-event listeners connect, check and retry.

use std::time::Duration;

/// Timing of the listeners.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenSettings {
    /// Limit for connecting and subscribing, and for a Redis PING to be answered.
    pub connect_timeout: Duration,
    /// How often an idle Redis pub/sub connection is checked with PING. (AMQP connections
    /// have their own heartbeat.)
    pub ping_interval: Duration,
    /// First delay before reconnecting; doubles (with jitter) up to `max_backoff` while
    /// attempts keep failing.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for ListenSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(15),
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}
