//! The second step of a reconcile, pure: from what was observed, what to do. A scale
//! write, the Events, the status (only when it changes), the gauges, the decision to keep
//! in the history and when to look again. No I/O and no clock: `now` is observed.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use kube::ResourceExt;
use kube::runtime::events::EventType;

use super::drain::{DRAINED_COST, DrainSettings};
use super::metrics::WpaGauges;
use super::observed::{Observed, WorkersObserved, World};
use super::plan_drain::{DRAINING, DrainPlanInput, DrainScale, DrainWrites, plan_drain};
use super::plan_figures::{delay_remaining, queue_status, workers_status};
use super::plan_wait::{WAIT_TARGET, plan_wait};
pub use super::planned_event::PlannedEvent;
use super::pods::PodWork;
use super::problem::Problem;
use super::status::{
    self, ABLE_TO_SCALE, ConditionState, METRICS_AVAILABLE, READY, SCALING_LIMITED, Status,
};
use crate::crd::{
    PAUSED_ANNOTATION, WorkerPodAutoScaler, WorkerPodAutoScalerStatus, WorkersStatus,
};
use crate::queue::registry::QueueState;
use crate::scaler::{self, Decision, History, QueueSnapshot, Reason, ScalerSettings};

/// How soon to look again at a WPA whose first metrics have not arrived (the registry also
/// wakes it when they do).
pub const FIRST_POLL_RECHECK: Duration = Duration::from_secs(2);
/// How soon to look again at a WPA whose change a `behavior` rule is holding back.
pub const BEHAVIOR_RECHECK: Duration = Duration::from_secs(1);
/// How soon to look again while busy workers hold replicas or the worker signal is not
/// usable yet: Celery's heartbeat interval.
pub const WORKERS_RECHECK: Duration = Duration::from_secs(2);

/// How soon to look again while a drain runs: its victims are asked what they hold.
pub const DRAIN_RECHECK: Duration = Duration::from_secs(1);

/// Condition reasons this module sets (besides the problem reasons and the scaler's
/// reasons for a limited decision).
pub mod reasons {
    pub const RECONCILED: &str = "Reconciled";
    pub const METRICS_UNAVAILABLE: &str = "MetricsUnavailable";
    pub const METRICS_FRESH: &str = "MetricsFresh";
    pub const METRICS_PARTIAL: &str = "MetricsPartial";
    pub const QUEUE_NOT_DECLARED: &str = "QueueNotDeclared";
    pub const POLL_FAILED: &str = "PollFailed";
    pub const PAUSED: &str = "Paused";
    pub const DRY_RUN: &str = "DryRun";
    pub const SCALED: &str = "Scaled";
    pub const READY_FOR_NEW_SCALE: &str = "ReadyForNewScale";
    pub const HOLDING_REPLICAS: &str = "HoldingReplicas";
    pub const NO_DECISION: &str = "NoDecision";
    pub const DESIRED_WITHIN_RANGE: &str = "DesiredWithinRange";

    #[cfg(test)]
    pub const ALL: [&str; 13] = [
        RECONCILED,
        METRICS_UNAVAILABLE,
        METRICS_FRESH,
        METRICS_PARTIAL,
        QUEUE_NOT_DECLARED,
        POLL_FAILED,
        PAUSED,
        DRY_RUN,
        SCALED,
        READY_FOR_NEW_SCALE,
        HOLDING_REPLICAS,
        NO_DECISION,
        DESIRED_WITHIN_RANGE,
    ];
}
use reasons::*;

/// The Event reason naming the busy pods a scale-down keeps.
pub const PROTECTED_BUSY_PODS: &str = "ProtectedBusyPods";

/// `lastDecisionReason` when replicas are held for want of metrics.
pub const HOLD_NO_METRICS: &str = "HoldNoMetrics";

/// Controller-wide settings a plan depends on.
#[derive(Debug, Clone)]
pub struct PlanSettings {
    pub scaler: ScalerSettings,
    /// `--dry-run`.
    pub dry_run: bool,
    pub resync: Duration,
    /// `--drain-before-scale-in`, `--drain-timeout`.
    pub drain: DrainSettings,
}

/// What a reconcile does, in order: scale; then record, publish and write status, which all
/// assume the scale succeeded (if it fails, the reconcile reports that and is retried).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Deletion costs to set on the target's pods before the scale-down (busy pods high,
    /// idle pods low), so that the ReplicaSet removes idle pods first.
    pub pod_costs: Vec<PodCost>,
    pub scale: Option<ScaleChange>,
    /// The decision to remember in the history once the scale (if any) is done. `None`
    /// when nothing was decided or the change was not made (paused, dry run).
    pub record: Option<Decision>,
    pub events: Vec<PlannedEvent>,
    /// The new status; `None` when the stored one already says the same.
    pub status: Option<WorkerPodAutoScalerStatus>,
    pub gauges: Option<WpaGauges>,
    pub requeue: Duration,
    /// A problem the owner must fix, for the log.
    pub problem: Option<Problem>,
    /// Drain writes, made before the scale.
    pub drain: DrainWrites,
    /// Pods being drained, where the WPA's workers can be drained (the gauge).
    pub draining: Option<usize>,
}

/// A pod's `pod-deletion-cost` to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCost {
    pub pod: String,
    pub cost: i64,
}

/// A scale write.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleChange {
    pub from: i32,
    pub to: i32,
    pub reason: Reason,
    /// The target, described for messages ("Deployment worker").
    pub target: String,
}

impl ScaleChange {
    pub fn is_up(&self) -> bool {
        self.to > self.from
    }
}

/// Plans one reconcile of `wpa` from what was observed.
pub fn plan(wpa: &WorkerPodAutoScaler, observed: &Observed, settings: &PlanSettings) -> Plan {
    // Build on the newest status: our own last decision when the cache does not show it
    // yet. A status built on the older cached one would replace the unwritten decision and
    // lose what only it says (a scale time, a condition's transition).
    let base = observed.own_status.as_ref().or(wpa.status.as_ref());
    match &observed.world {
        Ok(world) => plan_world(wpa, base, world, &observed.history, observed.now, settings),
        Err(problem) => plan_problem(wpa, base, problem, observed.now, settings),
    }
}

/// A WPA that cannot be scaled: say why, in an Event and its status.
fn plan_problem(
    wpa: &WorkerPodAutoScaler,
    base: Option<&WorkerPodAutoScalerStatus>,
    problem: &Problem,
    now: Timestamp,
    settings: &PlanSettings,
) -> Plan {
    let mut status = base.cloned().unwrap_or_default();
    let conditions = [
        ConditionState::new(
            READY,
            Status::False,
            problem.reason,
            problem.message.clone(),
        ),
        ConditionState::new(
            ABLE_TO_SCALE,
            Status::False,
            problem.reason,
            problem.message.clone(),
        ),
    ];
    status.observed_generation = wpa.meta().generation;
    status.last_decision_reason = Some(problem.reason.to_string());
    status.conditions =
        status::merge_conditions(&status.conditions, &conditions, wpa.meta().generation, now);
    Plan {
        pod_costs: Vec::new(),
        scale: None,
        record: None,
        events: vec![PlannedEvent::new(
            EventType::Warning,
            problem.reason,
            problem.message.clone(),
        )],
        status: changed(base, status),
        gauges: None,
        requeue: settings.resync,
        problem: Some(problem.clone()),
        drain: DrainWrites::default(),
        draining: None,
    }
}

fn plan_world(
    wpa: &WorkerPodAutoScaler,
    base: Option<&WorkerPodAutoScalerStatus>,
    world: &World,
    history: &History,
    now: Timestamp,
    settings: &PlanSettings,
) -> Plan {
    let current = world.target_state.replicas;
    let target = world.target.describe();
    if first_poll_pending(world.queue.as_ref()) {
        // Nothing is known about the queue yet: hold, and write nothing. The registry wakes
        // this WPA after the first poll, and that status is the first one worth writing (so a
        // start with thousands of WPAs costs one status write each, not two).
        return Plan {
            pod_costs: Vec::new(),
            scale: None,
            record: None,
            events: Vec::new(),
            status: None,
            gauges: None,
            requeue: FIRST_POLL_RECHECK,
            problem: None,
            drain: DrainWrites::default(),
            draining: None,
        };
    }
    let (metrics_condition, snapshot) = metrics_condition(world.queue.as_ref(), current);
    let mut wait_gauges = None;
    let mut conditions = vec![metrics_condition];
    let mut status = base.cloned().unwrap_or_default();
    let mut plan = Plan {
        pod_costs: Vec::new(),
        scale: None,
        record: None,
        events: Vec::new(),
        status: None,
        gauges: None,
        requeue: settings.resync,
        problem: None,
        drain: DrainWrites::default(),
        draining: None,
    };

    match snapshot {
        Some(queue) => {
            // With maxWaitSeconds and a learned model the wait rule decides; else practo's.
            let decision = scaler::wait::decide_with_wait(
                &world.policy,
                &queue,
                world.workers.as_ref().and_then(|w| w.activity.as_ref()),
                world.wait.as_ref().and_then(|w| w.sizing.as_ref()),
                current,
                now,
                history,
                &settings.scaler,
            );
            let wants_change = decision.desired != current;
            let paused = wpa
                .annotations()
                .get(PAUSED_ANNOTATION)
                .is_some_and(|v| v == "true");
            let dry_run = settings.dry_run || wpa.spec.dry_run.unwrap_or(false);
            let applied = wants_change && !paused && !dry_run;
            let drain = plan_drain(&DrainPlanInput {
                drain: world.drain.as_ref(),
                workers: world.workers.as_ref(),
                settings: settings.drain,
                current,
                desired: if applied { decision.desired } else { current },
                target: &target,
                now,
            });
            plan.events.extend(
                (drain.events.iter()).map(|(t, r, n)| PlannedEvent::new(*t, *r, n.clone())),
            );
            plan.draining = world.drain.as_ref().map(|_| drain.draining);
            plan.drain = drain.writes;
            if drain.draining > 0 || drain.scale != DrainScale::Pass {
                plan.requeue = plan.requeue.min(DRAIN_RECHECK);
            }
            if let (true, DrainScale::Hold(message)) = (applied, &drain.scale) {
                conditions.push(ConditionState::new(
                    ABLE_TO_SCALE,
                    Status::True,
                    DRAINING,
                    message.clone(),
                ));
            } else if wants_change && paused {
                conditions.push(ConditionState::new(
                    ABLE_TO_SCALE,
                    Status::False,
                    PAUSED,
                    format!(
                        "paused by the {PAUSED_ANNOTATION} annotation; would scale to {}",
                        decision.desired
                    ),
                ));
            } else if wants_change && dry_run {
                conditions.push(ConditionState::new(
                    ABLE_TO_SCALE,
                    Status::False,
                    DRY_RUN,
                    format!(
                        "dry run: would scale from {current} to {}",
                        decision.desired
                    ),
                ));
                plan.events.push(PlannedEvent::new(
                    EventType::Normal,
                    DRY_RUN,
                    format!(
                        "would scale {target} from {current} to {}: {}",
                        decision.desired,
                        decision.reason.message()
                    ),
                ));
            } else if wants_change {
                let drained = match &drain.scale {
                    DrainScale::Finish { to, drained } => Some((*to, drained)),
                    _ => None,
                };
                let change = ScaleChange {
                    from: current,
                    to: drained.map_or(decision.desired, |(to, _)| to),
                    reason: decision.reason,
                    target: target.clone(),
                };
                let time = Some(Time(now));
                status.last_scale_time = time.clone();
                if change.is_up() {
                    status.last_scale_up_time = time;
                } else {
                    status.last_scale_down_time = time;
                }
                plan.events.push(PlannedEvent::new(
                    EventType::Normal,
                    if change.is_up() {
                        "ScaledUp"
                    } else {
                        "ScaledDown"
                    },
                    format!(
                        "scaled {target} from {current} to {}: {}",
                        change.to,
                        decision.reason.message()
                    ),
                ));
                conditions.push(ConditionState::new(
                    ABLE_TO_SCALE,
                    Status::True,
                    SCALED,
                    format!("scaled from {current} to {}", change.to),
                ));
                if !change.is_up()
                    && let Some(workers) = &world.workers
                {
                    protect_busy_pods(&mut plan, workers, &change, drained.map(|(_, d)| d));
                }
                plan.scale = Some(change);
                plan.record = Some(decision);
            } else {
                plan.record = Some(decision);
                conditions.push(ConditionState::new(
                    ABLE_TO_SCALE,
                    Status::True,
                    READY_FOR_NEW_SCALE,
                    "the target can be scaled",
                ));
            }
            conditions.push(limited_condition(&decision));
            match decision.reason {
                Reason::ScaleDownDelayed => {
                    plan.requeue =
                        plan.requeue
                            .min(delay_remaining(history, &settings.scaler, now));
                }
                // `behavior` windows and rate policies release the held change as time passes:
                // look again soon rather than at the resync.
                Reason::RateLimited | Reason::StabilizedUp | Reason::StabilizedDown => {
                    plan.requeue = plan.requeue.min(BEHAVIOR_RECHECK);
                }
                _ => {}
            }
            if world.workers.as_ref().is_some_and(|w| w.recheck) {
                plan.requeue = plan.requeue.min(WORKERS_RECHECK);
            }
            match &world.wait {
                Some(wait) => {
                    let previous = base
                        .and_then(|s| s.conditions.iter().find(|c| c.type_ == WAIT_TARGET))
                        .map(|c| c.reason.as_str());
                    let planned = plan_wait(wait, &world.policy, decision.desired, previous);
                    conditions.push(planned.condition);
                    status.wait = Some(planned.status);
                    plan.events.extend(planned.event);
                    wait_gauges = planned.gauges;
                    // The learner needs the workers' figures as they change, and a hold
                    // ends on its own: look again at the heartbeat cadence while there is
                    // work or a worker.
                    let s = &wait.state;
                    if current > 0 || s.waiting + s.held + s.running > 0 {
                        plan.requeue = plan.requeue.min(WORKERS_RECHECK);
                    }
                }
                None => status.wait = None,
            }
            status.desired_replicas = decision.desired;
            status.last_decision_reason = Some(decision.reason.to_string());
        }
        None => {
            // Unknown or stale metrics: hold. Never a scale-down on missing data.
            conditions.push(ConditionState::new(
                ABLE_TO_SCALE,
                Status::True,
                HOLDING_REPLICAS,
                "holding the current replicas until metrics are available",
            ));
            conditions.push(ConditionState::new(
                SCALING_LIMITED,
                Status::False,
                NO_DECISION,
                "no decision without metrics",
            ));
            status.desired_replicas = current;
            status.last_decision_reason = Some(HOLD_NO_METRICS.to_string());
        }
    }

    let ready = conditions
        .iter()
        .all(|c| c.type_ != METRICS_AVAILABLE || c.status == Status::True);
    conditions.insert(
        0,
        if ready {
            ConditionState::new(
                READY,
                Status::True,
                RECONCILED,
                format!("watching {} for {target}", world.queue_redacted),
            )
        } else {
            ConditionState::new(
                READY,
                Status::False,
                METRICS_UNAVAILABLE,
                "queue metrics are not available; replicas are held",
            )
        },
    );

    if let Some(queue) = &world.queue
        && let Some(metrics) = &queue.metrics
    {
        let backlog = metrics.backlog();
        status.current_messages = i64::try_from(backlog).unwrap_or(i64::MAX);
        status.in_flight_messages = metrics
            .in_flight
            .map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        plan.gauges = Some(WpaGauges {
            per_queue: Vec::new(),
            messages: backlog,
            in_flight: metrics.in_flight,
            sent_per_minute: metrics.sent_per_minute,
            idle: queue.idle,
            current,
            desired: status.desired_replicas,
            available: world.target_state.available,
            workers: None,
            wait: wait_gauges,
        });
    }
    status.queues = world
        .per_queue
        .iter()
        .map(|(queue, state)| queue_status(queue, state))
        .collect();
    if let Some(gauges) = &mut plan.gauges {
        gauges.per_queue = world
            .per_queue
            .iter()
            .map(|(queue, state)| (queue.clone(), state.backlog()))
            .collect();
        gauges.workers = world.workers.as_ref().and_then(|w| w.activity);
    }
    status.workers = world.workers.as_ref().map(|w| WorkersStatus {
        draining: plan
            .draining
            .map_or(0, |n| i32::try_from(n).unwrap_or(i32::MAX)),
        ..workers_status(w)
    });
    status.current_replicas = current;
    status.available_replicas = world.target_state.available;
    status.observed_generation = wpa.meta().generation;
    status.conditions =
        status::merge_conditions(&status.conditions, &conditions, wpa.meta().generation, now);
    plan.status = changed(base, status);
    if plan.scale.is_none() && world.workers.as_ref().is_some_and(|w| w.warming_up) {
        // The workers' first reports are seconds away: as before a queue's first poll, a
        // status now would only be replaced then (a start costs one status write per WPA).
        // Look again then, whatever the queue said (a failing one would wait for the resync).
        plan.status = None;
        plan.requeue = plan.requeue.min(WORKERS_RECHECK);
    }
    plan
}

/// Before a scale-down: the deletion costs that make the ReplicaSet remove idle pods first
/// (and before them the `drained` ones), and an Event naming the busy pods it keeps.
fn protect_busy_pods(
    plan: &mut Plan,
    workers: &WorkersObserved,
    change: &ScaleChange,
    drained: Option<&Vec<String>>,
) {
    plan.pod_costs = workers
        .pods
        .iter()
        .filter_map(|p| {
            let cost = match drained.is_some_and(|d| d.contains(&p.pod.name)) {
                true => (p.pod.deletion_cost.as_deref() != Some(&DRAINED_COST.to_string()))
                    .then_some(DRAINED_COST),
                false => p.cost_change(),
            };
            cost.map(|cost| PodCost {
                pod: p.pod.name.clone(),
                cost,
            })
        })
        .collect();
    let busy: Vec<&str> = workers
        .pods
        .iter()
        .filter(|p| matches!(p.work, PodWork::Busy { .. }))
        .map(|p| p.pod.name.as_str())
        .collect();
    if !busy.is_empty() {
        plan.events.push(PlannedEvent::new(
            EventType::Normal,
            PROTECTED_BUSY_PODS,
            format!(
                "scaling {} from {} to {}: busy pods kept ({}): {}",
                change.target,
                change.from,
                change.to,
                busy.len(),
                busy.join(", ")
            ),
        ));
    }
}

/// No poll of the queue has finished yet (neither metrics nor an error).
fn first_poll_pending(queue: Option<&QueueState>) -> bool {
    queue.is_none_or(|s| s.error.is_none() && (s.metrics.is_none() || s.stale))
}

/// The MetricsAvailable condition, and the queue reading to decide on if there is a usable
/// one (fresh metrics; a failing queue gives none). Called once a poll has finished.
fn metrics_condition(
    queue: Option<&QueueState>,
    current: i32,
) -> (ConditionState, Option<QueueSnapshot>) {
    match queue {
        Some(state) if !state.stale && state.metrics.is_some() => {
            let metrics = state.metrics.as_ref();
            // A queue nobody has declared yet reads as empty; one of a provider's two
            // sources failing still leaves usable metrics: say so, and which signal is
            // missing.
            let partial = metrics.and_then(|m| m.partial.as_deref());
            let condition = match (metrics.map(|m| m.missing.as_slice()), partial) {
                (Some(queues @ [_, ..]), partial) => ConditionState::new(
                    METRICS_AVAILABLE,
                    Status::True,
                    QUEUE_NOT_DECLARED,
                    not_declared_message(queues, partial),
                ),
                (_, None) => ConditionState::new(
                    METRICS_AVAILABLE,
                    Status::True,
                    METRICS_FRESH,
                    "the queue was polled successfully",
                ),
                (_, Some(missing)) => ConditionState::new(
                    METRICS_AVAILABLE,
                    Status::True,
                    METRICS_PARTIAL,
                    missing.to_string(),
                ),
            };
            let snapshot = metrics.map(|m| QueueSnapshot {
                visible: m.visible,
                in_flight: m.in_flight.unwrap_or(0),
                sent_per_minute: m.sent_per_minute.unwrap_or(0) as f64,
                idle: state.idle,
            });
            (condition, snapshot)
        }
        failing => {
            let error = failing
                .and_then(|s| s.error.as_ref())
                .map_or_else(|| "no metrics".to_string(), ToString::to_string);
            (
                ConditionState::new(
                    METRICS_AVAILABLE,
                    Status::False,
                    POLL_FAILED,
                    format!("holding {current} replicas: {error}"),
                ),
                None,
            )
        }
    }
}

/// The `QueueNotDeclared` message: which queues do not exist yet, how they are read, and
/// any signal missing from the others.
fn not_declared_message(queues: &[String], partial: Option<&str>) -> String {
    let (what, it) = match queues.len() {
        1 => ("the queue".to_string(), "it"),
        n => (format!("{n} queues"), "them"),
    };
    let mut message = format!(
        "{what} not declared yet, read as empty (nothing ready or unacknowledged, no \
         consumers) until a producer or worker declares {it}: {}",
        queues.join(", ")
    );
    if let Some(partial) = partial {
        message.push_str("; ");
        message.push_str(partial);
    }
    message
}

/// `status` if it differs from the newest one known (ours or the cache's).
fn changed(
    base: Option<&WorkerPodAutoScalerStatus>,
    status: WorkerPodAutoScalerStatus,
) -> Option<WorkerPodAutoScalerStatus> {
    status::status_changed(base, &status).then_some(status)
}

fn limited_condition(decision: &Decision) -> ConditionState {
    if decision.limited {
        ConditionState::new(
            SCALING_LIMITED,
            Status::True,
            decision.reason.to_string(),
            decision.reason.message(),
        )
    } else {
        ConditionState::new(
            SCALING_LIMITED,
            Status::False,
            DESIRED_WITHIN_RANGE,
            "the desired count is within the allowed range",
        )
    }
}
