//! Tasks for the pod-runner tests: sending `wpa.test.sleep` tasks through a real Celery
//! producer, reading back what the workers recorded about running them, and asking which
//! workers answer a Celery ping.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use redis::Commands;
use serde_json::Value;

fn celery_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/celery")
}

/// Sends `count` `wpa.test.sleep(seconds)` tasks to `queue`; returns their task ids.
pub fn send_sleep_tasks(broker: &str, queue: &str, count: u32, seconds: f64) -> Vec<String> {
    super::brokers::celery_produce_ids(broker, queue, count, &["--sleep", &seconds.to_string()])
}

/// Sends one `wpa.test.sleep(seconds)` task per entry of `seconds`, in order, in one
/// producer process; returns each task's id, in the same order, with the Unix time (seconds)
/// its send returned.
pub fn send_sleep_tasks_each(broker: &str, queue: &str, seconds: &[f64]) -> Vec<(String, f64)> {
    let list = serde_json::to_string(seconds).expect("a list of numbers is JSON");
    let count = u32::try_from(seconds.len()).expect("a sane number of tasks");
    super::brokers::celery_produce_timed(broker, queue, count, &["--sleeps", &list])
}

/// As [`send_sleep_tasks_each`], sending task i `at[i]` seconds after the producer is
/// ready (one producer process sleeping in between): arrivals spread over time. Returns
/// when the last task was sent.
pub fn send_sleep_tasks_at(
    broker: &str,
    queue: &str,
    seconds: &[f64],
    at: &[f64],
) -> Vec<(String, f64)> {
    let list = serde_json::to_string(seconds).expect("a list of numbers is JSON");
    let times = serde_json::to_string(at).expect("a list of numbers is JSON");
    let count = u32::try_from(seconds.len()).expect("a sane number of tasks");
    super::brokers::celery_produce_timed(broker, queue, count, &["--sleeps", &list, "--at", &times])
}

/// One run of a task as the worker recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRun {
    pub id: String,
    /// The worker's node name, `celery@<pod>`.
    pub host: String,
    /// Unix time in seconds.
    pub at: f64,
    /// The broker marked the message as delivered before (RabbitMQ does; Redis does not).
    pub redelivered: bool,
}

/// How a batch of sent tasks fared.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskTally {
    /// Sent tasks that finished at least once.
    pub completed: usize,
    /// Sent tasks that started but never finished (cut off mid-run, so far).
    pub interrupted: usize,
    /// Sent tasks that never started (still queued, or lost).
    pub never_started: usize,
}

/// The run records `wpa.test.sleep` writes to Redis lists `<key>:started` and
/// `<key>:finished` (configure workers with `CeleryPodConfig::record = Some((url, key))`).
pub struct TaskLedger {
    pub url: String,
    pub key: String,
}

impl TaskLedger {
    pub fn new(url: &str, key: &str) -> Self {
        TaskLedger {
            url: url.to_string(),
            key: key.to_string(),
        }
    }

    /// For `CeleryPodConfig::record`.
    pub fn record_target(&self) -> Option<(String, String)> {
        Some((self.url.clone(), self.key.clone()))
    }

    fn runs(&self, stage: &str) -> Vec<TaskRun> {
        let mut conn = redis::Client::open(self.url.as_str())
            .and_then(|c| c.get_connection())
            .expect("connect to the ledger's redis");
        let lines: Vec<String> = conn
            .lrange(format!("{}:{stage}", self.key), 0, -1)
            .expect("read the ledger");
        lines
            .iter()
            .map(|line| {
                let v: Value = serde_json::from_str(line).expect("a ledger line is JSON");
                TaskRun {
                    id: v["id"].as_str().unwrap_or_default().to_string(),
                    host: v["host"].as_str().unwrap_or_default().to_string(),
                    at: v["at"].as_f64().unwrap_or_default(),
                    redelivered: v["redelivered"].as_bool().unwrap_or_default(),
                }
            })
            .collect()
    }

    pub fn started(&self) -> Vec<TaskRun> {
        self.runs("started")
    }

    pub fn finished(&self) -> Vec<TaskRun> {
        self.runs("finished")
    }

    /// When each worker took a task (prefetched or to run at once).
    pub fn received(&self) -> Vec<TaskRun> {
        self.runs("received")
    }

    /// When each worker got `cancel_consumer` (`id` is the queue).
    pub fn cancelled(&self) -> Vec<TaskRun> {
        self.runs("cancelled")
    }

    pub fn tally(&self, sent: &[String]) -> TaskTally {
        let started: HashSet<String> = self.started().into_iter().map(|r| r.id).collect();
        let finished: HashSet<String> = self.finished().into_iter().map(|r| r.id).collect();
        let mut tally = TaskTally::default();
        for id in sent {
            if finished.contains(id) {
                tally.completed += 1;
            } else if started.contains(id) {
                tally.interrupted += 1;
            } else {
                tally.never_started += 1;
            }
        }
        tally
    }
}

impl Drop for TaskLedger {
    fn drop(&mut self) {
        // Leave the shared Redis as it was; a ledger nobody reads any more is just clutter.
        if let Ok(mut conn) =
            redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection())
        {
            let keys = ["started", "finished", "received", "cancelled"]
                .map(|stage| format!("{}:{stage}", self.key));
            let _: Result<(), _> = conn.del(&keys);
        }
    }
}

/// The node names (`celery@<pod>`) among `hosts` that answer `celery inspect ping` within
/// `timeout`.
pub fn celery_ping(broker: &str, hosts: &[String], timeout: Duration) -> Vec<String> {
    if hosts.is_empty() {
        return Vec::new();
    }
    let out = Command::new("python3")
        .args([
            "-m",
            "celery",
            "-A",
            "worker_app",
            "inspect",
            "ping",
            "--json",
        ])
        .args(["--timeout", &format!("{}", timeout.as_secs_f64())])
        .args(["--destination", &hosts.join(",")])
        .current_dir(celery_dir())
        .env("WPA_TEST_BROKER", broker)
        .output()
        .expect("run celery inspect ping");
    // No replies at all makes `inspect` exit non-zero with an error message.
    let replies: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let mut answered: Vec<String> = replies
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    answered.sort();
    answered
}
