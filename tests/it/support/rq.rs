//! Real RQ for the RQ provider tests: jobs enqueued and counted through RQ's own API
//! (tests/rq/rq_tool.py), real `rq worker` processes whose hostname is their "Pod" name
//! (tests/rq/pod_worker.py), and the ledger the test jobs write their runs to
//! (tests/rq/rq_jobs.py). Everything uses Redis database 13, which no other suite uses.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde::Deserialize;

use super::brokers::redis_port;
use super::celery_pods::{WorkerProgram, signal_group, signal_process};
use super::framework_loop::{JobRun, LedgerFields, read_ledger};

/// The RQ tests' Redis database.
pub const RQ_DB: u8 = 13;

/// `redis://127.0.0.1:<port>/13`, as RQ's `--url`.
pub fn rq_url() -> String {
    format!("redis://127.0.0.1:{}/{RQ_DB}", redis_port())
}

/// The provider's `queueURI` for `queue` (names made by `unique` need no encoding).
pub fn rq_queue_uri(queue: &str) -> String {
    format!("redis+rq://127.0.0.1:{}/{RQ_DB}/{queue}", redis_port())
}

pub fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/rq")
}

/// How to enqueue: RQ's key prefix (`RQ_KEY_PREFIX`), a ledger for the runs, a delay.
#[derive(Debug, Clone, Default)]
pub struct Enqueue<'a> {
    pub prefix: Option<&'a str>,
    pub ledger: Option<&'a str>,
    /// Schedule the jobs this many seconds ahead (`Queue.enqueue_in`).
    pub in_seconds: Option<f64>,
}

fn tool(args: &[&str], prefix: Option<&str>) -> String {
    let mut command = Command::new("python3");
    command.arg(scripts_dir().join("rq_tool.py")).args(args);
    match prefix {
        Some(prefix) => command.env("RQ_KEY_PREFIX", prefix),
        None => command.env_remove("RQ_KEY_PREFIX"),
    };
    let out = command.output().expect("run rq_tool.py");
    assert!(
        out.status.success(),
        "rq_tool.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Enqueues one `rq_jobs.sleep(s)` per entry of `sleeps` through RQ; returns the job ids.
pub fn rq_enqueue(queue: &str, sleeps: &[f64], how: &Enqueue<'_>) -> Vec<String> {
    let sleeps = serde_json::to_string(sleeps).expect("json");
    let url = rq_url();
    let mut args = vec![
        "enqueue", "--url", &url, "--queue", queue, "--sleeps", &sleeps,
    ];
    if let Some(ledger) = how.ledger {
        args.extend(["--ledger", ledger]);
    }
    let delay = how.in_seconds.map(|s| s.to_string());
    if let Some(delay) = &delay {
        args.extend(["--in", delay]);
    }
    #[derive(Deserialize)]
    struct Ids {
        ids: Vec<String>,
    }
    let ids: Ids = serde_json::from_str(&tool(&args, how.prefix)).expect("enqueue output");
    ids.ids
}

/// What RQ itself says about a queue.
#[derive(Debug, Clone, Deserialize)]
pub struct RqCounts {
    /// `Queue.count`.
    pub count: u64,
    /// `StartedJobRegistry.count`.
    pub started: u64,
    /// `ScheduledJobRegistry.count`.
    pub scheduled: u64,
    /// `Worker.all(queue=...)`.
    pub workers: Vec<RqWorkerSeen>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RqWorkerSeen {
    pub name: String,
    pub hostname: Option<String>,
    pub state: String,
    pub job: Option<String>,
}

pub fn rq_counts(queue: &str, prefix: Option<&str>) -> RqCounts {
    let url = rq_url();
    let out = tool(&["count", "--url", &url, "--queue", queue], prefix);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("count output {out:?}: {e}"))
}

/// The `rq worker` command line for `queue`, as the real CLI with the test worker class.
pub fn rq_worker_args(queue: &str) -> Vec<String> {
    vec![
        "worker".into(),
        "--worker-class".into(),
        "pod_worker.PodWorker".into(),
        "--path".into(),
        scripts_dir().display().to_string(),
        "--url".into(),
        rq_url(),
        "--logging_level".into(),
        "INFO".into(),
        queue.into(),
    ]
}

/// The pod runner's program for an RQ worker per Pod (POD_NAME is set by the runner).
pub fn rq_worker_program(queue: &str) -> WorkerProgram {
    WorkerProgram {
        program: "rq".into(),
        args: rq_worker_args(queue),
        dir: scripts_dir(),
        env: Vec::new(),
    }
}

/// One real `rq worker` process as if in Pod `pod`; SIGKILLed (with its work horse) on drop.
pub struct RqWorker {
    child: Child,
}

impl RqWorker {
    pub fn start(queue: &str, pod: &str, log: &std::path::Path) -> RqWorker {
        use std::os::unix::process::CommandExt;
        let log = std::fs::File::create(log).expect("worker log");
        let child = Command::new("rq")
            .args(rq_worker_args(queue))
            .current_dir(scripts_dir())
            .env("POD_NAME", pod)
            .env_remove("RQ_KEY_PREFIX")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start rq worker");
        RqWorker { child }
    }

    /// RQ's warm shutdown: finish the running job, then exit.
    pub fn sigterm(&self) {
        signal_process(self.child.id(), libc::SIGTERM);
    }
}

impl Drop for RqWorker {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            signal_group(self.child.id(), libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// The runs the test jobs recorded in the Redis list `key` (database 13).
pub fn ledger(key: &str) -> Vec<JobRun> {
    read_ledger(RQ_DB, key, LedgerFields::PLAIN)
}
