//! Table tests of the pure plan: every branch a reconcile can take, without brokers or HTTP.

mod details;
mod drain;
mod table;
mod wait;
mod workers;

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Resource;

use super::drain::DrainSettings;
use super::observed::{Observed, World};
use super::plan::{Plan, PlanSettings, plan};
use super::problem::Problem;
use super::target::{ResourceVersion, TargetRef, TargetState};
use crate::crd::{PAUSED_ANNOTATION, WorkerPodAutoScaler};
use crate::queue::registry::QueueState;
use crate::queue::{QueueError, QueueMetrics};
use crate::scaler::{History, Policy, ScalerSettings};

const RESYNC: Duration = Duration::from_secs(600);
const QUEUE: &str = "redis://127.0.0.1:6379/0/jobs";

fn now() -> Timestamp {
    "2026-12-03T10:00:00Z".parse().expect("timestamp")
}

fn settings() -> PlanSettings {
    PlanSettings {
        scaler: ScalerSettings::default(),
        dry_run: false,
        resync: RESYNC,
        drain: DrainSettings {
            enabled: true,
            timeout: None,
        },
    }
}

/// min 0, max 10, 5 messages per worker, on Deployment `worker`; `extra` is merged into the
/// spec.
fn wpa(extra: serde_json::Value) -> WorkerPodAutoScaler {
    let mut spec = serde_json::json!({
        "minReplicas": 0,
        "maxReplicas": 10,
        "targetMessagesPerWorker": 5,
        "queueURI": QUEUE,
        "deploymentName": "worker",
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    let mut wpa = WorkerPodAutoScaler::new("w", serde_json::from_value(spec).expect("spec"));
    wpa.meta_mut().namespace = Some("ns".to_string());
    wpa.meta_mut().generation = Some(1);
    wpa
}

fn paused(mut wpa: WorkerPodAutoScaler) -> WorkerPodAutoScaler {
    wpa.meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(PAUSED_ANNOTATION.to_string(), "true".to_string());
    wpa
}

fn metrics(visible: u64, in_flight: u64) -> QueueMetrics {
    QueueMetrics {
        missing: Vec::new(),
        visible,
        in_flight: Some(in_flight),
        delayed: None,
        sent_per_minute: None,
        consumers: None,
        idle: None,
        partial: None,
        sampled_at: now(),
        workers: None,
    }
}

fn fresh(visible: u64, in_flight: u64, idle: bool) -> Option<QueueState> {
    Some(QueueState {
        metrics: Some(metrics(visible, in_flight)),
        idle,
        last_success: Some(now()),
        ..QueueState::default()
    })
}

fn partial(visible: u64) -> Option<QueueState> {
    let mut state = fresh(visible, 0, false)?;
    if let Some(m) = state.metrics.as_mut() {
        m.partial = Some("unacknowledged count unknown: management API unreachable".to_string());
    }
    Some(state)
}

/// A queue nobody has declared yet, read as empty and idle.
fn not_declared() -> Option<QueueState> {
    let mut metrics = QueueMetrics::missing_queue(QUEUE.to_string());
    metrics.sampled_at = now();
    Some(QueueState {
        metrics: Some(metrics),
        idle: true,
        last_success: Some(now()),
        ..QueueState::default()
    })
}

fn unreachable() -> QueueError {
    QueueError::Unavailable {
        queue: QUEUE.to_string(),
        detail: "connection refused".to_string(),
    }
}

/// Never polled successfully; the last poll failed.
fn failing() -> Option<QueueState> {
    Some(QueueState {
        stale: true,
        error: Some(unreachable()),
        consecutive_failures: 3,
        ..QueueState::default()
    })
}

/// Polled once, failing since: old metrics kept.
fn stale(visible: u64) -> Option<QueueState> {
    Some(QueueState {
        metrics: Some(metrics(visible, 0)),
        stale: true,
        error: Some(unreachable()),
        consecutive_failures: 1,
        ..QueueState::default()
    })
}

fn world(wpa: &WorkerPodAutoScaler, replicas: i32, queue: Option<QueueState>) -> World {
    World {
        policy: Policy::from_spec(&wpa.spec, &ScalerSettings::default()).expect("valid spec"),
        target: TargetRef::Deployment("worker".to_string()),
        queue_redacted: QUEUE.to_string(),
        target_state: TargetState {
            replicas,
            available: replicas,
            version: Some(ResourceVersion::Revision(7)),
        },
        queue,
        per_queue: Vec::new(),
        workers: None,
        wait: None,
        drain: None,
    }
}

fn observed(world: Result<World, Problem>, history: History) -> Observed {
    Observed {
        own_status: None,
        now: now(),
        history,
        world,
    }
}

/// A history whose last scale was `seconds_ago`.
fn scaled_ago(seconds_ago: i64) -> History {
    History::with_last_scale_time(Some(now() - jiff::SignedDuration::from_secs(seconds_ago)))
}

fn condition<'a>(plan: &'a Plan, type_: &str) -> Option<&'a Condition> {
    plan.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
}

fn plan_for(wpa: &WorkerPodAutoScaler, observed: &Observed) -> Plan {
    plan(wpa, observed, &settings())
}
