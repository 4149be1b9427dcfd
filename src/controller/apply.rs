//! The last step of a reconcile: perform a plan. The only place a reconcile writes to the
//! API, in order of importance: the scale, then Events, then the status (handed to the
//! status writer, which writes it in the background).

use kube::Resource;
use kube::runtime::events::{Event, EventType};
use tracing::{debug, info, warn};

use super::Error;
use super::context::Context;
use super::key::WpaKey;
use super::observe::Observed;
use super::plan::{Plan, PlannedEvent};
use crate::crd::WorkerPodAutoScaler;

pub async fn apply(
    wpa: &WorkerPodAutoScaler,
    ctx: &Context,
    key: &WpaKey,
    observed: &Observed,
    plan: Plan,
) -> Result<(), Error> {
    if let Some(problem) = &plan.problem {
        warn!(reason = problem.reason, message = %problem.message, "WPA cannot be scaled");
    }
    if plan.scale.is_some() && ctx.shutdown.requested() {
        info!("shutting down: the planned scale is not made");
        return Ok(());
    }
    if let (Some(change), Ok(world)) = (&plan.scale, &observed.world) {
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
            }
            Err(_) if ctx.shutdown.requested() => {
                info!(
                    to = change.to,
                    "shutting down: the scale write was abandoned"
                );
                return Ok(());
            }
            Err(e) => {
                warn!(error = %e, "scale failed");
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
