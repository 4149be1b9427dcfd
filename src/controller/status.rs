//! Building the WPA status: practo's fields plus conditions. Pure, so that "did anything
//! change?" is a plain comparison and steady state costs no API writes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::WorkerPodAutoScalerStatus;

pub const READY: &str = "Ready";
pub const METRICS_AVAILABLE: &str = "MetricsAvailable";
pub const ABLE_TO_SCALE: &str = "AbleToScale";
pub const SCALING_LIMITED: &str = "ScalingLimited";

/// One condition's wanted state; the transition time is filled in by [`merge_conditions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionState {
    pub type_: &'static str,
    pub status: Status,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::Unknown => "Unknown",
            Status::False => "False",
        }
    }
}

impl ConditionState {
    pub fn new(
        type_: &'static str,
        status: Status,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// The conditions to write: a condition whose status did not change keeps its
/// lastTransitionTime (and so does not cause a write by itself).
pub fn merge_conditions(
    previous: &[Condition],
    wanted: &[ConditionState],
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> Vec<Condition> {
    wanted
        .iter()
        .map(|w| {
            let old = previous.iter().find(|c| c.type_ == w.type_);
            let last_transition_time = match old {
                Some(c) if c.status == w.status.as_str() => c.last_transition_time.clone(),
                _ => Time(now),
            };
            Condition {
                type_: w.type_.to_string(),
                status: w.status.as_str().to_string(),
                reason: w.reason.clone(),
                // The API caps condition messages at 32 KiB; ours are short, but errors from
                // brokers are not under our control.
                message: truncate(&w.message, 1024),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

fn truncate(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_string();
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// True when writing `new` would change what the API server holds.
pub fn status_changed(
    old: Option<&WorkerPodAutoScalerStatus>,
    new: &WorkerPodAutoScalerStatus,
) -> bool {
    old != Some(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(seconds).expect("valid time")
    }

    #[test]
    fn unchanged_condition_keeps_its_transition_time() {
        let wanted = [ConditionState::new(READY, Status::True, "Scaling", "ok")];
        let first = merge_conditions(&[], &wanted, Some(1), at(100));
        assert_eq!(first[0].last_transition_time, Time(at(100)));
        let second = merge_conditions(&first, &wanted, Some(1), at(200));
        assert_eq!(second, first, "nothing changed, nothing to write");
        let failed = [ConditionState::new(
            READY,
            Status::False,
            "PollFailed",
            "redis down",
        )];
        let third = merge_conditions(&second, &failed, Some(1), at(300));
        assert_eq!(third[0].last_transition_time, Time(at(300)));
        assert_eq!(third[0].status, "False");
        assert_eq!(third[0].reason, "PollFailed");
    }

    #[test]
    fn a_new_message_alone_keeps_the_transition_time() {
        let a = merge_conditions(
            &[],
            &[ConditionState::new(READY, Status::False, "PollFailed", "a")],
            None,
            at(1),
        );
        let b = merge_conditions(
            &a,
            &[ConditionState::new(READY, Status::False, "PollFailed", "b")],
            None,
            at(2),
        );
        assert_eq!(b[0].last_transition_time, Time(at(1)));
        assert_eq!(b[0].message, "b");
    }

    #[test]
    fn long_messages_are_truncated_on_a_char_boundary() {
        let long = "é".repeat(1000);
        let merged = merge_conditions(
            &[],
            &[ConditionState::new(READY, Status::False, "X", long)],
            None,
            at(1),
        );
        assert!(merged[0].message.len() <= 1024 + "…".len());
        assert!(merged[0].message.ends_with('…'));
    }

    #[test]
    fn status_comparison() {
        let status = WorkerPodAutoScalerStatus {
            current_replicas: 2,
            ..Default::default()
        };
        assert!(status_changed(None, &status));
        assert!(!status_changed(Some(&status.clone()), &status));
        let other = WorkerPodAutoScalerStatus {
            current_replicas: 3,
            ..Default::default()
        };
        assert!(status_changed(Some(&other), &status));
    }
}
