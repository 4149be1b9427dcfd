//! One reconcile of one WPA: observe (spec, target, queue; subscribing the queue), plan
//! (pure), apply (the API writes).
//!
//! Safety rules live in the plan: a WPA whose metrics are unknown or stale holds its
//! replicas; a bad spec, a missing target or an unreadable Secret is reported (status
//! condition and Event) and retried at the resync period without affecting other WPAs.

use std::sync::Arc;
use std::time::Instant;

use kube::Resource;
use kube::runtime::controller::Action;

use super::Error;
use super::apply::apply;
use super::context::Context;
use super::key::WpaKey;
use super::metrics::WpaLabels;
use super::observe::observe;
use super::plan::plan;
use crate::crd::WorkerPodAutoScaler;

pub async fn reconcile(wpa: Arc<WorkerPodAutoScaler>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = WpaKey::of(&wpa);
    let started = Instant::now();
    let span =
        tracing::info_span!("reconcile", wpa.namespace = %key.namespace(), wpa.name = %key.name());
    let result = tracing::Instrument::instrument(reconcile_wpa(&wpa, &ctx, &key), span).await;
    ctx.metrics.observe_reconcile(
        &WpaLabels {
            name: key.name(),
            namespace: key.namespace(),
            queue_name: &ctx.memories.queue_label(&key),
        },
        started.elapsed(),
        result.is_ok(),
    );
    result
}

async fn reconcile_wpa(
    wpa: &WorkerPodAutoScaler,
    ctx: &Context,
    key: &WpaKey,
) -> Result<Action, Error> {
    if wpa.meta().deletion_timestamp.is_some() {
        ctx.forget(key);
        return Ok(Action::await_change());
    }
    let observed = observe(wpa, ctx, key).await?;
    let plan = plan(wpa, &observed, &ctx.plan);
    let requeue = plan.requeue;
    apply(wpa, ctx, key, &observed, plan).await?;
    Ok(Action::requeue(requeue))
}
