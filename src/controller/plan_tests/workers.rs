//! Plans with a worker signal: deletion costs before a scale-down, the busy pods it keeps,
//! the status's worker figures, and decisions held while the signal cannot be trusted.

use serde_json::json;

use super::super::observed::{CELERY_EVENTS, WorkersObserved};
use super::super::plan::{PROTECTED_BUSY_PODS, PodCost, WORKERS_RECHECK};
use super::super::pods::{BUSY_COST, ClassifiedPod, IDLE_COST, PodView, PodWork};
use super::*;
use crate::scaler::WorkerActivity;

fn pod(name: &str, cost: Option<i64>, work: PodWork) -> ClassifiedPod {
    ClassifiedPod {
        pod: PodView {
            draining: None,
            grace_seconds: None,
            name: name.to_string(),
            ip: None,
            ordinal: None,
            deletion_cost: cost.map(|c| c.to_string()),
        },
        work,
    }
}

/// Four pods: two busy (one task each), two idle; nothing ran recently on the idle ones.
fn two_busy_of_four(costs: [Option<i64>; 4]) -> WorkersObserved {
    WorkersObserved {
        activity: Some(WorkerActivity {
            busy: 2,
            idle: 2,
            unknown: 0,
            active_tasks: 2,
            recently_busy: true,
            keep: 2,
        }),
        pods: vec![
            pod("worker-a", costs[0], PodWork::Busy { tasks: 1 }),
            pod("worker-b", costs[1], PodWork::Idle),
            pod("worker-c", costs[2], PodWork::Busy { tasks: 1 }),
            pod("worker-d", costs[3], PodWork::Idle),
        ],
        message: None,
        recheck: true,
        warming_up: false,
        source: CELERY_EVENTS.into(),
        target_workers: Vec::new(),
    }
}

fn with_workers(
    wpa: &WorkerPodAutoScaler,
    replicas: i32,
    queue: Option<QueueState>,
    workers: WorkersObserved,
) -> World {
    World {
        workers: Some(workers),
        ..world(wpa, replicas, queue)
    }
}

#[test]
fn a_scale_down_sets_costs_first_and_keeps_the_busy_pods() {
    let wpa = wpa(json!({}));
    let world = with_workers(&wpa, 4, fresh(0, 0, true), two_busy_of_four([None; 4]));
    let plan = plan_for(&wpa, &observed(Ok(world), scaled_ago(3600)));
    let change = plan.scale.as_ref().expect("scale");
    assert_eq!((change.from, change.to), (4, 2));
    assert_eq!(
        plan.pod_costs,
        vec![
            PodCost {
                pod: "worker-a".into(),
                cost: BUSY_COST
            },
            PodCost {
                pod: "worker-b".into(),
                cost: IDLE_COST
            },
            PodCost {
                pod: "worker-c".into(),
                cost: BUSY_COST
            },
            PodCost {
                pod: "worker-d".into(),
                cost: IDLE_COST
            },
        ]
    );
    let protected = plan
        .events
        .iter()
        .find(|e| e.reason == PROTECTED_BUSY_PODS)
        .expect("an Event names the kept pods");
    assert!(
        protected
            .note
            .ends_with("busy pods kept (2): worker-a, worker-c"),
        "{}",
        protected.note
    );
    let status = plan.status.as_ref().expect("status");
    assert_eq!(
        status.last_decision_reason.as_deref(),
        Some("HoldBusyWorkers")
    );
    let workers = status.workers.as_ref().expect("worker figures");
    assert_eq!(
        (
            workers.source.as_str(),
            workers.busy,
            workers.idle,
            workers.unknown,
            workers.active_tasks
        ),
        (CELERY_EVENTS, 2, 2, 0, 2)
    );
    assert_eq!(workers.message, None);
    assert_eq!(
        plan.gauges.as_ref().and_then(|g| g.workers).map(|w| w.busy),
        Some(2)
    );
}

#[test]
fn costs_already_in_place_are_not_written_again() {
    let wpa = wpa(json!({}));
    let costs = [
        Some(BUSY_COST),
        Some(IDLE_COST),
        Some(BUSY_COST),
        Some(IDLE_COST),
    ];
    let world = with_workers(&wpa, 4, fresh(0, 0, true), two_busy_of_four(costs));
    let plan = plan_for(&wpa, &observed(Ok(world), scaled_ago(3600)));
    assert!(plan.scale.is_some());
    assert!(plan.pod_costs.is_empty(), "{:?}", plan.pod_costs);
}

#[test]
fn no_costs_without_a_scale_down() {
    let wpa = wpa(json!({}));
    // 18 waiting + the 2 running tasks the broker does not see need 4 of the 4: nothing
    // removed, nothing ranked.
    let world = with_workers(&wpa, 4, fresh(18, 0, false), two_busy_of_four([None; 4]));
    let plan = plan_for(&wpa, &observed(Ok(world), scaled_ago(3600)));
    assert!(plan.scale.is_none());
    assert!(plan.pod_costs.is_empty());
    assert!(plan.events.iter().all(|e| e.reason != PROTECTED_BUSY_PODS));
    // Up: the new pods have no workers yet; the others are not ranked either.
    let world = with_workers(&wpa, 4, fresh(40, 0, false), two_busy_of_four([None; 4]));
    let plan = plan_for(&wpa, &observed(Ok(world), scaled_ago(3600)));
    assert!(plan.scale.as_ref().is_some_and(|c| c.is_up()));
    assert!(plan.pod_costs.is_empty());
}

#[test]
fn every_pod_busy_holds_the_replicas() {
    let wpa = wpa(json!({}));
    let mut workers = two_busy_of_four([None; 4]);
    workers.activity = Some(WorkerActivity {
        busy: 4,
        idle: 0,
        active_tasks: 4,
        keep: 4,
        ..workers.activity.unwrap_or_default()
    });
    let world = with_workers(&wpa, 4, fresh(0, 0, true), workers);
    let plan = plan_for(&wpa, &observed(Ok(world), scaled_ago(3600)));
    assert!(plan.scale.is_none());
    let status = plan.status.as_ref().expect("status");
    assert_eq!(
        status.last_decision_reason.as_deref(),
        Some("HoldBusyWorkers")
    );
    let limited = condition(&plan, "ScalingLimited").expect("condition");
    assert_eq!(
        (limited.status.as_str(), limited.reason.as_str()),
        ("True", "HoldBusyWorkers")
    );
}

#[test]
fn a_signal_that_cannot_be_trusted_holds_and_says_why() {
    let wpa = wpa(json!({}));
    let held = WorkersObserved {
        activity: Some(WorkerActivity {
            unknown: 3,
            recently_busy: true,
            keep: 3,
            ..WorkerActivity::default()
        }),
        pods: vec![
            pod("worker-a", None, PodWork::Unknown),
            pod("worker-b", None, PodWork::Unknown),
            pod("worker-c", None, PodWork::Unknown),
        ],
        message: Some("cannot read the workers' events (refused): scale-downs are held".into()),
        recheck: true,
        warming_up: false,
        source: CELERY_EVENTS.into(),
        target_workers: Vec::new(),
    };
    let world = with_workers(&wpa, 3, fresh(0, 0, true), held);
    let plan = plan_for(&wpa, &observed(Ok(world), scaled_ago(3600)));
    assert!(plan.scale.is_none());
    assert_eq!(plan.requeue, WORKERS_RECHECK);
    assert!(plan.pod_costs.is_empty());
    let workers = plan
        .status
        .as_ref()
        .and_then(|s| s.workers.as_ref())
        .expect("workers");
    assert_eq!(workers.unknown, 3);
    assert!(
        workers
            .message
            .as_deref()
            .is_some_and(|m| m.contains("refused"))
    );
}

#[test]
fn without_a_signal_there_is_no_worker_status() {
    let wpa = wpa(json!({}));
    let plan = plan_for(
        &wpa,
        &observed(Ok(world(&wpa, 4, fresh(0, 0, true))), scaled_ago(3600)),
    );
    let change = plan.scale.as_ref().expect("scale");
    assert_eq!(change.to, 0, "practo's idle scale-down");
    assert!(plan.pod_costs.is_empty());
    assert_eq!(plan.status.as_ref().and_then(|s| s.workers.as_ref()), None);
}

#[test]
fn pods_that_cannot_be_listed_give_practos_decision_and_say_why() {
    let wpa = wpa(json!({}));
    let unreadable = WorkersObserved {
        activity: None,
        pods: Vec::new(),
        message: Some("cannot list pods (403 Forbidden); grant pods get/list/watch/patch".into()),
        recheck: false,
        warming_up: false,
        source: CELERY_EVENTS.into(),
        target_workers: Vec::new(),
    };
    let world = with_workers(&wpa, 4, fresh(0, 0, true), unreadable);
    let plan = plan_for(&wpa, &observed(Ok(world), scaled_ago(3600)));
    assert_eq!(plan.scale.as_ref().map(|c| c.to), Some(0));
}

#[test]
fn while_the_first_reports_are_awaited_only_a_scale_writes_a_status() {
    let wpa = wpa(json!({}));
    let warming = |workers: &mut WorkersObserved| {
        workers.activity = Some(WorkerActivity {
            unknown: 4,
            recently_busy: true,
            keep: 4,
            ..WorkerActivity::default()
        });
        workers.warming_up = true;
        workers.message = Some("waiting for the workers' first heartbeats".into());
    };
    let mut workers = two_busy_of_four([None; 4]);
    warming(&mut workers);
    let world = with_workers(&wpa, 4, fresh(0, 0, true), workers.clone());
    let held = plan_for(&wpa, &observed(Ok(world), scaled_ago(3600)));
    assert!(held.scale.is_none(), "no scale-down before the reports");
    assert_eq!(held.status, None);
    assert_eq!(held.requeue, WORKERS_RECHECK);
    // A backlog is acted on at once, and that scale is recorded in the status.
    let world = with_workers(&wpa, 4, fresh(100, 0, false), workers);
    let up = plan_for(&wpa, &observed(Ok(world), scaled_ago(3600)));
    assert_eq!(up.scale.as_ref().map(|c| c.to), Some(10));
    assert!(up.status.is_some());
    // A queue that cannot be read while the reports are awaited: its status is written
    // once they are in, seconds later, not at the resync.
    let mut workers = two_busy_of_four([None; 4]);
    warming(&mut workers);
    let world = with_workers(&wpa, 4, failing(), workers);
    let failed = plan_for(&wpa, &observed(Ok(world), scaled_ago(3600)));
    assert!(failed.scale.is_none() && failed.status.is_none());
    assert_eq!(failed.requeue, WORKERS_RECHECK);
}
