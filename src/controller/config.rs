//! Flags of `workerpodautoscaler run`.
//!
//! practo's flags keep their names and defaults so a practo Deployment manifest keeps working
//! after an image swap; every flag can also be set through `WPA_<FLAG>` in the environment
//! (plus `KUBECONFIG` and `AWS_REGIONS`, which practo users already set).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::drain::DrainSettings;
use super::poll_flags::PollFlags;
use crate::queue::registry::PollSettings;
use crate::queue::{ProviderKind, ProviderOptions, kinds};
use crate::scaler::{MaxDisruption, ScalerSettings};

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Path of the kube config file; in-cluster config when empty.
    #[arg(long, env = "KUBECONFIG", default_value = "")]
    pub kube_config: String,
    /// Seconds between full reconciles of every WPA.
    #[arg(long, env = "WPA_RESYNC_PERIOD", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub resync_period: u64,
    /// WPAs reconciled concurrently (an object is never reconciled twice at once).
    #[arg(long, env = "WPA_THREADS", default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    pub wpa_threads: u16,
    /// maxDisruption for WPAs that do not set one: a count or a percentage.
    #[arg(long, env = "WPA_DEFAULT_MAX_DISRUPTION", default_value = "100%")]
    pub wpa_default_max_disruption: String,
    /// Seconds a scale-down waits after the last scale activity (WPAs without `behavior`).
    #[arg(
        long,
        env = "WPA_SCALE_DOWN_DELAY_AFTER_LAST_SCALE_ACTIVITY",
        default_value_t = 600
    )]
    pub scale_down_delay_after_last_scale_activity: u64,
    /// Comma-separated AWS regions; the first is the default for SQS-compatible endpoints
    /// whose queueURI names no region (amazonaws.com URLs carry their own).
    #[arg(long, env = "AWS_REGIONS", default_value = "ap-south-1,ap-southeast-1")]
    pub aws_regions: String,
    /// WaitTimeSeconds of the SQS receive long poll at zero workers (0-20; 0 turns it off).
    #[arg(long, env = "WPA_SQS_LONG_POLL_INTERVAL", default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=20))]
    pub sqs_long_poll_interval: u32,
    /// Accepted for compatibility with practo; beanstalkd is polled with stats-tube only.
    #[arg(long, env = "WPA_BEANSTALK_LONG_POLL_INTERVAL", default_value_t = 20)]
    pub beanstalk_long_poll_interval: u64,
    /// Comma-separated providers this controller serves (default: every provider).
    #[arg(long, env = "WPA_QUEUE_SERVICES", default_value_t = kinds::default_services())]
    pub queue_services: String,
    /// Each provider's poll interval flag (`--sqs-short-poll-interval`,
    /// `--redis-poll-interval`, ...), from the provider table.
    #[command(flatten)]
    pub poll: PollFlags,
    /// Address of /metrics, /healthz and /readyz: ":8787", "127.0.0.1:8787" or "8787".
    #[arg(long, env = "WPA_METRICS_PORT", default_value = ":8787")]
    pub metrics_port: String,
    /// Kubernetes API requests per second (sustained).
    #[arg(long, env = "WPA_K8S_API_QPS", default_value_t = 5.0)]
    pub k8s_api_qps: f64,
    /// Kubernetes API request burst.
    #[arg(long, env = "WPA_K8S_API_BURST", default_value_t = 10)]
    pub k8s_api_burst: u32,
    /// Scale writes per second (sustained), a budget of their own beside --k8s-api-qps, so
    /// that many queues filling at once are scaled at once. 0: scale writes are not paced.
    #[arg(long, env = "WPA_K8S_API_SCALE_QPS", default_value_t = 50.0)]
    pub k8s_api_scale_qps: f64,
    /// Scale writes allowed at once before their pacing starts.
    #[arg(long, env = "WPA_K8S_API_SCALE_BURST", default_value_t = 100)]
    pub k8s_api_scale_burst: u32,
    /// Watch WPAs in this namespace only; all namespaces when empty.
    #[arg(long, env = "WPA_NAMESPACE", default_value = "")]
    pub namespace: String,
    /// Seconds the backlog must stay empty (and no receives be seen) before workers count as idle.
    #[arg(long, env = "WPA_IDLE_WINDOW", default_value_t = 60)]
    pub idle_window: u64,
    /// Before a scale-in removes pods, tell their Celery workers (on Redis or RabbitMQ) or
    /// Sidekiq processes to stop taking tasks and wait until they hold none (bounded by
    /// --drain-timeout). `=false` turns it off: the pods are removed at once, as before.
    #[arg(
        long,
        env = "WPA_DRAIN_BEFORE_SCALE_IN",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub drain_before_scale_in: bool,
    /// Seconds a drain may take before the scale-in goes ahead without the pods still busy
    /// (they are kept; Sidekiq's, which cannot take work again, are removed). Default: the pods' terminationGracePeriodSeconds (30 if unset).
    #[arg(long, env = "WPA_DRAIN_TIMEOUT", value_parser = clap::value_parser!(u64).range(1..))]
    pub drain_timeout: Option<u64>,
    /// As practo: when a queue is empty and every WPA on it is at zero replicas, wait for
    /// the first message in a ReceiveMessage long poll (VisibilityTimeout 0) instead of
    /// sleeping until the next poll. Each message that arrives then is received once more
    /// (counts towards a redrive policy's maxReceiveCount). `=false` turns it off.
    #[arg(
        long,
        env = "WPA_SQS_RECEIVE_LONG_POLL",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub sqs_receive_long_poll: bool,
    /// Read SQS receive and send activity from CloudWatch (practo's source): receives over
    /// the last 10 minutes keep workers from counting as idle, sends give the rate
    /// secondsToProcessOneJob needs. Needs cloudwatch:GetMetricData.
    #[arg(long, env = "WPA_SQS_CLOUDWATCH", default_value_t = false)]
    pub sqs_cloudwatch: bool,
    /// CloudWatch endpoint URL for --sqs-cloudwatch (VPC endpoint, LocalStack).
    #[arg(long, env = "WPA_SQS_CLOUDWATCH_ENDPOINT")]
    pub sqs_cloudwatch_endpoint: Option<String>,
    /// Compute and report decisions for every WPA without scaling anything.
    #[arg(long, env = "WPA_DRY_RUN", default_value_t = false)]
    pub dry_run: bool,
    /// Run for leadership through a coordination.k8s.io Lease; only the leader writes.
    #[arg(long, env = "WPA_LEADER_ELECT", default_value_t = false)]
    pub leader_elect: bool,
    /// Namespace of the leader Lease (default: $POD_NAMESPACE, else "default").
    #[arg(long, env = "WPA_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "WPA_LEADER_ELECTION_LEASE_NAME",
        default_value = "workerpodautoscaler"
    )]
    pub leader_election_lease_name: String,
    /// Seconds a leader's Lease stays valid without renewal.
    #[arg(long, env = "WPA_LEADER_ELECTION_LEASE_DURATION", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..))]
    pub leader_election_lease_duration: u64,
    /// Log format.
    #[arg(long, env = "WPA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log level or tracing filter (RUST_LOG overrides it).
    #[arg(long, env = "WPA_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A flag with a value that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("--{flag}: {problem}")]
pub struct FlagError {
    pub flag: &'static str,
    pub problem: String,
}

impl RunArgs {
    /// The admin server's socket address from practo's `--metrics-port` syntax.
    pub fn metrics_addr(&self) -> Result<SocketAddr, FlagError> {
        let raw = self.metrics_port.trim();
        let candidate = if let Some(port) = raw.strip_prefix(':') {
            format!("0.0.0.0:{port}")
        } else if raw.chars().all(|c| c.is_ascii_digit()) {
            format!("0.0.0.0:{raw}")
        } else {
            raw.to_string()
        };
        candidate.parse().map_err(|_| FlagError {
            flag: "metrics-port",
            problem: format!("expected \":PORT\" or \"HOST:PORT\", got {raw:?}"),
        })
    }

    pub fn scaler_settings(&self) -> Result<ScalerSettings, FlagError> {
        let default_max_disruption: MaxDisruption = self
            .wpa_default_max_disruption
            .parse()
            .map_err(|e: crate::scaler::SpecError| FlagError {
                flag: "wpa-default-max-disruption",
                problem: e.to_string(),
            })?;
        Ok(ScalerSettings {
            default_max_disruption,
            scale_down_delay: Duration::from_secs(self.scale_down_delay_after_last_scale_activity),
        })
    }

    /// Providers enabled by `--queue-services`.
    pub fn enabled_providers(&self) -> Result<Vec<ProviderKind>, FlagError> {
        let mut kinds = Vec::new();
        for name in self
            .queue_services
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let Some(kind) = ProviderKind::from_name(name) else {
                return Err(FlagError {
                    flag: "queue-services",
                    problem: format!(
                        "unknown service {name:?} (known: {})",
                        kinds::service_names()
                    ),
                });
            };
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        if kinds.is_empty() {
            return Err(FlagError {
                flag: "queue-services",
                problem: "no queue service enabled".to_string(),
            });
        }
        Ok(kinds)
    }

    pub fn provider_options(&self) -> ProviderOptions {
        ProviderOptions {
            aws_region: self
                .aws_regions
                .split(',')
                .map(str::trim)
                .find(|r| !r.is_empty())
                .map(str::to_string),
            sqs_receive_long_poll: self.sqs_receive_long_poll,
            sqs_long_poll_seconds: self.sqs_long_poll_interval,
            sqs_cloudwatch: self.sqs_cloudwatch,
            sqs_cloudwatch_endpoint: self.sqs_cloudwatch_endpoint.clone(),
            idle_window: Duration::from_secs(self.idle_window),
            ..ProviderOptions::default()
        }
    }

    /// Every provider's poll interval, as the flags set them.
    pub fn poll_settings(&self) -> PollSettings {
        ProviderKind::all().fold(PollSettings::default(), |settings, kind| {
            settings.with_interval(kind, self.poll_interval(kind))
        })
    }

    /// Default poll interval of each provider.
    pub fn poll_interval(&self, kind: ProviderKind) -> Duration {
        self.poll.interval(kind)
    }

    /// `--drain-before-scale-in` and `--drain-timeout`.
    pub fn drain_settings(&self) -> DrainSettings {
        DrainSettings {
            enabled: self.drain_before_scale_in,
            timeout: self.drain_timeout.map(Duration::from_secs),
        }
    }

    pub fn lease_namespace(&self) -> String {
        self.leader_election_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| "default".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: RunArgs,
    }

    fn parse(flags: &[&str]) -> RunArgs {
        let mut argv = vec!["run"];
        argv.extend_from_slice(flags);
        Wrapper::try_parse_from(argv).expect("flags parse").args
    }

    #[test]
    fn practo_defaults_are_kept() {
        let args = parse(&[]);
        assert_eq!(args.resync_period, 20);
        assert_eq!(args.wpa_threads, 10);
        assert_eq!(args.wpa_default_max_disruption, "100%");
        assert_eq!(args.scale_down_delay_after_last_scale_activity, 600);
        assert_eq!(args.sqs_long_poll_interval, 20);
        assert_eq!(
            args.poll_interval(ProviderKind::Beanstalkd),
            Duration::from_secs(1)
        );
        assert!(args.sqs_receive_long_poll);
        assert_eq!(args.metrics_port, ":8787");
        assert_eq!(args.k8s_api_qps, 5.0);
        assert_eq!(args.k8s_api_burst, 10);
        assert_eq!(args.k8s_api_scale_qps, 50.0);
        assert_eq!(args.k8s_api_scale_burst, 100);
        assert_eq!(args.namespace, "");
        assert_eq!(
            args.poll_interval(ProviderKind::Redis),
            Duration::from_secs(1)
        );
        assert_eq!(
            args.poll_interval(ProviderKind::Sqs),
            Duration::from_secs(20)
        );
    }

    #[test]
    fn practo_deployment_flags_parse() {
        let args = parse(&[
            "--kube-config=/etc/kube/config",
            "--resync-period=20",
            "--wpa-threads=10",
            "--aws-regions=ap-south-1",
            "--sqs-short-poll-interval=20",
            "--sqs-long-poll-interval=20",
            "--wpa-default-max-disruption=0",
            "--queue-services=sqs,beanstalkd",
            "--k8s-api-qps=5.0",
            "--k8s-api-burst=10",
            "--scale-down-delay-after-last-scale-activity=300",
            "--namespace=workers",
            "--metrics-port=:9090",
        ]);
        assert_eq!(args.kube_config, "/etc/kube/config");
        assert_eq!(
            args.enabled_providers(),
            Ok(vec![ProviderKind::Sqs, ProviderKind::Beanstalkd])
        );
        assert_eq!(
            args.metrics_addr(),
            Ok("0.0.0.0:9090".parse().expect("addr"))
        );
        assert_eq!(
            args.provider_options().aws_region.as_deref(),
            Some("ap-south-1")
        );
        let settings = args.scaler_settings().expect("settings");
        assert_eq!(settings.scale_down_delay, Duration::from_secs(300));
    }

    #[test]
    fn each_provider_rows_interval_flag_is_a_flag_with_the_rows_default() {
        use clap::CommandFactory;
        let command = Wrapper::command();
        let defaults = parse(&[]);
        for kind in ProviderKind::all() {
            let spec = kind.spec();
            let long = spec.interval_flag.trim_start_matches("--");
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(long))
                .unwrap_or_else(|| panic!("no flag {}", spec.interval_flag));
            let shown: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            assert_eq!(
                shown,
                vec![spec.default_interval.as_secs().to_string()],
                "{}",
                spec.interval_flag
            );
            assert_eq!(defaults.poll_interval(kind), spec.default_interval);
            // The flag really sets this provider's interval.
            let set = parse(&[&format!("{}=7", spec.interval_flag)]);
            assert_eq!(
                set.poll_settings().default_interval(kind),
                Duration::from_secs(7)
            );
        }
    }

    #[test]
    fn sqs_receive_long_poll_flag_forms() {
        assert!(parse(&["--sqs-receive-long-poll"]).sqs_receive_long_poll);
        assert!(parse(&["--sqs-receive-long-poll=true"]).sqs_receive_long_poll);
        assert!(!parse(&["--sqs-receive-long-poll=false"]).sqs_receive_long_poll);
        // WaitTimeSeconds 0 is how practo users turned it off; the SQS provider honours it.
        let opts = parse(&["--sqs-long-poll-interval=0"]).provider_options();
        assert_eq!(opts.sqs_long_poll_seconds, 0);
    }

    #[test]
    fn drain_flags() {
        let defaults = parse(&[]).drain_settings();
        assert!(defaults.enabled, "drain before scale-in is on by default");
        assert_eq!(defaults.timeout, None, "the pods' grace period by default");
        let set = parse(&["--drain-before-scale-in=false", "--drain-timeout=45"]).drain_settings();
        assert!(!set.enabled);
        assert_eq!(set.timeout, Some(Duration::from_secs(45)));
        assert!(parse(&["--drain-before-scale-in"]).drain_before_scale_in);
        assert!(Wrapper::try_parse_from(["run", "--drain-timeout=0"]).is_err());
    }

    #[test]
    fn bad_flag_values_are_clear_errors() {
        let args = parse(&["--metrics-port=localhost", "--queue-services=sqs,kafka"]);
        assert!(
            args.metrics_addr()
                .expect_err("bad addr")
                .to_string()
                .contains("--metrics-port")
        );
        assert!(
            args.enabled_providers()
                .expect_err("kafka")
                .to_string()
                .contains("kafka")
        );
        let args = parse(&["--wpa-default-max-disruption=lots"]);
        assert!(args.scaler_settings().is_err());
        assert!(Wrapper::try_parse_from(["run", "--wpa-threads=0"]).is_err());
        assert!(Wrapper::try_parse_from(["run", "--sqs-long-poll-interval=21"]).is_err());
    }

    #[test]
    fn metrics_port_forms() {
        assert_eq!(
            parse(&["--metrics-port=8787"]).metrics_addr(),
            Ok("0.0.0.0:8787".parse().expect("addr"))
        );
        assert_eq!(
            parse(&["--metrics-port=127.0.0.1:0"]).metrics_addr(),
            Ok("127.0.0.1:0".parse().expect("addr"))
        );
    }
}
