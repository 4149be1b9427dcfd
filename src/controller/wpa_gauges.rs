//! The per-WPA gauges (practo's `wpa_queue_messages`, `wpa_worker_desired`, ...) as one
//! compact table rendered at scrape time.
//!
//! A `GaugeVec` child carries its own copy of the metric's name, help text, label names and
//! label pairs: about 750 bytes per series, over 5 KiB per WPA for these seven, which made
//! them the largest per-WPA cost of the controller at thousands of WPAs. Here a WPA is one
//! map entry (its three label values and seven numbers); the exposition is the same.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// Name and help of each gauge, in the order of a row.
const GAUGES: [(&str, &str); 7] = [
    (
        "wpa_queue_messages",
        "Backlog: visible plus in-flight messages",
    ),
    (
        "wpa_queue_messages_in_flight",
        "Messages received by workers and not yet acknowledged",
    ),
    (
        "wpa_queue_messages_sent_per_minute",
        "Messages sent to the queue per minute, where the broker reports it",
    ),
    ("wpa_worker_idle", "1 when the queue's workers are idle"),
    ("wpa_worker_current", "Current replicas of the scale target"),
    ("wpa_worker_desired", "Replicas the WPA decided on"),
    (
        "wpa_worker_available",
        "Available replicas of the scale target",
    ),
];
const LABELS: [&str; 3] = ["name", "namespace", "queue_name"];

/// Label values: name, namespace, queue_name.
type Key = (String, String, String);

/// One row per WPA; cheap to clone (clones share the table).
#[derive(Clone)]
pub struct WpaGaugeTable {
    descs: Arc<Vec<Desc>>,
    rows: Arc<Mutex<BTreeMap<Key, [f64; 7]>>>,
}

impl WpaGaugeTable {
    pub fn new() -> Result<Self, prometheus::Error> {
        let descs = GAUGES
            .iter()
            .map(|(name, help)| {
                Desc::new(
                    name.to_string(),
                    help.to_string(),
                    LABELS.iter().map(|l| l.to_string()).collect(),
                    HashMap::new(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            descs: Arc::new(descs),
            rows: Arc::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, [f64; 7]>> {
        // A panic while holding the lock leaves a consistent map: keep serving it.
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets a WPA's row: values in the order of `GAUGES`.
    pub fn set(&self, labels: [&str; 3], values: [f64; 7]) {
        let [name, namespace, queue] = labels;
        self.lock().insert(
            (name.to_string(), namespace.to_string(), queue.to_string()),
            values,
        );
    }

    pub fn remove(&self, labels: [&str; 3]) {
        let [name, namespace, queue] = labels;
        self.lock()
            .remove(&(name.to_string(), namespace.to_string(), queue.to_string()));
    }
}

impl Collector for WpaGaugeTable {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let rows = self.lock();
        if rows.is_empty() {
            // Like a GaugeVec without children: no family at all.
            return Vec::new();
        }
        GAUGES
            .iter()
            .enumerate()
            .map(|(index, (name, help))| {
                let metrics = rows
                    .iter()
                    .map(|((wpa, namespace, queue), values)| {
                        let labels = [wpa, namespace, queue]
                            .iter()
                            .zip(LABELS)
                            .map(|(value, label)| {
                                let mut pair = LabelPair::default();
                                pair.set_name(label.to_string());
                                pair.set_value(value.to_string());
                                pair
                            })
                            .collect();
                        let mut gauge = Gauge::default();
                        gauge.set_value(values[index]);
                        let mut metric = Metric::default();
                        metric.set_label(labels);
                        metric.set_gauge(gauge);
                        metric
                    })
                    .collect();
                let mut family = MetricFamily::default();
                family.set_name(name.to_string());
                family.set_help(help.to_string());
                family.set_field_type(MetricType::GAUGE);
                family.set_metric(metrics);
                family
            })
            .collect()
    }
}
