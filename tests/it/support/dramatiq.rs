//! Real Dramatiq for the Dramatiq provider tests (tests/dramatiq): jobs sent through
//! Dramatiq's own producer, the counts Dramatiq's Redis broker reads itself, `dramatiq`
//! worker processes, and the start/finish records the `sleep` actor writes.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use redis::Commands;
use serde_json::Value;

use super::brokers::{redis_broker, redis_conn, redis_port, unique};
use super::celery_pods::{WorkerProgram, signal_group};
use super::framework_loop::{self, JobRun, LedgerFields, read_ledger};

/// The Redis database every Dramatiq test uses (no other suite does).
pub const DB: u8 = 15;

pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/dramatiq")
}

/// The broker URL the actors module reads.
pub fn url() -> String {
    redis_broker(redis_port(), DB)
}

/// The provider's URI for `queue` in the test database, plus `query`.
pub fn queue_uri(queue: &str, query: &str) -> String {
    format!(
        "redis+dramatiq://127.0.0.1:{}/{DB}/{queue}{query}",
        redis_port()
    )
}

/// A Dramatiq queue name (letters, digits, `_`, `-`) nobody has used.
pub fn queue_name(prefix: &str) -> String {
    unique(prefix).replace('-', "_")
}

/// The environment of the actors module for `queue`, recording runs to `record`.
pub fn env(queue: &str, record: &str) -> Vec<(String, String)> {
    vec![
        ("WPA_TEST_DRAMATIQ_URL".into(), url()),
        ("WPA_TEST_DRAMATIQ_QUEUE".into(), queue.into()),
        ("WPA_TEST_DRAMATIQ_RECORD".into(), record.into()),
        // Keep the workers' Python from buffering their logs.
        ("PYTHONUNBUFFERED".into(), "1".into()),
    ]
}

fn script(queue: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("wpa_send.py")
        .args(args)
        .current_dir(dir())
        .envs(env(queue, ""))
        .output()
        .expect("run python3 wpa_send.py");
    assert!(
        out.status.success(),
        "wpa_send.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Sends one `sleep(job, seconds)` per entry through Dramatiq (`delay_ms`: Dramatiq's
/// `delay`); returns the job ids, `<prefix>-<i>`.
pub fn send(queue: &str, prefix: &str, seconds: &[f64], delay_ms: Option<u64>) -> Vec<String> {
    let mut args: Vec<String> = vec!["send".into(), prefix.into()];
    args.extend(seconds.iter().map(f64::to_string));
    if let Some(ms) = delay_ms {
        args.extend(["--delay".to_string(), ms.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    serde_json::from_str(&script(queue, &args)).expect("a JSON list of job ids")
}

/// What Dramatiq's Redis broker reads of `queue`: `qsize` (its `do_qsize`: unacked
/// messages of the queue and its delay queue), `llen`, `delay_llen`.
pub fn counts(queue: &str) -> Value {
    serde_json::from_str(&script(queue, &["counts"])).expect("JSON counts")
}

/// The records of the `sleep` actor in `key`, oldest first (with the worker's id).
pub fn runs(key: &str) -> Vec<JobRun> {
    read_ledger(DB, key, LedgerFields::PLAIN)
}

/// Per job: (starts, finishes).
pub fn tally(key: &str) -> BTreeMap<String, (usize, usize)> {
    framework_loop::tally(&runs(key))
}

/// Deletes every key of `queue` in Dramatiq's default namespace, and `record`.
pub fn clean(queue: &str, record: &str) {
    let mut conn = redis_conn(redis_port(), DB);
    let mut keys: Vec<String> = conn
        .keys(format!("dramatiq:*{queue}*"))
        .expect("list the test's keys");
    keys.push(record.to_string());
    let _: () = conn.del(keys).expect("delete the test's keys");
}

/// The pod runner's program for Dramatiq: one `dramatiq wpa_actors --processes 1
/// --threads 1` per Pod with `env` (see [`env`]).
pub fn worker_program(env: Vec<(String, String)>) -> WorkerProgram {
    WorkerProgram {
        program: "dramatiq".to_string(),
        args: WORKER_ARGS.map(String::from).to_vec(),
        dir: dir(),
        env,
    }
}

const WORKER_ARGS: [&str; 5] = ["wpa_actors", "--processes", "1", "--threads", "1"];

/// A `dramatiq wpa_actors --processes 1 --threads 1` worker in its own process group.
pub struct Worker {
    child: Child,
}

impl Worker {
    /// `extra`: more environment (heartbeat timeout, maintenance chance).
    pub fn start(queue: &str, record: &str, pod: &str, extra: &[(&str, &str)]) -> Worker {
        let child = Command::new("dramatiq")
            .args(WORKER_ARGS)
            .current_dir(dir())
            .envs(env(queue, record))
            .envs(extra.iter().copied())
            .env("POD_NAME", pod)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start a dramatiq worker");
        Worker { child }
    }

    /// SIGKILL to the whole group: the worker dies without acking or requeueing.
    pub fn kill(&mut self) {
        signal_group(self.child.id(), libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}
