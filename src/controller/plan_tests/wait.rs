//! Plans of WPAs with `maxWaitSeconds`: practo's decision while learning (and the status
//! says so), the wait rule once learned, and the Events for what the owner must fix.

use serde_json::json;

use super::super::observed::WaitObserved;
use super::super::plan::WORKERS_RECHECK;
use super::super::plan_wait::{WAIT_TARGET, reasons};
use super::*;
use crate::scaler::Reason;
use crate::scaler::wait::learn::Learned;
use crate::scaler::wait::{WaitModel, WaitState, WaitTuning, size};

fn model(arrivals: f64) -> WaitModel {
    WaitModel {
        arrivals_short: arrivals,
        arrivals_long: arrivals,
        task_seconds: 5.0,
        slots: 1,
        startup_seconds: 10.0,
    }
}

fn learned(model: Option<WaitModel>) -> Learned {
    Learned {
        missing: if model.is_some() {
            Vec::new()
        } else {
            vec!["task time: 3 of 20 task starts seen".to_string()]
        },
        model,
        startup_seconds: 10.0,
        startup_measured: true,
    }
}

fn wait_world(
    wpa: &WorkerPodAutoScaler,
    replicas: i32,
    visible: u64,
    held: u64,
    model: Option<WaitModel>,
) -> World {
    let state = WaitState {
        waiting: visible,
        held,
        running: u64::try_from(replicas).unwrap_or(0),
        ready_pods: u32::try_from(replicas).unwrap_or(0),
        starting: Vec::new(),
    };
    let max_wait = Duration::from_secs(30);
    World {
        wait: Some(WaitObserved {
            max_wait,
            sizing: model.map(|m| size(&m, &state, max_wait, &WaitTuning::default())),
            learned: learned(model),
            state,
            busy_pods: u32::try_from(replicas).unwrap_or(0),
        }),
        ..world(wpa, replicas, fresh(visible, held, false))
    }
}

fn max_wait_wpa(max: i32) -> WorkerPodAutoScaler {
    wpa(json!({"maxWaitSeconds": 30, "maxReplicas": max, "targetMessagesPerWorker": 10}))
}

#[test]
fn while_learning_practos_rule_decides_and_the_status_says_so() {
    let wpa = max_wait_wpa(20);
    let plan = plan_for(
        &wpa,
        &observed(Ok(wait_world(&wpa, 0, 40, 0, None)), History::default()),
    );
    // ceil(40 / 10) workers, practo's from zero.
    let change = plan.scale.as_ref().expect("scale");
    assert_eq!((change.to, change.reason), (4, Reason::ScaleUpFromZero));
    let wait = condition(&plan, WAIT_TARGET).expect("WaitTarget");
    assert_eq!(
        (wait.status.as_str(), wait.reason.as_str()),
        ("Unknown", reasons::LEARNING)
    );
    assert!(
        wait.message.contains("task starts seen"),
        "{}",
        wait.message
    );
    let status = plan
        .status
        .as_ref()
        .and_then(|s| s.wait.as_ref())
        .expect("status.wait");
    assert_eq!(status.mode, "Learning");
    assert!(
        plan.events
            .iter()
            .all(|e| e.reason != reasons::MAX_REPLICAS_TOO_LOW)
    );
}

#[test]
fn once_learned_the_wait_rule_sizes_and_predicts() {
    let wpa = max_wait_wpa(40);
    // 100 tasks of 5 s waiting, none running: 22 pods start them all within 28 s.
    let plan = plan_for(
        &wpa,
        &observed(
            Ok(wait_world(&wpa, 0, 100, 0, Some(model(0.0)))),
            History::default(),
        ),
    );
    let change = plan.scale.as_ref().expect("scale");
    assert_eq!((change.to, change.reason), (22, Reason::ScaleUpForWait));
    let wait = condition(&plan, WAIT_TARGET).expect("WaitTarget");
    assert_eq!(
        (wait.status.as_str(), wait.reason.as_str()),
        ("True", reasons::WITHIN_TARGET)
    );
    let status = plan
        .status
        .as_ref()
        .and_then(|s| s.wait.as_ref())
        .expect("status.wait");
    assert_eq!(status.mode, "MaxWait");
    assert_eq!(status.needed_replicas, Some(22));
    assert_eq!(status.throughput_per_worker, Some(0.2));
    assert!(
        status.predicted_wait_seconds.is_some_and(|w| w <= 30),
        "{status:?}"
    );
    let gauges = plan
        .gauges
        .as_ref()
        .and_then(|g| g.wait)
        .expect("wait gauges");
    assert_eq!(gauges.needed_replicas, 22.0);
    assert!(plan.requeue <= WORKERS_RECHECK);
}

#[test]
fn max_replicas_too_low_says_what_would_meet_the_target_once() {
    let wpa = max_wait_wpa(10);
    let plan = plan_for(
        &wpa,
        &observed(
            Ok(wait_world(&wpa, 0, 100, 0, Some(model(0.0)))),
            History::default(),
        ),
    );
    assert_eq!(plan.scale.as_ref().map(|c| c.to), Some(10));
    let wait = condition(&plan, WAIT_TARGET).expect("WaitTarget");
    assert_eq!(
        (wait.status.as_str(), wait.reason.as_str()),
        ("False", reasons::MAX_REPLICAS_TOO_LOW)
    );
    let event = plan
        .events
        .iter()
        .find(|e| e.reason == reasons::MAX_REPLICAS_TOO_LOW)
        .expect("an Event");
    assert!(
        event.note.contains("A maxReplicas of 22 would meet it"),
        "{}",
        event.note
    );
    // The next plan, built on that status, does not send it again.
    let mut again = observed(
        Ok(wait_world(&wpa, 10, 60, 0, Some(model(0.0)))),
        History::default(),
    );
    again.own_status = plan.status.clone();
    let next = plan_for(&wpa, &again);
    assert!(
        next.events
            .iter()
            .all(|e| e.reason != reasons::MAX_REPLICAS_TOO_LOW)
    );
}

#[test]
fn prefetched_tasks_that_no_new_pod_can_take_are_named_with_the_remedy() {
    let wpa = max_wait_wpa(20);
    // Issue 21's case: 4 busy pods hold 14 tasks of about 22 s, nothing waits in the queue:
    // they wait about 88 s whatever the count.
    let slow = WaitModel {
        task_seconds: 22.0,
        ..model(0.05)
    };
    let plan = plan_for(
        &wpa,
        &observed(
            Ok(wait_world(&wpa, 4, 0, 14, Some(slow))),
            History::default(),
        ),
    );
    let wait = condition(&plan, WAIT_TARGET).expect("WaitTarget");
    assert_eq!(
        wait.reason,
        reasons::PREFETCHED_TASKS_WAITING,
        "{}",
        wait.message
    );
    let event = plan
        .events
        .iter()
        .find(|e| e.reason == reasons::PREFETCHED_TASKS_WAITING)
        .expect("an Event");
    assert!(
        event.note.contains("--prefetch-multiplier=1"),
        "{}",
        event.note
    );
    let status = plan
        .status
        .as_ref()
        .and_then(|s| s.wait.as_ref())
        .expect("status.wait");
    assert_eq!(status.held_tasks, 14);
    assert!(
        status.predicted_wait_seconds.is_some_and(|w| w > 60),
        "{status:?}"
    );
}
