//! Prometheus metrics. practo's metric names and labels (name, namespace, queue_name) are
//! kept so existing dashboards work; new metrics follow the same style.

use std::time::Duration;

use prometheus::{CounterVec, Encoder, HistogramOpts, HistogramVec, Opts, Registry, TextEncoder};

use crate::queue::registry::PollObserver;
use crate::queue::{ProviderKind, QueueError};

use super::wpa_gauges::WpaGaugeTable;

const WPA_LABELS: [&str; 3] = ["name", "namespace", "queue_name"];

/// Every metric the controller exports, registered in its own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub loop_duration: HistogramVec,
    pub loop_count_success: CounterVec,
    /// wpa_queue_messages, wpa_worker_desired and the other per-WPA gauges.
    wpa_gauges: WpaGaugeTable,
    pub scale_operations: CounterVec,
    pub reconcile_errors: CounterVec,
    pub reconcile_duration: HistogramVec,
    pub poll_errors: CounterVec,
    pub poll_duration: HistogramVec,
    pub poll_loops: prometheus::IntGauge,
    /// Seconds Kubernetes API requests waited for the client-side pacing, by kind.
    pub api_pacing_wait: CounterVec,
    /// Kubernetes API requests sent through the client-side pacing, by kind.
    pub api_requests: CounterVec,
    /// WPA statuses waiting to be written.
    pub status_writes_pending: prometheus::IntGauge,
    /// The target's pods by what their workers report (busy, idle, unknown).
    pub worker_pods: prometheus::IntGaugeVec,
    /// Busy pods a scale-down kept.
    pub busy_pods_protected: CounterVec,
    /// Broker worker-event listeners running.
    pub worker_listeners: prometheus::IntGauge,
    /// Pods being drained before a scale-in removes them, per WPA.
    pub draining_pods: prometheus::IntGaugeVec,
    /// Sizing on wait time, per WPA with `maxWaitSeconds` (see [`WAIT_GAUGES`]).
    pub wait: prometheus::GaugeVec,
}

/// The `wpa_wait` gauge's `figure` label values, in the order of [`WaitGauges::values`].
pub const WAIT_GAUGES: [&str; 6] = [
    "predicted_wait_seconds",
    "target_wait_seconds",
    "arrivals_per_second",
    "throughput_per_worker_per_second",
    "needed_replicas",
    "held_tasks",
];

/// The figures of a WPA sized on wait time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WaitGauges {
    /// -1 when the workers cannot keep up (waits grow).
    pub predicted_wait_seconds: f64,
    pub target_wait_seconds: f64,
    pub arrivals_per_second: f64,
    pub throughput_per_worker: f64,
    pub needed_replicas: f64,
    pub held_tasks: f64,
}

impl WaitGauges {
    fn values(&self) -> [f64; 6] {
        [
            self.predicted_wait_seconds,
            self.target_wait_seconds,
            self.arrivals_per_second,
            self.throughput_per_worker,
            self.needed_replicas,
            self.held_tasks,
        ]
    }
}

/// The label values of one WPA.
pub struct WpaLabels<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub queue_name: &'a str,
}

impl WpaLabels<'_> {
    fn values(&self) -> [&str; 3] {
        [self.name, self.namespace, self.queue_name]
    }
}

/// A WPA's gauges at the end of a reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct WpaGauges {
    /// Each queue's redacted URI and backlog, for a WPA that watches several (else empty).
    pub per_queue: Vec<(String, u64)>,
    pub messages: u64,
    pub in_flight: Option<u64>,
    pub sent_per_minute: Option<u64>,
    pub idle: bool,
    pub current: i32,
    pub desired: i32,
    pub available: i32,
    /// The target's pods by what their workers report, where there is a worker signal.
    pub workers: Option<crate::scaler::WorkerActivity>,
    /// Sizing on wait time, once learned.
    pub wait: Option<WaitGauges>,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<CounterVec, prometheus::Error> {
                let c = CounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let histogram =
            |name: &str, help: &str, labels: &[&str]| -> Result<HistogramVec, prometheus::Error> {
                let buckets = vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ];
                let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };
        Ok(Self {
            loop_duration: histogram(
                "wpa_controller_loop_duration_seconds",
                "Time taken by one reconcile of a WPA",
                &WPA_LABELS,
            )?,
            loop_count_success: counter(
                "wpa_controller_loop_count_success",
                "Successful reconciles of a WPA",
                &WPA_LABELS,
            )?,
            wpa_gauges: WpaGaugeTable::default(),
            scale_operations: counter(
                "wpa_scale_operations_total",
                "Scale operations performed",
                &["name", "namespace", "queue_name", "direction"],
            )?,
            reconcile_errors: counter(
                "wpa_reconcile_errors_total",
                "Reconciles that ended in an error",
                &["name", "namespace"],
            )?,
            reconcile_duration: histogram(
                "wpa_reconcile_duration_seconds",
                "Reconcile latency",
                &["namespace"],
            )?,
            poll_errors: counter(
                "wpa_queue_poll_errors_total",
                "Failed queue polls",
                &["provider", "queue_name"],
            )?,
            poll_duration: histogram(
                "wpa_queue_poll_duration_seconds",
                "Queue poll latency",
                &["provider"],
            )?,
            api_pacing_wait: counter(
                "wpa_k8s_api_pacing_wait_seconds_total",
                "Seconds Kubernetes API requests waited for the client-side pacing \
                 (--k8s-api-qps), by kind: scale, other (reads, watches, leases), event, status",
                &["kind"],
            )?,
            api_requests: counter(
                "wpa_k8s_api_requests_total",
                "Kubernetes API requests sent through the client-side pacing, by kind",
                &["kind"],
            )?,
            status_writes_pending: {
                let g = prometheus::IntGauge::new(
                    "wpa_status_writes_pending",
                    "WPA statuses decided but not written yet (status writes come last in the \
                     API budget; a WPA's newer status replaces its unwritten one)",
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            worker_pods: {
                let g = prometheus::IntGaugeVec::new(
                    Opts::new(
                        "wpa_worker_pods",
                        "The target's pods by what their workers report: busy (running tasks), \
                         idle, unknown (no report); only for WPAs with a worker signal",
                    ),
                    &["name", "namespace", "state"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            wait: {
                let g = prometheus::GaugeVec::new(
                    Opts::new(
                        "wpa_wait",
                        "Sizing on wait time (WPAs with maxWaitSeconds, once learned): the \
                         predicted wait (-1: the workers cannot keep up), the target, task \
                         arrivals per second, tasks per second one worker finishes, the \
                         replicas the target needs, tasks held by busy workers",
                    ),
                    &["name", "namespace", "figure"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            draining_pods: {
                let g = prometheus::IntGaugeVec::new(
                    Opts::new(
                        "wpa_draining_pods",
                        "Pods whose Celery workers are being drained (told to stop taking \
                         tasks) before a scale-in removes them",
                    ),
                    &["name", "namespace"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            busy_pods_protected: counter(
                "wpa_busy_pods_protected_total",
                "Busy pods kept by a scale-down (their deletion cost set high, the count held)",
                &["name", "namespace"],
            )?,
            worker_listeners: {
                let g = prometheus::IntGauge::new(
                    "wpa_worker_event_listeners",
                    "Brokers whose worker events are being listened to (one each, shared)",
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            poll_loops: {
                let g = prometheus::IntGauge::new(
                    "wpa_queue_poll_loops",
                    "Distinct queues being polled (one loop each, shared by the WPAs on it)",
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            registry,
        })
    }

    pub fn set_gauges(&self, labels: &WpaLabels<'_>, gauges: &WpaGauges) {
        self.wpa_gauges.set(
            labels.values(),
            [
                gauges.messages as f64,
                gauges.in_flight.unwrap_or(0) as f64,
                gauges.sent_per_minute.unwrap_or(0) as f64,
                if gauges.idle { 1.0 } else { 0.0 },
                f64::from(gauges.current),
                f64::from(gauges.desired),
                f64::from(gauges.available),
            ],
        );
        self.wpa_gauges.set_per_queue(
            labels.name,
            labels.namespace,
            gauges
                .per_queue
                .iter()
                .map(|(queue, backlog)| (queue.clone(), *backlog as f64))
                .collect(),
        );
        match &gauges.workers {
            Some(workers) => {
                for (state, count) in [
                    ("busy", workers.busy),
                    ("idle", workers.idle),
                    ("unknown", workers.unknown),
                ] {
                    self.worker_pods
                        .with_label_values(&[labels.name, labels.namespace, state])
                        .set(i64::from(count));
                }
            }
            None => self.forget_worker_pods(labels),
        }
        match &gauges.wait {
            Some(wait) => {
                for (figure, value) in WAIT_GAUGES.iter().zip(wait.values()) {
                    self.wait
                        .with_label_values(&[labels.name, labels.namespace, figure])
                        .set(value);
                }
            }
            None => self.forget_wait(labels),
        }
    }

    fn forget_wait(&self, labels: &WpaLabels<'_>) {
        for figure in WAIT_GAUGES {
            let _ = self
                .wait
                .remove_label_values(&[labels.name, labels.namespace, figure]);
        }
    }

    fn forget_worker_pods(&self, labels: &WpaLabels<'_>) {
        for state in ["busy", "idle", "unknown"] {
            let _ = self
                .worker_pods
                .remove_label_values(&[labels.name, labels.namespace, state]);
        }
    }

    pub fn observe_reconcile(&self, labels: &WpaLabels<'_>, took: Duration, ok: bool) {
        let values = labels.values();
        self.loop_duration
            .with_label_values(&values)
            .observe(took.as_secs_f64());
        self.reconcile_duration
            .with_label_values(&[labels.namespace])
            .observe(took.as_secs_f64());
        if ok {
            self.loop_count_success.with_label_values(&values).inc();
        } else {
            self.reconcile_errors
                .with_label_values(&[labels.name, labels.namespace])
                .inc();
        }
    }

    pub fn count_scale(&self, labels: &WpaLabels<'_>, up: bool) {
        let [name, namespace, queue] = labels.values();
        self.scale_operations
            .with_label_values(&[name, namespace, queue, if up { "up" } else { "down" }])
            .inc();
    }

    /// Drops every series of a WPA that no longer exists.
    pub fn forget(&self, labels: &WpaLabels<'_>) {
        let values = labels.values();
        self.wpa_gauges.remove(values);
        self.forget_worker_pods(labels);
        self.forget_wait(labels);
        let _ = self
            .busy_pods_protected
            .remove_label_values(&[labels.name, labels.namespace]);
        let _ = self
            .draining_pods
            .remove_label_values(&[labels.name, labels.namespace]);
        let _ = self.loop_duration.remove_label_values(&values);
        let _ = self.loop_count_success.remove_label_values(&values);
        for direction in ["up", "down"] {
            let [name, namespace, queue] = values;
            let _ = self
                .scale_operations
                .remove_label_values(&[name, namespace, queue, direction]);
        }
    }

    /// The text exposition format.
    /// `render` for the admin server.
    pub fn render_fn(&self) -> crate::admin::RenderMetrics {
        let metrics = self.clone();
        std::sync::Arc::new(move || metrics.render().map_err(|e| e.to_string()))
    }

    pub fn render(&self) -> Result<String, prometheus::Error> {
        let families = self.registry.gather();
        // One allocation of about the final size: a growing buffer would double (and copy)
        // its way up, which at thousands of WPAs made a scrape the controller's peak memory.
        let lines: usize = families
            .iter()
            .flat_map(|f| f.get_metric())
            // A histogram series is a line per bucket plus +Inf, _sum and _count.
            .map(|m| m.get_histogram().get_bucket().len() + 3)
            .sum();
        let mut buffer = Vec::with_capacity(lines * 120 + self.wpa_gauges.text_size_hint());
        TextEncoder::new().encode(&families, &mut buffer)?;
        drop(families);
        let mut text =
            String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))?;
        self.wpa_gauges.write_text(&mut text);
        Ok(text)
    }
}

impl PollObserver for Metrics {
    fn observe(
        &self,
        kind: ProviderKind,
        queue: &str,
        took: Duration,
        result: Result<(), &QueueError>,
    ) {
        // Called after every poll of every queue: no allocation here.
        let provider = kind.spec().name;
        self.poll_duration
            .with_label_values(&[provider])
            .observe(took.as_secs_f64());
        if result.is_err() {
            self.poll_errors.with_label_values(&[provider, queue]).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn practo_metric_names_are_exported() {
        let metrics = Metrics::new().expect("metrics register");
        let labels = WpaLabels {
            name: "w",
            namespace: "ns",
            queue_name: "q",
        };
        metrics.set_gauges(
            &labels,
            &WpaGauges {
                per_queue: Vec::new(),
                messages: 7,
                in_flight: Some(2),
                sent_per_minute: None,
                idle: false,
                current: 1,
                desired: 3,
                available: 1,
                workers: None,
                wait: Some(WaitGauges {
                    predicted_wait_seconds: 12.0,
                    target_wait_seconds: 30.0,
                    arrivals_per_second: 0.5,
                    throughput_per_worker: 0.2,
                    needed_replicas: 3.0,
                    held_tasks: 0.0,
                }),
            },
        );
        metrics.observe_reconcile(&labels, Duration::from_millis(3), true);
        metrics.count_scale(&labels, true);
        let text = metrics.render().expect("renders");
        for name in [
            "wpa_controller_loop_duration_seconds",
            "wpa_controller_loop_count_success",
            "wpa_queue_messages{",
            "wpa_queue_messages_sent_per_minute",
            "wpa_worker_idle",
            "wpa_worker_current",
            "wpa_worker_desired",
            "wpa_worker_available",
            "wpa_scale_operations_total",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        assert!(
            text.contains(r#"wpa_worker_desired{name="w",namespace="ns",queue_name="q"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"wpa_wait{figure="predicted_wait_seconds",name="w",namespace="ns"} 12"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"wpa_wait{figure="needed_replicas",name="w",namespace="ns"} 3"#),
            "{text}"
        );
        for line in [
            r#"wpa_queue_messages{name="w",namespace="ns",queue_name="q"} 7"#,
            r#"wpa_queue_messages_in_flight{name="w",namespace="ns",queue_name="q"} 2"#,
            r#"wpa_queue_messages_sent_per_minute{name="w",namespace="ns",queue_name="q"} 0"#,
            r#"wpa_worker_idle{name="w",namespace="ns",queue_name="q"} 0"#,
            r#"wpa_worker_current{name="w",namespace="ns",queue_name="q"} 1"#,
            r#"wpa_worker_available{name="w",namespace="ns",queue_name="q"} 1"#,
            "# TYPE wpa_worker_desired gauge",
            "# HELP wpa_worker_desired Replicas the WPA decided on",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        // A second WPA gets its own series; forgetting one leaves the other.
        let other = WpaLabels {
            name: "v",
            namespace: "ns",
            queue_name: "q2",
        };
        metrics.set_gauges(
            &other,
            &WpaGauges {
                per_queue: Vec::new(),
                messages: 0,
                in_flight: None,
                sent_per_minute: Some(12),
                idle: true,
                current: 0,
                desired: 0,
                available: 0,
                workers: Some(crate::scaler::WorkerActivity {
                    busy: 2,
                    idle: 1,
                    ..Default::default()
                }),
                wait: None,
            },
        );
        let text = metrics.render().expect("renders");
        assert!(
            text.contains(r#"wpa_worker_idle{name="v",namespace="ns",queue_name="q2"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"wpa_worker_pods{name="v",namespace="ns",state="busy"} 2"#),
            "{text}"
        );
        assert!(
            !text.contains(r#"wpa_worker_pods{name="w""#),
            "no worker signal, no series: {text}"
        );
        assert!(
            text.contains(
                r#"wpa_queue_messages_sent_per_minute{name="v",namespace="ns",queue_name="q2"} 12"#
            ),
            "{text}"
        );
        metrics.forget(&labels);
        assert!(
            metrics
                .render()
                .expect("renders")
                .contains(r#"wpa_worker_desired{name="v""#)
        );
        assert!(
            !metrics
                .render()
                .expect("renders")
                .contains(r#"wpa_worker_desired{name="w""#)
        );
    }
}
