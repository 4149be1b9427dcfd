//! One reconcile of one WPA: subscribe its queue, read its target, decide, scale, report.
//!
//! Safety rules live here: a WPA whose metrics are unknown or stale holds its replicas; a
//! bad spec, a missing target or an unreadable Secret is reported (status condition and
//! Event) and retried at the resync period without affecting other WPAs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use super::status::{
    self, ABLE_TO_SCALE, ConditionState, METRICS_AVAILABLE, READY, SCALING_LIMITED, Status,
};
use super::target::{TargetError, TargetRef, TargetState};
use super::{Context, Error, WpaMemory};
use crate::crd::{PAUSED_ANNOTATION, WorkerPodAutoScaler, WorkerPodAutoScalerStatus};
use crate::queue::registry::Subscription;
use crate::queue::{Credentials, QueueUri};
use crate::scaler::{self, Decision, History, Policy, QueueSnapshot, Reason, ScalerSettings};

/// How soon to look again at a WPA whose first metrics have not arrived (the registry also
/// wakes it when they do).
const FIRST_POLL_RECHECK: Duration = Duration::from_secs(2);
/// After our own scale PATCH, trust it over a watch cache that has not caught up yet, for
/// this long when the target carries no resourceVersion to tell (otherwise until the cache
/// shows any newer version of the target).
const OWN_WRITE_TRUST: Duration = Duration::from_secs(10);
/// How soon to look again at a WPA whose change a `behavior` rule is holding back.
const BEHAVIOR_RECHECK: Duration = Duration::from_secs(1);
/// Re-read a referenced Secret this often even when the WPA does not change (rotation).
const SECRET_REFRESH: Duration = Duration::from_secs(300);

pub(super) async fn reconcile(
    wpa: Arc<WorkerPodAutoScaler>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let namespace = wpa.namespace().unwrap_or_default();
    let name = wpa.name_any();
    let key = format!("{namespace}/{name}");
    let started = Instant::now();
    let span = tracing::info_span!("reconcile", wpa.namespace = %namespace, wpa.name = %name);
    let result = tracing::Instrument::instrument(reconcile_wpa(&wpa, &ctx, &key), span).await;
    let queue_name = ctx.queue_label(&key);
    ctx.metrics.observe_reconcile(
        &super::metrics::WpaLabels {
            name: &name,
            namespace: &namespace,
            queue_name: &queue_name,
        },
        started.elapsed(),
        result.is_ok(),
    );
    result
}

/// A problem the user must fix; reported, not retried quickly.
struct Problem {
    reason: &'static str,
    message: String,
}

impl Problem {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

async fn reconcile_wpa(
    wpa: &WorkerPodAutoScaler,
    ctx: &Context,
    key: &str,
) -> Result<Action, Error> {
    if wpa.meta().deletion_timestamp.is_some() {
        ctx.forget(key);
        return Ok(Action::await_change());
    }
    let namespace = wpa.namespace().unwrap_or_default();
    let now = Timestamp::now();

    let prepared = match prepare(wpa, ctx, key, &namespace).await {
        Ok(p) => p,
        Err(problem) => {
            report_problem(wpa, ctx, &problem, now).await?;
            return Ok(Action::requeue(ctx.resync));
        }
    };

    let target_state = match ctx.targets.read(&namespace, &prepared.target).await {
        Ok(state) => ctx.with_own_write(key, state),
        Err(TargetError::NotFound(what)) => {
            let problem = Problem::new(
                "TargetNotFound",
                format!("{what} does not exist in namespace {namespace}"),
            );
            report_problem(wpa, ctx, &problem, now).await?;
            return Ok(Action::requeue(ctx.resync));
        }
        Err(TargetError::UnknownKind {
            api_version,
            kind,
            detail,
        }) => {
            let problem = Problem::new(
                "InvalidScaleTarget",
                format!("{api_version} {kind} cannot be scaled: {detail}"),
            );
            report_problem(wpa, ctx, &problem, now).await?;
            return Ok(Action::requeue(ctx.resync));
        }
        Err(e @ TargetError::Api { .. }) => return Err(Error::Target(e)),
    };
    let current = target_state.replicas;
    // SQS waits for the first message in a long poll only while no worker runs (practo).
    ctx.registry
        .report_workers(key, u32::try_from(current).unwrap_or(0));

    let queue_state = ctx.registry.state(key);
    let mut conditions = Vec::new();
    let snapshot = match &queue_state {
        Some(state) if !state.stale && state.metrics.is_some() => {
            // One of a provider's two sources failing still leaves usable metrics; say
            // which signal is missing.
            let partial = state.metrics.as_ref().and_then(|m| m.partial.as_deref());
            conditions.push(match partial {
                None => ConditionState::new(
                    METRICS_AVAILABLE,
                    Status::True,
                    "MetricsFresh",
                    "the queue was polled successfully",
                ),
                Some(missing) => ConditionState::new(
                    METRICS_AVAILABLE,
                    Status::True,
                    "MetricsPartial",
                    missing.to_string(),
                ),
            });
            state.metrics.as_ref().map(|m| QueueSnapshot {
                visible: m.visible,
                in_flight: m.in_flight.unwrap_or(0),
                sent_per_minute: m.sent_per_minute.unwrap_or(0) as f64,
                idle: state.idle,
            })
        }
        Some(state) if state.error.is_some() => {
            let error = state
                .error
                .as_ref()
                .map(|e| e.to_string())
                .unwrap_or_default();
            conditions.push(ConditionState::new(
                METRICS_AVAILABLE,
                Status::False,
                "PollFailed",
                format!("holding {current} replicas: {error}"),
            ));
            None
        }
        _ => {
            conditions.push(ConditionState::new(
                METRICS_AVAILABLE,
                Status::Unknown,
                "WaitingForFirstPoll",
                "the queue has not been polled yet",
            ));
            None
        }
    };

    let paused = wpa
        .annotations()
        .get(PAUSED_ANNOTATION)
        .is_some_and(|v| v == "true");
    let dry_run = ctx.dry_run || wpa.spec.dry_run.unwrap_or(false);
    let history = ctx.history(key, wpa);

    let decision = snapshot.as_ref().map(|queue| {
        scaler::decide(
            &prepared.policy,
            queue,
            current,
            now,
            &history,
            &ctx.settings,
        )
    });
    let mut status = wpa.status.clone().unwrap_or_default();
    let mut requeue = ctx.resync;

    match (&decision, &snapshot) {
        (Some(decision), Some(_)) => {
            let wants_change = decision.desired != current;
            if wants_change && paused {
                conditions.push(ConditionState::new(
                    ABLE_TO_SCALE,
                    Status::False,
                    "Paused",
                    format!(
                        "paused by the {PAUSED_ANNOTATION} annotation; would scale to {}",
                        decision.desired
                    ),
                ));
            } else if wants_change && dry_run {
                conditions.push(ConditionState::new(
                    ABLE_TO_SCALE,
                    Status::False,
                    "DryRun",
                    format!(
                        "dry run: would scale from {current} to {}",
                        decision.desired
                    ),
                ));
                publish(
                    ctx,
                    wpa,
                    EventType::Normal,
                    "DryRun",
                    format!(
                        "would scale {} from {current} to {}: {}",
                        prepared.target.describe(),
                        decision.desired,
                        decision.reason.message()
                    ),
                )
                .await;
            } else if wants_change {
                match ctx
                    .targets
                    .scale(&namespace, &prepared.target, decision.desired)
                    .await
                {
                    Ok(produced) => {
                        let up = decision.desired > current;
                        info!(from = current, to = decision.desired, reason = %decision.reason, "scaled");
                        ctx.remember_own_write(
                            key,
                            decision.desired,
                            target_state.version,
                            produced,
                        );
                        ctx.record_decision(key, decision, current, now);
                        ctx.metrics.count_scale(&ctx.labels(key).as_labels(), up);
                        let time = Some(Time(now));
                        status.last_scale_time = time.clone();
                        if up {
                            status.last_scale_up_time = time;
                        } else {
                            status.last_scale_down_time = time;
                        }
                        publish(
                            ctx,
                            wpa,
                            EventType::Normal,
                            if up { "ScaledUp" } else { "ScaledDown" },
                            format!(
                                "scaled {} from {current} to {}: {}",
                                prepared.target.describe(),
                                decision.desired,
                                decision.reason.message()
                            ),
                        )
                        .await;
                        conditions.push(ConditionState::new(
                            ABLE_TO_SCALE,
                            Status::True,
                            "Scaled",
                            format!("scaled from {current} to {}", decision.desired),
                        ));
                    }
                    Err(e) => {
                        warn!(error = %e, "scale failed");
                        publish(
                            ctx,
                            wpa,
                            EventType::Warning,
                            "ScaleFailed",
                            format!(
                                "cannot scale {} to {}: {e}",
                                prepared.target.describe(),
                                decision.desired
                            ),
                        )
                        .await;
                        return Err(Error::Target(e));
                    }
                }
            } else {
                ctx.record_decision(key, decision, current, now);
                conditions.push(ConditionState::new(
                    ABLE_TO_SCALE,
                    Status::True,
                    "ReadyForNewScale",
                    "the target can be scaled",
                ));
            }
            conditions.push(limited_condition(decision));
            match decision.reason {
                Reason::ScaleDownDelayed => {
                    requeue = requeue.min(delay_remaining(&history, &ctx.settings, now));
                }
                // `behavior` windows and rate policies release the held change as time passes:
                // look again soon rather than at the resync.
                Reason::RateLimited | Reason::StabilizedUp | Reason::StabilizedDown => {
                    requeue = requeue.min(BEHAVIOR_RECHECK);
                }
                _ => {}
            }
            status.desired_replicas = decision.desired;
            status.last_decision_reason = Some(decision.reason.to_string());
        }
        _ => {
            // Unknown or stale metrics: hold. Never a scale-down on missing data.
            conditions.push(ConditionState::new(
                ABLE_TO_SCALE,
                Status::True,
                "HoldingReplicas",
                "holding the current replicas until metrics are available",
            ));
            conditions.push(ConditionState::new(
                SCALING_LIMITED,
                Status::False,
                "NoDecision",
                "no decision without metrics",
            ));
            status.desired_replicas = current;
            status.last_decision_reason = Some("HoldNoMetrics".to_string());
            if queue_state
                .as_ref()
                .is_none_or(|s| s.metrics.is_none() && s.error.is_none())
            {
                requeue = FIRST_POLL_RECHECK;
            }
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
                "Reconciled",
                format!(
                    "watching {} for {}",
                    prepared.queue_redacted,
                    prepared.target.describe()
                ),
            )
        } else {
            ConditionState::new(
                READY,
                Status::False,
                "MetricsUnavailable",
                "queue metrics are not available; replicas are held",
            )
        },
    );

    if let Some(metrics) = queue_state.as_ref().and_then(|s| s.metrics.as_ref()) {
        let backlog = metrics
            .visible
            .saturating_add(metrics.in_flight.unwrap_or(0));
        status.current_messages = i64::try_from(backlog).unwrap_or(i64::MAX);
        status.in_flight_messages = metrics
            .in_flight
            .map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        ctx.metrics.set_gauges(
            &ctx.labels(key).as_labels(),
            &super::metrics::WpaGauges {
                messages: backlog,
                in_flight: metrics.in_flight,
                sent_per_minute: metrics.sent_per_minute,
                idle: queue_state.as_ref().is_some_and(|s| s.idle),
                current,
                desired: status.desired_replicas,
                available: target_state.available,
            },
        );
    }
    status.current_replicas = current;
    status.available_replicas = target_state.available;
    status.observed_generation = wpa.meta().generation;
    status.conditions =
        status::merge_conditions(&status.conditions, &conditions, wpa.meta().generation, now);
    write_status(wpa, ctx, status).await?;
    Ok(Action::requeue(requeue))
}

struct Prepared {
    policy: Policy,
    target: TargetRef,
    queue_redacted: String,
}

/// Everything a decision needs from the spec, validated, with the queue subscribed.
async fn prepare(
    wpa: &WorkerPodAutoScaler,
    ctx: &Context,
    key: &str,
    namespace: &str,
) -> Result<Prepared, Problem> {
    let policy = Policy::from_spec(&wpa.spec, &ctx.settings)
        .map_err(|e| Problem::new("InvalidSpec", e.to_string()))?;
    let target = TargetRef::from_spec(&wpa.spec).map_err(|m| Problem::new("InvalidSpec", m))?;
    let uri = QueueUri::parse(&wpa.spec.queue_uri)
        .map_err(|e| Problem::new("InvalidQueueURI", e.to_string()))?;
    let queue_redacted = uri.redacted();
    if !ctx.enabled.contains(&uri.kind()) {
        return Err(Problem::new(
            "QueueServiceDisabled",
            format!("{} queues are not enabled by --queue-services", uri.kind()),
        ));
    }
    let generation = wpa.meta().generation.unwrap_or(0);
    if !ctx.subscription_current(key, generation, SECRET_REFRESH) {
        let credentials = resolve_credentials(wpa, ctx, namespace).await?;
        let subscription = Subscription {
            uri,
            credentials,
            poll_interval: wpa
                .spec
                .poll_interval_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs),
            target_messages_per_worker: u64::try_from(policy.target).unwrap_or(1),
        };
        ctx.registry
            .subscribe(key, subscription)
            .map_err(|e| Problem::new("InvalidQueueConfig", e.to_string()))?;
        ctx.mark_subscribed(key, generation, &queue_redacted);
        ctx.metrics
            .poll_loops
            .set(i64::try_from(ctx.registry.active_loops()).unwrap_or(i64::MAX));
        debug!(queue = %queue_redacted, "subscribed");
    }
    Ok(Prepared {
        policy,
        target,
        queue_redacted,
    })
}

async fn resolve_credentials(
    wpa: &WorkerPodAutoScaler,
    ctx: &Context,
    namespace: &str,
) -> Result<Credentials, Problem> {
    let Some(reference) = &wpa.spec.credentials_secret_ref else {
        return Ok(Credentials::default());
    };
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get(&reference.name)
        .await
        .map_err(|e| match e {
            kube::Error::Api(status) if status.code == 404 => Problem::new(
                "SecretNotFound",
                format!(
                    "Secret {} not found in namespace {namespace}",
                    reference.name
                ),
            ),
            other => Problem::new(
                "SecretUnreadable",
                format!(
                    "cannot read Secret {}: {}",
                    reference.name,
                    short_kube_error(&other)
                ),
            ),
        })?;
    let read = |key: &str| -> Result<Option<String>, Problem> {
        match secret.data.as_ref().and_then(|d| d.get(key)) {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes.0.clone()).map(Some).map_err(|_| {
                Problem::new(
                    "SecretUnreadable",
                    format!("key {key} of Secret {} is not UTF-8", reference.name),
                )
            }),
        }
    };
    // A key the WPA names explicitly must exist: silently connecting without it would
    // only surface later as a confusing authentication failure.
    let named = [
        &reference.username_key,
        &reference.password_key,
        &reference.authorization_key,
    ];
    if let Some(key) = named
        .into_iter()
        .flatten()
        .find(|key| secret.data.as_ref().is_none_or(|d| !d.contains_key(*key)))
    {
        return Err(Problem::new(
            "SecretKeyMissing",
            format!("Secret {} has no key {key}", reference.name),
        ));
    }
    let credentials = Credentials {
        username: read(reference.username_key())?,
        password: read(reference.password_key())?,
        authorization: read(reference.authorization_key())?,
    };
    if credentials.username.is_none()
        && credentials.password.is_none()
        && credentials.authorization.is_none()
    {
        return Err(Problem::new(
            "SecretKeyMissing",
            format!(
                "Secret {} has none of the keys {}, {} or {}",
                reference.name,
                reference.username_key(),
                reference.password_key(),
                reference.authorization_key()
            ),
        ));
    }
    Ok(credentials)
}

/// kube errors can embed request bodies; keep just the status line.
fn short_kube_error(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} ({})", status.reason, status.code),
        _ => "request failed".to_string(),
    }
}

/// Time until a delayed scale-down may happen, so the WPA is looked at again right then
/// instead of at the next resync.
fn delay_remaining(history: &History, settings: &ScalerSettings, now: Timestamp) -> Duration {
    let Some(last) = history.last_scale_time() else {
        return Duration::ZERO;
    };
    let elapsed = now.duration_since(last);
    let delay = jiff::SignedDuration::try_from(settings.scale_down_delay)
        .unwrap_or(jiff::SignedDuration::MAX);
    let remaining = delay
        .checked_sub(elapsed)
        .unwrap_or(jiff::SignedDuration::ZERO);
    // practo allows the scale-down only strictly after the delay: look just past it.
    Duration::try_from(remaining).unwrap_or(Duration::ZERO) + Duration::from_millis(200)
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
            "DesiredWithinRange",
            "the desired count is within the allowed range",
        )
    }
}

async fn report_problem(
    wpa: &WorkerPodAutoScaler,
    ctx: &Context,
    problem: &Problem,
    now: Timestamp,
) -> Result<(), Error> {
    warn!(reason = problem.reason, message = %problem.message, "WPA cannot be scaled");
    publish(
        ctx,
        wpa,
        EventType::Warning,
        problem.reason,
        problem.message.clone(),
    )
    .await;
    let mut status = wpa.status.clone().unwrap_or_default();
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
    write_status(wpa, ctx, status).await
}

async fn write_status(
    wpa: &WorkerPodAutoScaler,
    ctx: &Context,
    status: WorkerPodAutoScalerStatus,
) -> Result<(), Error> {
    if !status::status_changed(wpa.status.as_ref(), &status) {
        return Ok(());
    }
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

async fn publish(
    ctx: &Context,
    wpa: &WorkerPodAutoScaler,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: "Scaling".to_string(),
        secondary: None,
    };
    // Events are best effort: failing to publish one must not fail the reconcile.
    if let Err(e) = ctx.recorder.publish(&event, &wpa.object_ref(&())).await {
        debug!(error = %e, "cannot publish event");
    }
}

impl WpaMemory {
    pub(super) fn new(wpa: &WorkerPodAutoScaler) -> Self {
        let last = wpa
            .status
            .as_ref()
            .and_then(|s| s.last_scale_time.as_ref())
            .map(|t| t.0);
        Self {
            history: History::with_last_scale_time(last),
            subscribed: None,
            own_write: None,
            queue_label: String::new(),
        }
    }

    pub(super) fn trusted_state(&self, mut state: TargetState) -> TargetState {
        let Some(write) = &self.own_write else {
            return state;
        };
        let cache_behind = match (write.produced, state.version) {
            // A version from before our write: the watch has not delivered the write yet
            // (e.g. it is reconnecting), however long that takes. Our write's version or
            // any other (a later change by someone else) means the cache knows best.
            // Numbered versions order reads: anything before our write is behind it (e.g. a
            // status update that landed between our read and our PATCH). Opaque ones only
            // tell "one of the versions our write replaced".
            (Some(produced), Some(now)) => now
                .is_older_than(produced)
                .unwrap_or_else(|| write.superseded.contains(&now)),
            _ => write.at.elapsed() < OWN_WRITE_TRUST,
        };
        if cache_behind {
            state.replicas = write.replicas;
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::super::OwnWrite;
    use super::super::target::ResourceVersion;
    use super::*;

    fn memory(own_write: Option<OwnWrite>) -> WpaMemory {
        WpaMemory {
            history: History::default(),
            subscribed: None,
            own_write,
            queue_label: String::new(),
        }
    }

    fn state(replicas: i32, version: Option<u64>) -> TargetState {
        TargetState {
            replicas,
            available: replicas,
            version: version.map(ResourceVersion::Opaque),
        }
    }

    fn at_revision(replicas: i32, revision: u64) -> TargetState {
        TargetState {
            replicas,
            available: replicas,
            version: Some(ResourceVersion::Revision(revision)),
        }
    }

    #[test]
    fn own_write_is_trusted_until_the_cache_shows_a_newer_version() {
        let write = OwnWrite {
            replicas: 9,
            produced: Some(ResourceVersion::Opaque(8)),
            superseded: vec![ResourceVersion::Opaque(5), ResourceVersion::Opaque(7)],
            // Long past the time-based trust: the versions decide, not the clock.
            at: Instant::now() - Duration::from_secs(60),
        };
        let m = memory(Some(write));
        assert_eq!(
            m.trusted_state(state(6, Some(5))).replicas,
            9,
            "cache behind"
        );
        assert_eq!(
            m.trusted_state(state(8, Some(7))).replicas,
            9,
            "cache at our previous write"
        );
        assert_eq!(m.trusted_state(state(9, Some(8))).replicas, 9, "caught up");
        assert_eq!(
            m.trusted_state(state(4, Some(10))).replicas,
            4,
            "a later change by someone else wins"
        );
    }

    #[test]
    fn numbered_versions_before_our_write_are_behind_it() {
        // Read at 5, PATCHed (producing 8); meanwhile something else wrote 6 (e.g. the
        // Deployment's status). A cache at 6 has not seen our write even though we never
        // read 6: only 8 or later has.
        let write = OwnWrite {
            replicas: 9,
            produced: Some(ResourceVersion::Revision(8)),
            superseded: vec![ResourceVersion::Revision(5)],
            at: Instant::now() - Duration::from_secs(60),
        };
        let m = memory(Some(write));
        assert_eq!(m.trusted_state(at_revision(4, 6)).replicas, 9, "behind");
        assert_eq!(m.trusted_state(at_revision(9, 8)).replicas, 9, "caught up");
        assert_eq!(
            m.trusted_state(at_revision(3, 11)).replicas,
            3,
            "a later change by someone else wins"
        );
        assert_eq!(
            ResourceVersion::parse("123"),
            ResourceVersion::Revision(123)
        );
        assert!(matches!(
            ResourceVersion::parse("a1b2"),
            ResourceVersion::Opaque(_)
        ));
    }

    #[test]
    fn without_versions_the_own_write_is_trusted_briefly() {
        let fresh = OwnWrite {
            replicas: 3,
            produced: None,
            superseded: vec![ResourceVersion::Opaque(1)],
            at: Instant::now(),
        };
        assert_eq!(
            memory(Some(fresh.clone()))
                .trusted_state(state(1, Some(1)))
                .replicas,
            3
        );
        let old = OwnWrite {
            at: Instant::now() - OWN_WRITE_TRUST - Duration::from_secs(1),
            ..fresh
        };
        assert_eq!(
            memory(Some(old)).trusted_state(state(1, Some(1))).replicas,
            1
        );
        assert_eq!(memory(None).trusted_state(state(1, Some(2))).replicas, 1);
    }
}
