//! The order in which a ReplicaSet removes Pods on a scale-down, after the real controller's
//! `ActivePodsWithRanks.Less` (kubernetes pkg/controller/controller_utils.go), which
//! `getPodsToDelete` sorts by before taking the first ones:
//!
//! 1. unassigned (no nodeName) before assigned;
//! 2. phase Pending before Unknown before Running;
//! 3. not ready before ready;
//! 4. lower `controller.kubernetes.io/pod-deletion-cost` first (absent or invalid: 0);
//! 5. (Pods on nodes with more replicas first: skipped, every simulated Pod shares a node);
//! 6. when both are ready, the one ready for less time first;
//! 7. more container restarts first;
//! 8. newer creationTimestamp first.
//!
//! Timestamps are compared exactly, not on the logarithmic scale of the
//! `LogarithmicScaleDown` feature. The creation order the double remembers breaks the ties
//! left by second-precision timestamps, newest first, as a finer creation time would.

use std::cmp::Ordering;

use serde_json::Value;

pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// The annotation's value as the ReplicaSet controller reads it: an int32, else 0.
pub fn parse_cost(annotation: Option<&str>) -> i32 {
    annotation.and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The facts about a Pod that the ranking looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rank {
    assigned: bool,
    phase: u8,
    ready: bool,
    cost: i32,
    ready_since: Option<jiff::Timestamp>,
    restarts: i64,
    created: Option<jiff::Timestamp>,
    seq: u64,
}

fn timestamp(value: Option<&Value>) -> Option<jiff::Timestamp> {
    value.and_then(Value::as_str).and_then(|s| s.parse().ok())
}

/// The Pod's `Ready` condition, if it has one.
fn ready_condition(pod: &Value) -> Option<&Value> {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
}

/// Whether the Pod's `Ready` condition is `True`.
pub fn is_ready(pod: &Value) -> bool {
    ready_condition(pod).is_some_and(|c| c["status"] == "True")
}

impl Rank {
    /// Reads the ranking facts from a Pod object; `seq` is its creation order.
    pub fn of(pod: &Value, seq: u64) -> Self {
        let ready_condition = ready_condition(pod);
        let ready = is_ready(pod);
        let phase = match pod.pointer("/status/phase").and_then(Value::as_str) {
            Some("Unknown") => 1,
            Some("Running") => 2,
            // Pending, and anything the real map lacks, ranks lowest.
            _ => 0,
        };
        let restarts = pod
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .map_or(0, |statuses| {
                statuses
                    .iter()
                    .filter_map(|s| s["restartCount"].as_i64())
                    .max()
                    .unwrap_or(0)
            });
        Rank {
            assigned: pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty()),
            phase,
            ready,
            cost: parse_cost(
                pod.pointer("/metadata/annotations")
                    .and_then(|a| a.get(DELETION_COST))
                    .and_then(Value::as_str),
            ),
            ready_since: ready_condition.and_then(|c| timestamp(c.get("lastTransitionTime"))),
            restarts,
            created: timestamp(pod.pointer("/metadata/creationTimestamp")),
            seq,
        }
    }
}

/// `Less` when `a` is to be deleted before `b`.
pub fn delete_first(a: &Rank, b: &Rank) -> Ordering {
    a.assigned
        .cmp(&b.assigned)
        .then(a.phase.cmp(&b.phase))
        .then(a.ready.cmp(&b.ready))
        .then(a.cost.cmp(&b.cost))
        .then_with(|| {
            if a.ready && b.ready {
                // Ready for less time (a later or missing timestamp) first.
                newer_first(a.ready_since, b.ready_since)
            } else {
                Ordering::Equal
            }
        })
        .then(b.restarts.cmp(&a.restarts))
        .then(newer_first(a.created, b.created))
        .then(b.seq.cmp(&a.seq))
}

/// A missing time first, then later times first.
fn newer_first(a: Option<jiff::Timestamp>, b: Option<jiff::Timestamp>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => b.cmp(&a),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(cost: Option<&str>, ready: bool, created: &str) -> Value {
        let mut pod = json!({
            "metadata": {"creationTimestamp": created, "annotations": {}},
            "spec": {"nodeName": "n"},
            "status": {"phase": "Running", "conditions": [{
                "type": "Ready",
                "status": if ready { "True" } else { "False" },
                "lastTransitionTime": created,
            }]},
        });
        if let Some(cost) = cost {
            pod["metadata"]["annotations"][DELETION_COST] = Value::from(cost);
        }
        pod
    }

    /// Indices of `pods` in deletion order.
    fn order(pods: &[Value]) -> Vec<usize> {
        let mut ranked: Vec<(usize, Rank)> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| (i, Rank::of(p, i as u64)))
            .collect();
        ranked.sort_by(|a, b| delete_first(&a.1, &b.1));
        ranked.into_iter().map(|(i, _)| i).collect()
    }

    const T1: &str = "2024-01-01T00:00:01Z";
    const T2: &str = "2024-01-01T00:00:02Z";

    #[test]
    fn not_ready_goes_before_a_lower_cost_and_an_older_pod() {
        let pods = [pod(Some("-5"), true, T2), pod(Some("100"), false, T1)];
        assert_eq!(order(&pods), vec![1, 0]);
    }

    #[test]
    fn lower_cost_goes_first_and_invalid_or_absent_costs_count_as_zero() {
        let pods = [
            pod(Some("10"), true, T2),
            pod(Some("not-a-number"), true, T2),
            pod(Some("-3"), true, T1),
            pod(None, true, T1),
        ];
        // -3 first; then the two zero-cost pods (invalid, absent), the one ready for less
        // time first; 10 last.
        assert_eq!(order(&pods), vec![2, 1, 3, 0]);
    }

    #[test]
    fn among_equal_costs_the_newest_goes_first_with_creation_order_breaking_ties() {
        let pods = [
            pod(None, true, T1),
            pod(None, true, T2),
            pod(None, true, T2),
        ];
        assert_eq!(order(&pods), vec![2, 1, 0]);
    }

    #[test]
    fn unassigned_and_pending_pods_go_first() {
        let mut unassigned = pod(Some("9"), true, T1);
        unassigned["spec"]["nodeName"] = Value::from("");
        let mut pending = pod(Some("9"), true, T1);
        pending["status"]["phase"] = Value::from("Pending");
        let pods = [pod(None, false, T2), pending, unassigned];
        assert_eq!(order(&pods), vec![2, 1, 0]);
    }
}
