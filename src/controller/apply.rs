//! The last step of a reconcile: perform a plan. The only place a reconcile writes to the
//! API, in order of importance: the scale, then Events, then the status (handed to the
//! status writer, which writes it in the background).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use super::Error;
use super::api_errors::Seen;
use super::context::Context;
use super::drain_apply::apply_drain;
use super::key::WpaKey;
use super::observed::Observed;
use super::plan::{Plan, PlannedEvent, PodCost};
use super::pods::DELETION_COST_ANNOTATION;
use crate::crd::WorkerPodAutoScaler;

/// The step of [`Context::failures`] a WPA's configuration problem is kept under.
const PROBLEM: &str = "problem";

pub async fn apply(
    wpa: &WorkerPodAutoScaler,
    ctx: &Context,
    key: &WpaKey,
    observed: &Observed,
    plan: Plan,
) -> Result<(), Error> {
    // A problem stays until the user fixes it and is seen at every resync: logged once
    // per message (the status and an Event say it too).
    match &plan.problem {
        Some(problem) => {
            let seen = ctx
                .failures
                .failed(&key.to_string(), PROBLEM, &problem.message);
            if seen == Seen::New {
                warn!(reason = problem.reason, message = %problem.message, "WPA cannot be scaled");
            }
        }
        None => {
            if ctx.failures.succeeded(&key.to_string(), PROBLEM).is_some() {
                info!("the WPA's problem is solved");
            }
        }
    }
    if plan.scale.is_some() && ctx.shutdown.requested() {
        info!("shutting down: the planned scale is not made");
        return Ok(());
    }
    if let (Ok(world), false) = (&observed.world, ctx.shutdown.requested())
        && let Some(drain) = &world.drain
    {
        // Before the scale: a finished drain's kept victims consume again first.
        apply_drain(ctx, key, &drain.channel, plan.drain.clone()).await;
    }
    if let Some(draining) = plan.draining {
        ctx.metrics
            .draining_pods
            .with_label_values(&[key.name(), key.namespace()])
            .set(i64::try_from(draining).unwrap_or(i64::MAX));
    }
    if let (Some(change), Ok(world)) = (&plan.scale, &observed.world) {
        if let Err(e) = set_pod_costs(ctx, key, &plan.pod_costs).await {
            // Without the costs the ReplicaSet could remove a busy pod: no scale-down now.
            // The error is logged (once per reason) by the retry policy.
            debug!(error = %e, "cannot set the pods' deletion costs; the scale-down waits");
            return Err(e);
        }
        match ctx
            .targets
            .scale(key.namespace(), &world.target, change.to)
            .await
        {
            Ok(produced) => {
                info!(from = change.from, to = change.to, reason = %change.reason, "scaled");
                ctx.memories.remember_own_write(
                    key,
                    change.to,
                    world.target_state.version,
                    produced,
                );
                ctx.metrics
                    .count_scale(&ctx.labels(key).as_labels(), change.is_up());
                let protected = world.workers.as_ref().and_then(|w| w.activity);
                if let Some(activity) = protected.filter(|_| !change.is_up()) {
                    ctx.metrics
                        .busy_pods_protected
                        .with_label_values(&[key.name(), key.namespace()])
                        .inc_by(f64::from(activity.busy));
                }
            }
            Err(_) if ctx.shutdown.requested() => {
                info!(
                    to = change.to,
                    "shutting down: the scale write was abandoned"
                );
                return Ok(());
            }
            Err(e) => {
                // Logged (once per reason) by the retry policy, which gets this error.
                debug!(error = %e, "scale failed");
                let note = format!("cannot scale {} to {}: {e}", change.target, change.to);
                publish(
                    ctx,
                    wpa,
                    PlannedEvent {
                        type_: EventType::Warning,
                        reason: "ScaleFailed".to_string(),
                        note,
                    },
                );
                return Err(Error::Target(e));
            }
        }
    }
    if let (Some(decision), Ok(world)) = (&plan.record, &observed.world) {
        ctx.memories
            .record_decision(key, decision, world.target_state.replicas, observed.now);
    }
    if !ctx.shutdown.requested() {
        for event in plan.events {
            publish(ctx, wpa, event);
        }
    }
    if let Some(gauges) = &plan.gauges {
        ctx.metrics.set_gauges(&ctx.labels(key).as_labels(), gauges);
    }
    if let Some(status) = plan.status {
        ctx.status_writer.submit(key, status);
    }
    Ok(())
}

/// How long a scale-down waits for the pod cache to show the costs just set (the
/// ReplicaSet controller's cache is fed by the same kind of watch).
const COSTS_VISIBLE_WAIT: Duration = Duration::from_secs(3);

/// Sets the deletion costs, then waits (bounded) until the pod cache shows them, so that
/// the ReplicaSet controller, which ranks victims from its own cache, sees them before the
/// scale-down. A pod deleted meanwhile needs no cost.
async fn set_pod_costs(ctx: &Context, key: &WpaKey, costs: &[PodCost]) -> Result<(), Error> {
    if costs.is_empty() {
        return Ok(());
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), key.namespace());
    for PodCost { pod, cost } in costs {
        let patch = Patch::Merge(json!({
            "metadata": {"annotations": {DELETION_COST_ANNOTATION: cost.to_string()}}
        }));
        match pods.patch(pod, &PatchParams::default(), &patch).await {
            Ok(_) => debug!(pod = %pod, cost, "deletion cost set"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(Error::PodCost {
                    pod: pod.clone(),
                    source,
                });
            }
        }
    }
    let visible = || {
        costs.iter().all(|PodCost { pod, cost }| {
            ctx.pods
                .get(&ObjectRef::new(pod).within(key.namespace()))
                .is_none_or(|p| {
                    p.annotations().get(DELETION_COST_ANNOTATION) == Some(&cost.to_string())
                })
        })
    };
    let deadline = tokio::time::Instant::now() + COSTS_VISIBLE_WAIT;
    while !visible() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Sends an Event in the background: Events come after scale writes and reads in the API
/// budget, and a reconcile must not wait for one. Best effort: a failure is only logged.
fn publish(ctx: &Context, wpa: &WorkerPodAutoScaler, event: PlannedEvent) {
    let event = Event {
        type_: event.type_,
        reason: event.reason,
        note: Some(event.note),
        action: "Scaling".to_string(),
        secondary: None,
    };
    let recorder = ctx.recorder.clone();
    let reference = wpa.object_ref(&());
    tokio::spawn(async move {
        if let Err(e) = recorder.publish(&event, &reference).await {
            debug!(error = %e, "cannot publish event");
        }
    });
}
