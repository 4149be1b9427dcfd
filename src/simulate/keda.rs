//! `keda:<target>`: what a KEDA ScaledObject with a list-length trigger (the Redis list
//! scaler, `listLength: <target>`) does to a worker Deployment, with KEDA's and the HPA's
//! defaults.
//!
//! Modelled:
//! - KEDA polls the list every 30 s (`pollingInterval`). At 0 replicas a non-empty list
//!   (`activationListLength` 0) activates the workload: KEDA sets 1 replica. When the list
//!   has been empty on every poll for more than `cooldownPeriod` (300 s) since it was last
//!   seen non-empty (or was never seen non-empty), KEDA sets 0, whatever the HPA holds.
//! - Between those, the HPA syncs every 15 s on the list length (visible messages only:
//!   the running and prefetched tasks are not in the list) as an External metric with an
//!   AverageValue target: usage ratio = length / (target * replicas); within 10% of 1 the
//!   replicas stay, else they become ceil(length / target). Then the HPA's default
//!   behavior: scale-up +100% or +4 pods per 15 s (the larger), no scale-up stabilization,
//!   scale-down stabilization 300 s (the highest recommendation of the last 5 minutes),
//!   -100% per 15 s; min 1 (KEDA owns 0), max the WPA's maxReplicas.
//!
//! The behavior part is the project's own HPA implementation
//! ([`scaler::decide`] on a policy whose spec has an empty `behavior` block, so the HPA
//! defaults apply), fed with the HPA's tolerance-applied count as the backlog at a target of
//! one message per worker.
//!
//! Not modelled: the metrics server's caching and API latency, the HPA's readiness delays
//! for CPU metrics (irrelevant to External metrics), KEDA's fallback and
//! `advanced.horizontalPodAutoscalerConfig`, and one corner of the tolerance: the scaler's
//! recommendation applies practo's 10% tolerance to the rounded count, so where the HPA
//! would scale down by one pod from 10 or more replicas with a usage ratio just under 0.9,
//! this policy keeps the replicas (a scale-down of one pod at most, itself held by the
//! 300 s stabilization).

use crate::crd::ScalingBehavior;
use crate::scaler::{self, History, Policy, QueueSnapshot, ScalerSettings};

use super::context::{PolicyContext, PolicyError, instant};
use super::view::{ClusterView, SimPolicy};

/// The HPA controller's `--horizontal-pod-autoscaler-sync-period`.
pub const HPA_SYNC_SECONDS: f64 = 15.0;
/// KEDA's default `pollingInterval`.
pub const KEDA_POLLING_SECONDS: f64 = 30.0;
/// KEDA's default `cooldownPeriod`.
pub const KEDA_COOLDOWN_SECONDS: f64 = 300.0;
/// The HPA's `--horizontal-pod-autoscaler-tolerance`.
pub const HPA_TOLERANCE: f64 = 0.1;

pub struct Keda {
    name: String,
    target: u64,
    /// The HPA part: min 1, the WPA's max, target 1, default behavior.
    hpa: Policy,
    settings: ScalerSettings,
    history: History,
    next_poll: f64,
    last_active: Option<f64>,
}

impl Keda {
    pub fn new(target: i32, ctx: &PolicyContext<'_>) -> Result<Self, PolicyError> {
        let name = format!("keda:{target}");
        let mut spec = ctx.wpa.spec.clone();
        spec.min_replicas = 1.min(spec.max_replicas);
        spec.target_messages_per_worker = 1;
        spec.seconds_to_process_one_job = None;
        spec.max_disruption = None;
        spec.behavior = Some(ScalingBehavior::default());
        // The HPA has no maxDisruption: 100% lets its policies alone limit a scale-down.
        let settings = ScalerSettings {
            default_max_disruption: scaler::MaxDisruption::Percent(100),
            ..ctx.settings.clone()
        };
        let hpa = Policy::from_spec(&spec, &settings).map_err(|source| PolicyError::Spec {
            name: name.clone(),
            source,
        })?;
        Ok(Keda {
            name,
            target: u64::try_from(target).unwrap_or(1).max(1),
            hpa,
            settings,
            history: History::default(),
            next_poll: 0.0,
            last_active: None,
        })
    }
}

/// The HPA's replica count for an AverageValue External metric (`GetExternalPerPodMetricReplicas`):
/// the current count while the usage ratio is within the tolerance of 1, else
/// ceil(metric / target).
pub fn hpa_replicas(metric: u64, target: u64, current: i32) -> i64 {
    let current = i64::from(current.max(0));
    let target = target.max(1);
    let ratio = metric as f64 / (target as f64 * current as f64);
    if current > 0 && (1.0 - ratio).abs() <= HPA_TOLERANCE {
        current
    } else {
        i64::try_from(metric.div_ceil(target)).unwrap_or(i64::MAX)
    }
}

impl SimPolicy for Keda {
    fn name(&self) -> &str {
        &self.name
    }

    fn period(&self) -> f64 {
        HPA_SYNC_SECONDS
    }

    fn decide(&mut self, view: &ClusterView<'_>) -> i32 {
        let now = view.now;
        let length = view.queue.visible;
        let current = view.replicas;
        // KEDA's own loop: activation and scale to zero.
        if now >= self.next_poll {
            self.next_poll += KEDA_POLLING_SECONDS;
            if length > 0 {
                self.last_active = Some(now);
                if current == 0 {
                    return 1;
                }
            } else if current > 0
                // KEDA scales to zero once lastActiveTime + cooldownPeriod is strictly in the
                // past, or at once when it never saw the trigger active.
                && self
                    .last_active
                    .is_none_or(|at| now - at > KEDA_COOLDOWN_SECONDS)
            {
                self.history = History::default();
                return 0;
            }
        }
        // The HPA leaves a workload at 0 alone.
        if current == 0 {
            return 0;
        }
        let wanted = hpa_replicas(length, self.target, current);
        let queue = QueueSnapshot {
            visible: u64::try_from(wanted).unwrap_or(0),
            in_flight: 0,
            sent_per_minute: 0.0,
            idle: false,
        };
        let at = instant(now);
        let decision = scaler::decide(
            &self.hpa,
            &queue,
            current,
            at,
            &self.history,
            &self.settings,
        );
        self.history.record(&decision, current, at);
        decision.desired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpa_tolerance_is_on_the_usage_ratio() {
        // 21 messages, target 5, 4 replicas: ratio 1.05, within the tolerance: stay.
        assert_eq!(hpa_replicas(21, 5, 4), 4);
        // 11 on 2: a ratio of 1.1 in float64 is 0.10000000000000009 from 1, beyond the
        // tolerance, in Go as here: ceil(11 / 5) = 3.
        assert_eq!(hpa_replicas(11, 5, 2), 3);
        // 12: ratio 1.2: ceil(12 / 5) = 3.
        assert_eq!(hpa_replicas(12, 5, 2), 3);
        // Empty: ratio 0: the count goes to 0 (min and KEDA take it from there).
        assert_eq!(hpa_replicas(0, 5, 4), 0);
        // At 0 replicas the ratio is meaningless: the plain quotient.
        assert_eq!(hpa_replicas(7, 5, 0), 2);
    }
}
