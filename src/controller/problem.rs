//! A problem with a WPA that its owner must fix (bad spec, missing target or Secret):
//! reported in its status and as an Event, and retried at the resync period, not quickly.

/// Condition reasons of the problems a reconcile can report.
pub const INVALID_SPEC: &str = "InvalidSpec";
pub const INVALID_QUEUE_URI: &str = "InvalidQueueURI";
pub const QUEUE_SERVICE_DISABLED: &str = "QueueServiceDisabled";
pub const INVALID_QUEUE_CONFIG: &str = "InvalidQueueConfig";
pub const TARGET_NOT_FOUND: &str = "TargetNotFound";
pub const INVALID_SCALE_TARGET: &str = "InvalidScaleTarget";
pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
pub const SECRET_UNREADABLE: &str = "SecretUnreadable";
pub const SECRET_KEY_MISSING: &str = "SecretKeyMissing";

/// Every problem reason, for tests that check each one is planned for.
#[cfg(test)]
pub const ALL_REASONS: [&str; 9] = [
    INVALID_SPEC,
    INVALID_QUEUE_URI,
    QUEUE_SERVICE_DISABLED,
    INVALID_QUEUE_CONFIG,
    TARGET_NOT_FOUND,
    INVALID_SCALE_TARGET,
    SECRET_NOT_FOUND,
    SECRET_UNREADABLE,
    SECRET_KEY_MISSING,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

impl Problem {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}
