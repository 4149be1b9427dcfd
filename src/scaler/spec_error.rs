//! Why a spec is refused, and the bounds the refusals name. Shared by the policy and the
//! `maxDisruption` parser, so that neither imports the other for it.

/// Longest stabilization window the schema allows (seconds).
pub const MAX_STABILIZATION_WINDOW_SECONDS: i32 = 3600;
/// Longest policy period the schema allows (seconds).
pub const MAX_PERIOD_SECONDS: i32 = 1800;

/// A spec the scaler refuses. Each message names the offending field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("spec.minReplicas must be >= 0, got {0}")]
    MinReplicas(i32),
    #[error("spec.maxReplicas must be >= 1, got {0}")]
    MaxReplicas(i32),
    #[error("spec.minReplicas ({min}) must not exceed spec.maxReplicas ({max})")]
    MinAboveMax { min: i32, max: i32 },
    #[error("spec.targetMessagesPerWorker must be >= 1, got {0}")]
    TargetMessagesPerWorker(i32),
    #[error("spec.secondsToProcessOneJob must be a finite number >= 0, got {0}")]
    SecondsToProcessOneJob(f64),
    #[error("maxDisruption {value:?} is invalid: {reason}")]
    MaxDisruption { value: String, reason: &'static str },
    #[error("{field} must be >= 1, got {value}")]
    PolicyValue { field: String, value: i32 },
    #[error("{field} must be from 1 to {MAX_PERIOD_SECONDS}, got {value}")]
    PeriodSeconds { field: String, value: i32 },
    #[error("{field} must be from 0 to {MAX_STABILIZATION_WINDOW_SECONDS}, got {value}")]
    StabilizationWindowSeconds { field: String, value: i32 },
    #[error("spec.maxWaitSeconds must be from 1 to {MAX_WAIT_SECONDS}, got {0}")]
    MaxWaitSeconds(i32),
}

/// The largest `spec.maxWaitSeconds` (a day).
pub const MAX_WAIT_SECONDS: i32 = 86_400;
