//! The first step of a reconcile: read everything a decision needs (the spec, validated;
//! the target's replicas; the queue's state; the WPA's history), subscribing its queue on
//! the way. Writes nothing to the API.

use std::time::Duration;

use jiff::Timestamp;
use kube::{Resource, ResourceExt};
use tracing::debug;

use super::Error;
use super::context::Context;
use super::credentials;
use super::drain_observe::{channel_for, observe_drain};
use super::key::WpaKey;
use super::observed::{
    CELERY_EVENTS, CELERY_EVENTS_AND_CONSUMERS, CONSUMERS, Observed, WorkersObserved, World,
};
use super::pods::{self, ClassifiedPod, PodCache, PodWork};
use super::problem::{
    INVALID_QUEUE_CONFIG, INVALID_QUEUE_URI, INVALID_SCALE_TARGET, INVALID_SPEC, Problem,
    QUEUE_SERVICE_DISABLED, TARGET_NOT_FOUND,
};
use super::target::{PodSelector, TargetError, TargetRef};
use super::wait_observe;
use crate::crd::{WorkerPodAutoScaler, WorkerSignal};
use crate::queue::registry::{Subscription, combined};
use crate::queue::{ConsumerReport, Credentials, QueueUri};
use crate::scaler::{Policy, WorkerActivity};
use crate::workers::{EventSource, SignalView};

/// Re-read a referenced Secret this often even when the WPA does not change (rotation).
const SECRET_REFRESH: Duration = Duration::from_secs(300);

/// Reads a WPA's world. Fails only on errors worth a quick retry (API errors reading the
/// target); problems the owner must fix are part of the observation.
pub async fn observe(
    wpa: &WorkerPodAutoScaler,
    ctx: &Context,
    key: &WpaKey,
) -> Result<Observed, Error> {
    let now = Timestamp::now();
    let history = ctx.memories.history(key, wpa);
    let world = match spec_and_subscription(wpa, ctx, key).await {
        Ok(spec) => {
            let last_scale_up = wpa
                .status
                .as_ref()
                .and_then(|s| s.last_scale_up_time.as_ref())
                .map(|t| t.0);
            read_world(ctx, key, spec, last_scale_up, now).await?
        }
        Err(problem) => Err(problem),
    };
    Ok(Observed {
        now,
        history,
        own_status: ctx.status_writer.latest(key),
        world,
    })
}

/// The parts of the spec a decision needs, validated.
struct CheckedSpec {
    policy: Policy,
    target: TargetRef,
    queue_redacted: String,
    /// Each queue's redacted URI, in spec order.
    queues_redacted: Vec<String>,
    worker_signal: WorkerSignal,
}

async fn read_world(
    ctx: &Context,
    key: &WpaKey,
    spec: CheckedSpec,
    last_scale_up: Option<Timestamp>,
    now: Timestamp,
) -> Result<Result<World, Problem>, Error> {
    let namespace = key.namespace();
    let read = match ctx.targets.read(namespace, &spec.target).await {
        Ok(read) => read,
        Err(TargetError::NotFound(what)) => {
            return Ok(Err(Problem::new(
                TARGET_NOT_FOUND,
                format!("{what} does not exist in namespace {namespace}"),
            )));
        }
        Err(TargetError::UnknownKind {
            api_version,
            kind,
            detail,
        }) => {
            return Ok(Err(Problem::new(
                INVALID_SCALE_TARGET,
                format!("{api_version} {kind} cannot be scaled: {detail}"),
            )));
        }
        Err(e @ TargetError::Api { .. }) => return Err(Error::Target(e)),
    };
    let state = ctx.memories.trusted_state(key, read.state);
    // SQS waits for the first message in a long poll only while no worker runs (practo).
    ctx.registry
        .report_workers(key.id(), u32::try_from(state.replicas).unwrap_or(0));
    // Each queue's state once; with several, their combined view is computed from these.
    let states = ctx.registry.states(key.id());
    let queue = (!states.is_empty()).then(|| combined::combine(&states));
    // The queue's per-consumer report, where the provider gives one and the spec wants it.
    let consumers = queue
        .as_ref()
        .filter(|_| spec.worker_signal.consumers())
        .filter(|q| !q.stale)
        .and_then(|q| q.metrics.as_ref())
        .and_then(|m| m.workers.as_deref());
    let workers = observe_workers(ctx, key, read.pods.as_ref(), consumers, state.replicas, now);
    let wait = match spec.policy.max_wait {
        Some(max_wait) => Some(wait_observe::observe_wait(
            ctx,
            key,
            max_wait,
            queue.as_ref(),
            workers.as_ref(),
            last_scale_up,
            now,
        )),
        None => {
            ctx.memories.forget_wait(key);
            None
        }
    };
    let drain = observe_drain(ctx, key, state.replicas).await;
    let per_queue = if states.len() > 1 {
        spec.queues_redacted.into_iter().zip(states).collect()
    } else {
        Vec::new()
    };
    Ok(Ok(World {
        policy: spec.policy,
        target: spec.target,
        queue_redacted: spec.queue_redacted,
        target_state: state,
        queue,
        per_queue,
        workers,
        wait,
        drain,
    }))
}

/// The target's pods and their workers, where WPA `key` has a worker signal. While the
/// signal cannot be trusted (starting, failing) every pod counts as possibly busy, so no
/// scale-down happens on a guess.
fn observe_workers(
    ctx: &Context,
    key: &WpaKey,
    selector: Option<&PodSelector>,
    consumers: Option<&[ConsumerReport]>,
    current: i32,
    now: Timestamp,
) -> Option<WorkersObserved> {
    // Celery's events where the WPA's brokers carry them; else only the consumer report.
    let (view, source) = match (ctx.workers.view(key.id(), now), consumers) {
        (None, None) => return None,
        (None, Some(_)) => (SignalView::Live(Vec::new()), CONSUMERS),
        (Some(view), None) => (view, CELERY_EVENTS),
        (Some(view), Some(_)) => (view, CELERY_EVENTS_AND_CONSUMERS),
    };
    let source = source.to_string();
    let (pods, statefulset) = match selector {
        Some(s) => (
            pods::target_pods(
                &ctx.pods,
                key.namespace(),
                &s.selector,
                s.statefulset.as_deref(),
            ),
            s.statefulset.is_some(),
        ),
        None => (Vec::new(), false),
    };
    let hold = |message: String, warming_up: bool| {
        let unknown = pods.iter().map(|pod| ClassifiedPod {
            pod: pod.clone(),
            work: PodWork::Unknown,
        });
        WorkersObserved {
            activity: Some(WorkerActivity {
                unknown: u32::try_from(pods.len()).unwrap_or(u32::MAX),
                recently_busy: true,
                keep: u32::try_from(current).unwrap_or(0),
                ..WorkerActivity::default()
            }),
            pods: unknown.collect(),
            message: Some(message),
            recheck: true,
            warming_up,
            source: source.clone(),
            target_workers: Vec::new(),
        }
    };
    match ctx.pod_cache.state() {
        PodCache::Synced => {}
        PodCache::Waiting => {
            return Some(hold(
                "waiting for the first listing of the pods: scale-downs are held".to_string(),
                true,
            ));
        }
        // An install whose RBAC predates worker-aware scale-in: decide as before, say why.
        PodCache::Failing(error) => {
            return Some(WorkersObserved {
                activity: None,
                pods: Vec::new(),
                recheck: false,
                warming_up: false,
                source: source.clone(),
                target_workers: Vec::new(),
                message: Some(format!(
                    "cannot list pods ({error}); grant pods get/list/watch/patch: deciding on queue figures alone"
                )),
            });
        }
    }
    Some(match view {
        SignalView::Starting => hold(
            "waiting for the workers' first heartbeats: scale-downs are held".to_string(),
            true,
        ),
        SignalView::Failing(error) => hold(
            format!("cannot read the workers' events ({error}): scale-downs are held"),
            false,
        ),
        SignalView::Live(workers) => {
            let (activity, classified) = pods::classify(
                &pods,
                &workers,
                consumers.unwrap_or_default(),
                now,
                ctx.idle_window,
                statefulset,
            );
            let message = if selector.is_none() {
                Some(
                    "the target's pod selector is unknown: deciding on queue figures alone"
                        .to_string(),
                )
            } else if !classified.is_empty() && activity.unknown as usize == classified.len() {
                Some(format!(
                    "no worker reports for any of the {} pods (Celery heartbeats off? consumers elsewhere?): deciding on queue figures alone",
                    classified.len()
                ))
            } else {
                None
            };
            let target_workers = workers
                .into_iter()
                .filter(|w| pods.iter().any(|p| pods::runs_in(&w.hostname, &p.name)))
                .collect();
            WorkersObserved {
                recheck: activity.busy > 0,
                warming_up: false,
                source: source.clone(),
                activity: Some(activity),
                pods: classified,
                message,
                target_workers,
            }
        }
    })
}

/// The spec's decision inputs, validated, with the parsed queue URIs.
fn check_spec(
    wpa: &WorkerPodAutoScaler,
    ctx: &Context,
) -> Result<(CheckedSpec, Vec<QueueUri>), Problem> {
    let policy = Policy::from_spec(&wpa.spec, &ctx.plan.scaler)
        .map_err(|e| Problem::new(INVALID_SPEC, e.to_string()))?;
    let target = TargetRef::from_spec(&wpa.spec).map_err(|m| Problem::new(INVALID_SPEC, m))?;
    let listed = wpa
        .spec
        .queue_uris()
        .map_err(|m| Problem::new(INVALID_SPEC, m))?;
    let several = listed.len() > 1;
    let mut uris = Vec::with_capacity(listed.len());
    for (index, text) in listed.into_iter().enumerate() {
        let uri = QueueUri::parse(text).map_err(|e| {
            let message = if several {
                format!("queueURIs[{index}]: {e}")
            } else {
                e.to_string()
            };
            Problem::new(INVALID_QUEUE_URI, message)
        })?;
        if !ctx.enabled.contains(&uri.kind()) {
            return Err(Problem::new(
                QUEUE_SERVICE_DISABLED,
                format!("{} queues are not enabled by --queue-services", uri.kind()),
            ));
        }
        if uris.contains(&uri) {
            // Two spellings of one queue (a default port written out, say) would count
            // its backlog twice.
            return Err(Problem::new(
                INVALID_SPEC,
                format!("queueURIs[{index}] names the same queue as an earlier entry"),
            ));
        }
        uris.push(uri);
    }
    let queues_redacted: Vec<String> = uris.iter().map(QueueUri::redacted).collect();
    let checked = CheckedSpec {
        policy,
        target,
        queue_redacted: queues_redacted.join(", "),
        queues_redacted,
        worker_signal: wpa.spec.worker_signal.unwrap_or_default(),
    };
    Ok((checked, uris))
}

/// Validates the spec and makes sure the WPA's queue is subscribed with its current
/// settings and credentials.
async fn spec_and_subscription(
    wpa: &WorkerPodAutoScaler,
    ctx: &Context,
    key: &WpaKey,
) -> Result<CheckedSpec, Problem> {
    let (checked, uris) = check_spec(wpa, ctx)?;
    let generation = wpa.meta().generation.unwrap_or(0);
    if !ctx
        .memories
        .subscription_current(key, generation, SECRET_REFRESH)
    {
        let namespace = wpa.namespace().unwrap_or_default();
        let credentials = credentials::resolve(
            &ctx.client,
            &namespace,
            wpa.spec.credentials_secret_ref.as_ref(),
        )
        .await?;
        subscribe(wpa, ctx, key, &checked, uris, credentials)?;
    }
    Ok(checked)
}

/// Subscribes a WPA's queue straight from the watch, before its first reconcile, so that
/// polling starts as soon as the WPA is known, whatever the API write budget. Only WPAs
/// without a credentials Secret: reading one is an API request, left to the reconcile.
/// Problems are left to the reconcile too, which reports them.
pub fn subscribe_from_watch(wpa: &WorkerPodAutoScaler, ctx: &Context) {
    if wpa.spec.credentials_secret_ref.is_some() || wpa.meta().deletion_timestamp.is_some() {
        return;
    }
    let key = WpaKey::of(wpa);
    let generation = wpa.meta().generation.unwrap_or(0);
    ctx.memories.ensure(&key, wpa);
    if ctx
        .memories
        .subscription_current(&key, generation, SECRET_REFRESH)
    {
        return;
    }
    if let Ok((checked, uris)) = check_spec(wpa, ctx) {
        let _ = subscribe(wpa, ctx, &key, &checked, uris, Credentials::default());
    }
}

fn subscribe(
    wpa: &WorkerPodAutoScaler,
    ctx: &Context,
    key: &WpaKey,
    checked: &CheckedSpec,
    queues: Vec<QueueUri>,
    credentials: Credentials,
) -> Result<(), Problem> {
    let subscription = Subscription {
        queues,
        credentials,
        poll_interval: wpa
            .spec
            .poll_interval_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs),
        target_messages_per_worker: u64::try_from(checked.policy.target).unwrap_or(1),
    };
    let mut sources: Vec<EventSource> = Vec::new();
    if checked.worker_signal.celery_events() {
        for queue in &subscription.queues {
            if let Some(source) = queue.celery_events(&subscription.credentials)
                && !sources.contains(&source)
            {
                sources.push(source);
            }
        }
    }
    let drain_channel = channel_for(&subscription.queues, &subscription.credentials);
    ctx.registry
        .subscribe(key.id(), subscription)
        .map_err(|e| Problem::new(INVALID_QUEUE_CONFIG, e.to_string()))?;
    ctx.memories.set_drain_channel(key, drain_channel);
    ctx.workers.attach(key.id(), sources);
    ctx.update_worker_listener_gauge();
    let generation = wpa.meta().generation.unwrap_or(0);
    ctx.memories
        .mark_subscribed(key, generation, &checked.queue_redacted);
    ctx.update_poll_loop_gauge();
    debug!(wpa = %key, queue = %checked.queue_redacted, "subscribed");
    Ok(())
}
