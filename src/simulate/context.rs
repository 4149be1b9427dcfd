//! What every simulated policy is built from, and the errors building one can give.

use jiff::Timestamp;

use crate::crd::WorkerPodAutoScaler;

use super::cluster::ClusterConfig;
use crate::scaler::{ScalerSettings, SpecError};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PolicyError {
    #[error(
        "--policies: `{item}`: {problem} (known: practo:<targetMessagesPerWorker>, keda:<target>, maxwait:<seconds>, maxwait-backlog:<seconds>, bound; a target may be a range A..B)"
    )]
    Parse { item: String, problem: String },
    #[error("--policies: no policy given")]
    Empty,
    #[error("policy {name}: {source}")]
    Spec {
        name: String,
        #[source]
        source: SpecError,
    },
}

/// What policies are built from: the WPA and the controller's settings.
#[derive(Debug, Clone)]
pub struct PolicyContext<'a> {
    pub wpa: &'a WorkerPodAutoScaler,
    /// The controller's flags (`--scale-down-delay-after-last-scale-activity`, default
    /// maxDisruption).
    pub settings: ScalerSettings,
    /// The controller's `--idle-window`, seconds.
    pub idle_window: f64,
    /// Seconds between two queue polls: controller-like policies decide after each.
    pub poll: f64,
    /// Whether the workers send heartbeats (the controller's worker signal).
    pub heartbeats: bool,
    /// The wait target of the comparison, seconds.
    pub max_wait: f64,
    /// The simulated cluster's true parameters (start-up, slots, prefetch, ack). A policy
    /// that stands for a controller must learn these from the view; only an oracle variant,
    /// written to separate learning errors from sizing errors, may read them here.
    pub cluster: &'a ClusterConfig,
}

/// Simulation seconds as the instant the scaler is given: the Unix epoch plus `now`, in
/// whole milliseconds (the engine's History compares instants).
pub fn instant(now: f64) -> Timestamp {
    let millis = (now * 1000.0).round().clamp(0.0, 1e15) as i64;
    Timestamp::from_millisecond(millis).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_whole_milliseconds_from_the_epoch() {
        assert_eq!(instant(1.2344).as_millisecond(), 1234);
        assert_eq!(instant(0.0), Timestamp::UNIX_EPOCH);
    }
}
