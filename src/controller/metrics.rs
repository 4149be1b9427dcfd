//! Prometheus metrics. practo's metric names and labels (name, namespace, queue_name) are
//! kept so existing dashboards work; new metrics follow the same style.

use std::time::Duration;

use prometheus::{
    CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, Opts, Registry, TextEncoder,
};

use crate::queue::registry::PollObserver;
use crate::queue::{ProviderKind, QueueError};

const WPA_LABELS: [&str; 3] = ["name", "namespace", "queue_name"];

/// Every metric the controller exports, registered in its own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub loop_duration: HistogramVec,
    pub loop_count_success: CounterVec,
    pub queue_messages: GaugeVec,
    pub queue_in_flight: GaugeVec,
    pub queue_sent_per_minute: GaugeVec,
    pub worker_idle: GaugeVec,
    pub worker_current: GaugeVec,
    pub worker_desired: GaugeVec,
    pub worker_available: GaugeVec,
    pub scale_operations: CounterVec,
    pub reconcile_errors: CounterVec,
    pub reconcile_duration: HistogramVec,
    pub poll_errors: CounterVec,
    pub poll_duration: HistogramVec,
    pub poll_loops: prometheus::IntGauge,
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
pub struct WpaGauges {
    pub messages: u64,
    pub in_flight: Option<u64>,
    pub sent_per_minute: Option<u64>,
    pub idle: bool,
    pub current: i32,
    pub desired: i32,
    pub available: i32,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| -> Result<GaugeVec, prometheus::Error> {
            let g = GaugeVec::new(Opts::new(name, help), &WPA_LABELS)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
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
            queue_messages: gauge(
                "wpa_queue_messages",
                "Backlog: visible plus in-flight messages",
            )?,
            queue_in_flight: gauge(
                "wpa_queue_messages_in_flight",
                "Messages received by workers and not yet acknowledged",
            )?,
            queue_sent_per_minute: gauge(
                "wpa_queue_messages_sent_per_minute",
                "Messages sent to the queue per minute, where the broker reports it",
            )?,
            worker_idle: gauge("wpa_worker_idle", "1 when the queue's workers are idle")?,
            worker_current: gauge("wpa_worker_current", "Current replicas of the scale target")?,
            worker_desired: gauge("wpa_worker_desired", "Replicas the WPA decided on")?,
            worker_available: gauge(
                "wpa_worker_available",
                "Available replicas of the scale target",
            )?,
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
        let values = labels.values();
        self.queue_messages
            .with_label_values(&values)
            .set(gauges.messages as f64);
        self.queue_in_flight
            .with_label_values(&values)
            .set(gauges.in_flight.unwrap_or(0) as f64);
        self.queue_sent_per_minute
            .with_label_values(&values)
            .set(gauges.sent_per_minute.unwrap_or(0) as f64);
        self.worker_idle
            .with_label_values(&values)
            .set(if gauges.idle { 1.0 } else { 0.0 });
        self.worker_current
            .with_label_values(&values)
            .set(f64::from(gauges.current));
        self.worker_desired
            .with_label_values(&values)
            .set(f64::from(gauges.desired));
        self.worker_available
            .with_label_values(&values)
            .set(f64::from(gauges.available));
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
        for gauge in [
            &self.queue_messages,
            &self.queue_in_flight,
            &self.queue_sent_per_minute,
            &self.worker_idle,
            &self.worker_current,
            &self.worker_desired,
            &self.worker_available,
        ] {
            let _ = gauge.remove_label_values(&values);
        }
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
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
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
        let provider = kind.to_string();
        self.poll_duration
            .with_label_values(&[provider.as_str()])
            .observe(took.as_secs_f64());
        if result.is_err() {
            self.poll_errors
                .with_label_values(&[provider.as_str(), queue])
                .inc();
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
                messages: 7,
                in_flight: Some(2),
                sent_per_minute: None,
                idle: false,
                current: 1,
                desired: 3,
                available: 1,
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
        metrics.forget(&labels);
        assert!(
            !metrics
                .render()
                .expect("renders")
                .contains(r#"wpa_worker_desired{name="w""#)
        );
    }
}
