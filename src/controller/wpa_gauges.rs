//! The per-WPA gauges (practo's `wpa_queue_messages`, `wpa_worker_desired`, ...) as one
//! compact table, written straight into the text exposition at scrape time.
//!
//! A `GaugeVec` child carries its own copy of the metric's name, help text, label names and
//! label pairs, and every scrape builds a protobuf-like `Metric` (with its label pairs) per
//! series before encoding: at thousands of WPAs a scrape allocated more than the controller
//! keeps for everything else. Here a WPA is one map entry (its three label values and seven
//! numbers) and a scrape only appends text; the exposition is the same.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

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

/// Name and help of the per-queue gauge of WPAs that watch several queues.
const PER_QUEUE: (&str, &str) = (
    "wpa_queue_messages_per_queue",
    "Backlog of one queue of a WPA that watches several: visible plus in-flight messages",
);

/// Label values: name, namespace, queue_name.
type Key = (String, String, String);

/// (name, namespace) of a WPA -> each of its queues' (queue_name, backlog).
type PerQueueRows = BTreeMap<(String, String), Vec<(String, f64)>>;

/// One row per WPA; cheap to clone (clones share the table).
#[derive(Clone, Default)]
pub struct WpaGaugeTable {
    rows: Arc<Mutex<BTreeMap<Key, [f64; 7]>>>,
    /// Only WPAs that watch several queues have rows here.
    per_queue: Arc<Mutex<PerQueueRows>>,
}

impl WpaGaugeTable {
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
        self.set_per_queue(name, namespace, Vec::new());
    }

    /// Sets the per-queue backlogs of a WPA (none: it watches one queue, no series).
    pub fn set_per_queue(&self, name: &str, namespace: &str, queues: Vec<(String, f64)>) {
        let mut rows = self.per_queue.lock().unwrap_or_else(|e| e.into_inner());
        let key = (name.to_string(), namespace.to_string());
        if queues.is_empty() {
            rows.remove(&key);
        } else {
            rows.insert(key, queues);
        }
    }

    /// Rough size of [`Self::write_text`]'s output, to size the scrape buffer once.
    pub fn text_size_hint(&self) -> usize {
        self.lock().len() * GAUGES.len() * 120
    }

    /// Appends the seven gauge families in the Prometheus text format (nothing when no WPA
    /// has reported yet, like a `GaugeVec` without children).
    pub fn write_text(&self, out: &mut String) {
        self.write_wpa_rows(out);
        let per_queue = self.per_queue.lock().unwrap_or_else(|e| e.into_inner());
        if per_queue.is_empty() {
            return;
        }
        let (name, help) = PER_QUEUE;
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for ((wpa, namespace), queues) in per_queue.iter() {
            for (queue, backlog) in queues {
                out.push_str(name);
                write_labels(out, wpa, namespace, queue);
                let _ = writeln!(out, " {backlog}");
            }
        }
    }

    fn write_wpa_rows(&self, out: &mut String) {
        let rows = self.lock();
        if rows.is_empty() {
            return;
        }
        for (index, (name, help)) in GAUGES.iter().enumerate() {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            for ((wpa, namespace, queue), values) in rows.iter() {
                out.push_str(name);
                write_labels(out, wpa, namespace, queue);
                let _ = writeln!(out, " {}", values[index]);
            }
        }
    }
}

/// `{name="..",namespace="..",queue_name=".."}`
fn write_labels(out: &mut String, wpa: &str, namespace: &str, queue: &str) {
    out.push_str("{name=\"");
    escape_into(out, wpa);
    out.push_str("\",namespace=\"");
    escape_into(out, namespace);
    out.push_str("\",queue_name=\"");
    escape_into(out, queue);
    out.push_str("\"}");
}

/// Label value escaping of the text format: backslash, double quote and newline.
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_exposition_of_rows() {
        let table = WpaGaugeTable::default();
        let mut empty = String::new();
        table.write_text(&mut empty);
        assert_eq!(empty, "");
        table.set(
            ["w", "ns", "q\"x\\y\nz"],
            [7.0, 2.0, 0.0, 1.0, 3.0, 4.5, 3.0],
        );
        let mut text = String::new();
        table.write_text(&mut text);
        assert!(text.starts_with(
            "# HELP wpa_queue_messages Backlog: visible plus in-flight messages\n\
             # TYPE wpa_queue_messages gauge\n\
             wpa_queue_messages{name=\"w\",namespace=\"ns\",queue_name=\"q\\\"x\\\\y\\nz\"} 7\n"
        ));
        assert!(text.contains(
            "wpa_worker_desired{name=\"w\",namespace=\"ns\",queue_name=\"q\\\"x\\\\y\\nz\"} 4.5\n"
        ));
        assert_eq!(text.lines().count(), 7 * 3);
        table.set_per_queue(
            "w",
            "ns",
            vec![("redis://r/0/a".into(), 5.0), ("redis://r/0/b".into(), 2.0)],
        );
        let mut text = String::new();
        table.write_text(&mut text);
        assert!(text.ends_with(
            "# TYPE wpa_queue_messages_per_queue gauge\n\
             wpa_queue_messages_per_queue{name=\"w\",namespace=\"ns\",queue_name=\"redis://r/0/a\"} 5\n\
             wpa_queue_messages_per_queue{name=\"w\",namespace=\"ns\",queue_name=\"redis://r/0/b\"} 2\n"
        ));
        table.remove(["w", "ns", "q\"x\\y\nz"]);
        let mut gone = String::new();
        table.write_text(&mut gone);
        assert_eq!(gone, "");
    }
}
