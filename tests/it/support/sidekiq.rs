//! Real Sidekiq for the provider tests (Debian's `ruby-sidekiq`, `/usr/bin/sidekiq`): jobs
//! pushed with `Sidekiq::Client.push`, Sidekiq's own counts, `sidekiq` processes, and the
//! ledger its `SleepJob` (tests/sidekiq/worker.rb) writes to.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::Commands;
use serde_json::Value;

use super::brokers::{redis_broker, redis_conn, redis_port};
use super::celery_pods::{WorkerProgram, signal_group, signal_process};
use super::framework_loop::{JobRun, LedgerFields, read_ledger};

/// The Redis database of the Sidekiq tests (no other suite uses it).
pub const DB: u8 = 10;

/// tests/sidekiq: the job class and the client script.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sidekiq")
}

/// `REDIS_URL` for Sidekiq: the shared Redis, database [`DB`].
pub fn redis_url() -> String {
    redis_broker(redis_port(), DB)
}

/// `redis+sidekiq://127.0.0.1:<port>/10/<queue>` plus `query` (e.g. `?namespace=x`).
pub fn queue_uri(queue: &str, query: &str) -> String {
    format!(
        "redis+sidekiq://127.0.0.1:{}/{DB}/{queue}{query}",
        redis_port()
    )
}

fn client(args: &[&str]) -> Value {
    client_in(None, args)
}

/// `client.rb` with `SIDEKIQ_NAMESPACE` set to `namespace` (none: no namespace).
fn client_in(namespace: Option<&str>, args: &[&str]) -> Value {
    let out = Command::new("ruby")
        .arg(dir().join("client.rb"))
        .args(args)
        .current_dir(dir())
        .env("REDIS_URL", redis_url())
        .env("SIDEKIQ_NAMESPACE", namespace.unwrap_or_default())
        .stderr(Stdio::inherit())
        .output()
        .expect("ruby runs");
    assert!(out.status.success(), "client.rb {args:?} failed");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "client.rb {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Enqueues one `SleepJob` per entry of `seconds` on `queue` with `Sidekiq::Client.push`,
/// recording into `ledger`; returns the jobs' ids (`<queue>-<n>`).
pub fn push(queue: &str, ledger: &str, seconds: &[f64]) -> Vec<String> {
    push_in(None, queue, ledger, seconds)
}

/// [`push`] under a redis-namespace (the ledger too is then `<ns>:<ledger>`).
pub fn push_in(namespace: Option<&str>, queue: &str, ledger: &str, seconds: &[f64]) -> Vec<String> {
    let seconds: Vec<String> = seconds.iter().map(|s| s.to_string()).collect();
    let mut args = vec!["push", queue, ledger];
    args.extend(seconds.iter().map(String::as_str));
    let out = client_in(namespace, &args);
    out["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|id| id.as_str().expect("id").to_string())
        .collect()
}

/// Sidekiq's own view of `queue`: `size` (`Sidekiq::Queue#size`), `processes` (those
/// serving it), `running` (its jobs in `Sidekiq::Workers`) and `workers`
/// (`Sidekiq::Workers#size`, every queue).
pub fn count(queue: &str) -> Value {
    client(&["count", queue])
}

/// [`count`] under a redis-namespace.
pub fn count_in(namespace: &str, queue: &str) -> Value {
    client_in(Some(namespace), &["count", queue])
}

/// One `sidekiq` process; SIGKILLed with its group when dropped.
pub struct SidekiqProcess {
    child: Child,
}

impl SidekiqProcess {
    /// `sidekiq -r ./worker.rb -q <each queue> -c <concurrency>` with `DYNO=<hostname>` (the
    /// name Sidekiq reports, as a Pod's hostname would be), logging to `log`.
    pub fn start(queues: &[&str], concurrency: u32, hostname: &str, log: &Path) -> Self {
        Self::start_in(None, queues, concurrency, hostname, log)
    }

    /// [`SidekiqProcess::start`] under a redis-namespace (`SIDEKIQ_NAMESPACE`).
    pub fn start_in(
        namespace: Option<&str>,
        queues: &[&str],
        concurrency: u32,
        hostname: &str,
        log: &Path,
    ) -> Self {
        let mut command = Command::new("sidekiq");
        command.args(["-r", "./worker.rb", "-c", &concurrency.to_string()]);
        for queue in queues {
            command.args(["-q", queue]);
        }
        let log = std::fs::File::create(log).expect("log file");
        let child = command
            .current_dir(dir())
            .env("REDIS_URL", redis_url())
            .env("DYNO", hostname)
            .env("SIDEKIQ_NAMESPACE", namespace.unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            // Its own group, so that dropping it kills whatever it started.
            .process_group(0)
            .spawn()
            .expect("sidekiq starts");
        SidekiqProcess { child }
    }

    /// SIGTERM (Sidekiq's shutdown: stop fetching, finish or requeue, remove its record).
    pub fn terminate(&mut self) {
        signal_process(self.child.id(), libc::SIGTERM);
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for SidekiqProcess {
    fn drop(&mut self) {
        if !self.exited() {
            signal_group(self.child.id(), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// The pod runner's program for Sidekiq: one `sidekiq -c <concurrency>` per Pod serving
/// `queue`, with `DYNO` = the Pod's name (what `Socket.gethostname` gives in a real Pod; the
/// runner replaces `{pod}` in arguments only, so `env` sets it and then execs `sidekiq`,
/// which therefore gets the kubelet's signals itself).
/// `-t`: how long Sidekiq waits for running jobs after SIGTERM before it requeues them.
pub fn worker_program(queue: &str, concurrency: u32, shutdown_timeout: Duration) -> WorkerProgram {
    let args = [
        "DYNO={pod}",
        "sidekiq",
        "-r",
        "./worker.rb",
        "-q",
        queue,
        "-c",
        &concurrency.to_string(),
        "-t",
        &shutdown_timeout.as_secs().to_string(),
    ];
    WorkerProgram {
        program: "env".into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        dir: dir(),
        env: vec![("REDIS_URL".into(), redis_url())],
    }
}

/// Everything `SleepJob` wrote to `ledger` so far, in order (it names the job `id` and the
/// Pod `host`).
pub fn ledger(ledger: &str) -> Vec<JobRun> {
    let fields = LedgerFields {
        job: "id",
        pod: "host",
        millis: false,
    };
    read_ledger(DB, ledger, fields)
}

/// Deletes keys of a test (best effort; the database is the Sidekiq tests' own).
pub fn delete(keys: &[String]) {
    let mut conn = redis_conn(redis_port(), DB);
    let _: redis::RedisResult<()> = conn.del(keys);
}
