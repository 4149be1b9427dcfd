//! The scaling policy of one WPA, checked and resolved from its spec, and the controller-wide
//! settings it falls back on.
//!
//! `Policy::from_spec` re-checks every bound the CRD schema declares: an old CRD version, a
//! disabled validation or a direct etcd write can let a bad spec through, and the scaler must
//! refuse it with a message that names the field instead of doing arithmetic on it.

use std::time::Duration;

use crate::crd::{ScalingBehavior, ScalingRules, WorkerPodAutoScalerSpec};

use super::disruption::MaxDisruption;
use super::spec_error::{
    MAX_PERIOD_SECONDS, MAX_STABILIZATION_WINDOW_SECONDS, MAX_WAIT_SECONDS, SpecError,
};

/// Controller-wide settings (flags).
#[derive(Debug, Clone, PartialEq)]
pub struct ScalerSettings {
    /// `--wpa-default-max-disruption`, used when a WPA sets no `maxDisruption`.
    pub default_max_disruption: MaxDisruption,
    /// `--scale-down-delay-after-last-scale-activity`: no scale-down this soon after the last
    /// scale (only for WPAs without `behavior`).
    pub scale_down_delay: Duration,
}

impl Default for ScalerSettings {
    /// practo's defaults: 100% and 600 s.
    fn default() -> Self {
        ScalerSettings {
            default_max_disruption: MaxDisruption::default(),
            scale_down_delay: Duration::from_secs(600),
        }
    }
}

/// Everything `decide` needs from one WPA spec, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub min: i32,
    pub max: i32,
    /// `targetMessagesPerWorker`.
    pub target: i32,
    /// 0 = the rate floor is off.
    pub seconds_to_process_one_job: f64,
    pub max_disruption: MaxDisruption,
    pub behavior: Option<ScalingBehavior>,
    /// `maxWaitSeconds`: size on wait time (see [`super::wait`]).
    pub max_wait: Option<Duration>,
}

impl Policy {
    /// Check a spec and resolve its defaults (`maxDisruption` from the settings).
    pub fn from_spec(
        spec: &WorkerPodAutoScalerSpec,
        settings: &ScalerSettings,
    ) -> Result<Policy, SpecError> {
        if spec.min_replicas < 0 {
            return Err(SpecError::MinReplicas(spec.min_replicas));
        }
        if spec.max_replicas < 1 {
            return Err(SpecError::MaxReplicas(spec.max_replicas));
        }
        if spec.min_replicas > spec.max_replicas {
            return Err(SpecError::MinAboveMax {
                min: spec.min_replicas,
                max: spec.max_replicas,
            });
        }
        if spec.target_messages_per_worker < 1 {
            return Err(SpecError::TargetMessagesPerWorker(
                spec.target_messages_per_worker,
            ));
        }
        let seconds = spec.seconds_to_process_one_job.unwrap_or(0.0);
        if !seconds.is_finite() || seconds < 0.0 {
            return Err(SpecError::SecondsToProcessOneJob(seconds));
        }
        let max_disruption = match &spec.max_disruption {
            Some(value) => MaxDisruption::try_from(value)?,
            None => settings.default_max_disruption,
        };
        if let Some(behavior) = &spec.behavior {
            check_rules("spec.behavior.scaleUp", behavior.scale_up.as_ref())?;
            check_rules("spec.behavior.scaleDown", behavior.scale_down.as_ref())?;
        }
        let max_wait = match spec.max_wait_seconds {
            None => None,
            Some(seconds) if (1..=MAX_WAIT_SECONDS).contains(&seconds) => {
                Some(Duration::from_secs(u64::from(seconds.unsigned_abs())))
            }
            Some(seconds) => return Err(SpecError::MaxWaitSeconds(seconds)),
        };
        Ok(Policy {
            min: spec.min_replicas,
            max: spec.max_replicas,
            target: spec.target_messages_per_worker,
            seconds_to_process_one_job: seconds,
            max_disruption,
            behavior: spec.behavior.clone(),
            max_wait,
        })
    }
}

fn check_rules(path: &str, rules: Option<&ScalingRules>) -> Result<(), SpecError> {
    let Some(rules) = rules else {
        return Ok(());
    };
    if let Some(window) = rules.stabilization_window_seconds
        && !(0..=MAX_STABILIZATION_WINDOW_SECONDS).contains(&window)
    {
        return Err(SpecError::StabilizationWindowSeconds {
            field: format!("{path}.stabilizationWindowSeconds"),
            value: window,
        });
    }
    for (i, policy) in rules.policies.iter().flatten().enumerate() {
        if policy.value < 1 {
            return Err(SpecError::PolicyValue {
                field: format!("{path}.policies[{i}].value"),
                value: policy.value,
            });
        }
        if !(1..=MAX_PERIOD_SECONDS).contains(&policy.period_seconds) {
            return Err(SpecError::PeriodSeconds {
                field: format!("{path}.policies[{i}].periodSeconds"),
                value: policy.period_seconds,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{PolicyType, ScalingPolicy};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn spec() -> WorkerPodAutoScalerSpec {
        WorkerPodAutoScalerSpec {
            min_replicas: 1,
            max_replicas: 10,
            max_disruption: None,
            queue_uri: Some("https://sqs.ap-south-1.amazonaws.com/123/q".into()),
            queue_uris: None,
            deployment_name: Some("worker".into()),
            replica_set_name: None,
            scale_target_ref: None,
            target_messages_per_worker: 100,
            seconds_to_process_one_job: None,
            behavior: None,
            dry_run: None,
            poll_interval_seconds: None,
            credentials_secret_ref: None,
            worker_signal: None,
            max_wait_seconds: None,
        }
    }

    fn rules(window: Option<i32>, value: i32, period: i32) -> ScalingRules {
        ScalingRules {
            stabilization_window_seconds: window,
            select_policy: None,
            policies: Some(vec![ScalingPolicy {
                policy_type: PolicyType::Pods,
                value,
                period_seconds: period,
            }]),
        }
    }

    fn err_of(spec: &WorkerPodAutoScalerSpec) -> String {
        match Policy::from_spec(spec, &ScalerSettings::default()) {
            Ok(p) => panic!("expected an error, got {p:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn max_wait_seconds_is_checked() {
        let mut s = spec();
        s.max_wait_seconds = Some(30);
        let p = Policy::from_spec(&s, &ScalerSettings::default()).expect("valid");
        assert_eq!(p.max_wait, Some(Duration::from_secs(30)));
        for bad in [0, -5, 86_401] {
            s.max_wait_seconds = Some(bad);
            assert!(err_of(&s).contains("spec.maxWaitSeconds"), "{bad}");
        }
    }

    #[test]
    fn accepts_a_valid_spec_and_resolves_defaults() {
        let mut s = spec();
        s.seconds_to_process_one_job = Some(0.5);
        let settings = ScalerSettings {
            default_max_disruption: MaxDisruption::Count(3),
            scale_down_delay: Duration::from_secs(1),
        };
        let p = Policy::from_spec(&s, &settings);
        assert_eq!(
            p,
            Ok(Policy {
                max_wait: None,
                min: 1,
                max: 10,
                target: 100,
                seconds_to_process_one_job: 0.5,
                max_disruption: MaxDisruption::Count(3),
                behavior: None,
            })
        );
        s.max_disruption = Some(IntOrString::String("20%".into()));
        assert_eq!(
            Policy::from_spec(&s, &settings).map(|p| p.max_disruption),
            Ok(MaxDisruption::Percent(20))
        );
    }

    #[test]
    fn settings_default_is_practo() {
        let d = ScalerSettings::default();
        assert_eq!(d.default_max_disruption, MaxDisruption::Percent(100));
        assert_eq!(d.scale_down_delay, Duration::from_secs(600));
    }

    #[test]
    fn rejects_bad_replica_bounds() {
        let mut s = spec();
        s.min_replicas = -1;
        assert!(err_of(&s).contains("spec.minReplicas"));
        let mut s = spec();
        s.max_replicas = 0;
        assert!(err_of(&s).contains("spec.maxReplicas"));
        let mut s = spec();
        s.min_replicas = 5;
        s.max_replicas = 4;
        assert_eq!(
            err_of(&s),
            "spec.minReplicas (5) must not exceed spec.maxReplicas (4)"
        );
        let mut s = spec();
        s.min_replicas = 0;
        s.max_replicas = 1;
        assert!(Policy::from_spec(&s, &ScalerSettings::default()).is_ok());
    }

    #[test]
    fn rejects_bad_target_and_seconds() {
        let mut s = spec();
        s.target_messages_per_worker = 0;
        assert!(err_of(&s).contains("spec.targetMessagesPerWorker"));
        for bad in [-0.1, f64::NAN, f64::INFINITY] {
            let mut s = spec();
            s.seconds_to_process_one_job = Some(bad);
            assert!(err_of(&s).contains("spec.secondsToProcessOneJob"), "{bad}");
        }
    }

    #[test]
    fn rejects_bad_max_disruption() {
        let mut s = spec();
        s.max_disruption = Some(IntOrString::String("150%".into()));
        assert!(err_of(&s).contains("maxDisruption"));
        s.max_disruption = Some(IntOrString::Int(-2));
        assert!(err_of(&s).contains("maxDisruption"));
    }

    #[test]
    fn rejects_bad_behavior() {
        let cases = [
            (
                rules(Some(-1), 1, 15),
                "spec.behavior.scaleUp.stabilizationWindowSeconds",
            ),
            (
                rules(Some(3601), 1, 15),
                "spec.behavior.scaleUp.stabilizationWindowSeconds",
            ),
            (
                rules(None, 0, 15),
                "spec.behavior.scaleUp.policies[0].value",
            ),
            (
                rules(None, 1, 0),
                "spec.behavior.scaleUp.policies[0].periodSeconds",
            ),
            (
                rules(None, 1, 1801),
                "spec.behavior.scaleUp.policies[0].periodSeconds",
            ),
        ];
        for (r, field) in cases {
            let mut s = spec();
            s.behavior = Some(ScalingBehavior {
                scale_up: Some(r.clone()),
                scale_down: None,
            });
            assert!(err_of(&s).contains(field), "{field}");
            let mut s = spec();
            s.behavior = Some(ScalingBehavior {
                scale_up: None,
                scale_down: Some(r),
            });
            let down = field.replace("scaleUp", "scaleDown");
            assert!(err_of(&s).contains(&down), "{down}");
        }
        // Bounds themselves are fine.
        let mut s = spec();
        s.behavior = Some(ScalingBehavior {
            scale_up: Some(rules(Some(0), 1, 1)),
            scale_down: Some(rules(Some(3600), 1, 1800)),
        });
        assert!(Policy::from_spec(&s, &ScalerSettings::default()).is_ok());
    }
}
