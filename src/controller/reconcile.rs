//! One reconcile of one WPA: observe (spec, target, queue; subscribing the queue), plan
//! (pure), apply (the API writes).
//!
//! Safety rules live in the plan: a WPA whose metrics are unknown or stale holds its
//! replicas; a bad spec, a missing target or an unreadable Secret is reported (status
//! condition and Event) and retried at the resync period without affecting other WPAs.

use std::sync::Arc;
use std::time::{Duration, Instant};

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
use crate::queue::registry::next_tick;

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
    if result.is_ok()
        && let Some(reason) = ctx.failures.succeeded(&key.to_string(), super::RECONCILE)
    {
        tracing::info!(wpa = %key, failed_with = %reason, "reconcile works again");
    }
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
    let requeue = aligned(requeue, ctx.registry.epoch(), tokio::time::Instant::now());
    Ok(Action::requeue(requeue))
}

/// Requeues at least this long (the resync, a backoff) are aligned to [`ALIGN_TO`].
const ALIGN_FROM: Duration = Duration::from_secs(5);
/// The grid long requeues land on, counted from the registry's epoch (the poll loops'
/// shared ticks use the same one).
const ALIGN_TO: Duration = Duration::from_secs(1);

/// `requeue`, lengthened (by less than [`ALIGN_TO`]) so that it ends on a whole
/// [`ALIGN_TO`] since `epoch`. Why: WPAs reconciled at scattered moments (a start-up
/// paced by the API budget spreads them over minutes) would otherwise each wake the
/// runtime at their own resync; aligned, the resyncs due within one second run in one
/// wake-up, the same one as the polls' tick. Short requeues (rechecks within seconds) are
/// left alone: rounding would delay them noticeably.
pub(super) fn aligned(
    requeue: Duration,
    epoch: tokio::time::Instant,
    now: tokio::time::Instant,
) -> Duration {
    if requeue < ALIGN_FROM {
        return requeue;
    }
    let due = now + requeue;
    // The first tick at or after `due`: the first after the nanosecond before it.
    let just_before = due.checked_sub(Duration::from_nanos(1)).unwrap_or(due);
    next_tick(epoch, ALIGN_TO, just_before).saturating_duration_since(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_requeues_end_on_the_shared_grid() {
        let epoch = tokio::time::Instant::now();
        let resync = Duration::from_secs(20);
        // Reconciles that ended anywhere within one second resync in the same second.
        for offset_ms in [1, 250, 999] {
            let now = epoch + Duration::from_secs(3) + Duration::from_millis(offset_ms);
            let requeue = aligned(resync, epoch, now);
            assert_eq!(
                now + requeue,
                epoch + Duration::from_secs(24),
                "{offset_ms}"
            );
            assert!(requeue >= resync && requeue < resync + ALIGN_TO);
        }
        // Already on the grid: unchanged.
        let now = epoch + Duration::from_secs(3);
        assert_eq!(aligned(resync, epoch, now), resync);
        // Short rechecks are not delayed.
        let now = epoch + Duration::from_millis(3_500);
        assert_eq!(
            aligned(Duration::from_secs(2), epoch, now),
            Duration::from_secs(2)
        );
        // The threshold itself is aligned.
        assert_eq!(
            now + aligned(ALIGN_FROM, epoch, now),
            epoch + Duration::from_secs(9)
        );
    }
}
