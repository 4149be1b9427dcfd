//! The last step of a reconcile: perform a plan. The only place a reconcile writes to the
//! API, in order of importance: the scale, then Events, then the status.

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use super::Error;
use super::context::Context;
use super::key::WpaKey;
use super::observe::Observed;
use super::plan::{Plan, PlannedEvent};
use crate::crd::{WorkerPodAutoScaler, WorkerPodAutoScalerStatus};

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
            Err(e) => {
                warn!(error = %e, "scale failed");
                let note = format!("cannot scale {} to {}: {e}", change.target, change.to);
                publish(
                    ctx,
                    wpa,
                    &PlannedEvent {
                        type_: EventType::Warning,
                        reason: "ScaleFailed".to_string(),
                        note,
                    },
                )
                .await;
                return Err(Error::Target(e));
            }
        }
    }
    if let (Some(decision), Ok(world)) = (&plan.record, &observed.world) {
        ctx.memories
            .record_decision(key, decision, world.target_state.replicas, observed.now);
    }
    for event in &plan.events {
        publish(ctx, wpa, event).await;
    }
    if let Some(gauges) = &plan.gauges {
        ctx.metrics.set_gauges(&ctx.labels(key).as_labels(), gauges);
    }
    if let Some(status) = plan.status {
        write_status(wpa, ctx, status).await?;
    }
    Ok(())
}

async fn write_status(
    wpa: &WorkerPodAutoScaler,
    ctx: &Context,
    status: WorkerPodAutoScalerStatus,
) -> Result<(), Error> {
    let api: Api<WorkerPodAutoScaler> =
        Api::namespaced(ctx.client.clone(), &wpa.namespace().unwrap_or_default());
    api.patch_status(
        &wpa.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map_err(Error::Status)?;
    Ok(())
}

async fn publish(ctx: &Context, wpa: &WorkerPodAutoScaler, event: &PlannedEvent) {
    let event = Event {
        type_: event.type_,
        reason: event.reason.clone(),
        note: Some(event.note.clone()),
        action: "Scaling".to_string(),
        secondary: None,
    };
    // Events are best effort: failing to publish one must not fail the reconcile.
    if let Err(e) = ctx.recorder.publish(&event, &wpa.object_ref(&())).await {
        debug!(error = %e, "cannot publish event");
    }
}
