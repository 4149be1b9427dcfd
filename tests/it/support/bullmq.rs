//! Real BullMQ for the provider and closed-loop tests: the Node scripts in tests/bullmq
//! (`queue.js` adds jobs and prints BullMQ's own counts, `worker.js` is a Worker as an app
//! runs it in a Pod), and the ledger the workers write each job's start and finish to.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use redis::Commands;
use serde_json::{Value, json};

use super::broker_procs::{BrokerProcess, start_redis};
use super::brokers::{redis_conn, redis_port};
use super::celery_pods::WorkerProgram;
use super::framework_loop::{JobRun, LedgerFields, read_ledger_at};

/// BullMQ's tests use this Redis database only.
pub const DB: u8 = 14;

pub fn bullmq_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/bullmq")
}

/// The Redis server at 127.0.0.1:`port` the scripts, the workers and the provider use: the
/// shared one ([`Server::shared`]), or a test's own ([`own_server`]), which accepts workers
/// connecting from Pods' loopback IPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Server {
    pub port: u16,
}

/// A redis-server of the test's own (see [`start_redis`]); it stops when the process is
/// dropped.
pub async fn own_server(dir: &Path) -> (BrokerProcess, Server) {
    let (process, port) = start_redis(dir).await;
    (process, Server { port })
}

impl Server {
    pub fn shared() -> Self {
        Server { port: redis_port() }
    }

    /// `redis://127.0.0.1:<port>/14`, as the scripts read it from `WPA_TEST_REDIS`.
    pub fn url(self) -> String {
        format!("redis://127.0.0.1:{}/{DB}", self.port)
    }

    /// The provider's URI for `queue` in the test database (`query` e.g. `?prefix=x`).
    pub fn queue_uri(self, queue: &str, query: &str) -> String {
        format!("redis+bullmq://127.0.0.1:{}/{DB}/{queue}{query}", self.port)
    }

    /// Runs `node queue.js <command> <queue> [jobs]` with `prefix`; returns the counts it
    /// printed (BullMQ's `getJobCounts`, `due`, `isPaused`, `workers`).
    pub fn queue_js(self, command: &str, queue: &str, jobs: Option<&Value>, prefix: &str) -> Value {
        let mut cmd = Command::new("node");
        cmd.arg("queue.js").arg(command).arg(queue);
        if let Some(jobs) = jobs {
            cmd.arg(jobs.to_string());
        }
        let out = cmd
            .current_dir(bullmq_dir())
            .env("WPA_TEST_REDIS", self.url())
            .env("BULLMQ_PREFIX", prefix)
            .output()
            .expect("node runs (tests/bullmq: npm ci)");
        assert!(
            out.status.success(),
            "queue.js {command} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("queue.js prints JSON")
    }

    /// Adds jobs of `seconds` each (BullMQ `addBulk`), with `opts` per job; returns the
    /// counts and, as `ids`, the jobs' ids.
    pub fn add_jobs(self, queue: &str, jobs: &[(f64, Value)], prefix: &str) -> Value {
        let list: Vec<Value> = jobs
            .iter()
            .map(|(seconds, opts)| {
                json!({"name": "sleep", "data": {"seconds": seconds}, "opts": opts})
            })
            .collect();
        self.queue_js("add", queue, Some(&Value::Array(list)), prefix)
    }

    /// The pod runner's program for BullMQ: one `node worker.js <queue>` per Pod, its
    /// Worker named after `POD_NAME` when `named` (else BullMQ's default, no name; either
    /// way its connections start from the Pod's loopback IP, if it has one), recording its
    /// runs to `ledger`.
    pub fn worker_program(self, queue: &str, ledger: &str, named: bool) -> WorkerProgram {
        WorkerProgram {
            program: "node".to_string(),
            args: vec!["worker.js".to_string(), queue.to_string()],
            dir: bullmq_dir(),
            env: vec![
                ("WPA_TEST_REDIS".to_string(), self.url()),
                ("WPA_TEST_RECORD_KEY".to_string(), ledger.to_string()),
                (
                    "WPA_TEST_UNNAMED".to_string(),
                    if named { "0" } else { "1" }.to_string(),
                ),
            ],
        }
    }

    /// The runs recorded under `key`, oldest first (the workers record Unix milliseconds).
    pub fn recorded(self, key: &str) -> Vec<JobRun> {
        let fields = LedgerFields {
            millis: true,
            ..LedgerFields::PLAIN
        };
        read_ledger_at(self.port, DB, key, fields)
    }

    /// Deletes a queue's keys (`<prefix>:<queue>:*`) and the given extra keys.
    pub fn remove_queue(self, queue: &str, prefix: &str, extra: &[&str]) {
        let mut con = redis_conn(self.port, DB);
        let keys: Vec<String> = con
            .scan_match::<_, String>(format!("{prefix}:{queue}:*"))
            .expect("SCAN")
            .collect::<Result<_, _>>()
            .expect("SCAN replies");
        if !keys.is_empty() {
            let _: () = con.del(&keys).expect("DEL the queue's keys");
        }
        if !extra.is_empty() {
            let _: () = con.del(extra).expect("DEL");
        }
    }
}

/// [`Server::url`] of the shared Redis.
pub fn redis_url() -> String {
    Server::shared().url()
}

/// [`Server::queue_uri`] on the shared Redis.
pub fn queue_uri(queue: &str, query: &str) -> String {
    Server::shared().queue_uri(queue, query)
}

/// [`Server::queue_js`] on the shared Redis.
pub fn queue_js(command: &str, queue: &str, jobs: Option<&Value>, prefix: &str) -> Value {
    Server::shared().queue_js(command, queue, jobs, prefix)
}

/// [`Server::add_jobs`] on the shared Redis.
pub fn add_jobs(queue: &str, jobs: &[(f64, Value)], prefix: &str) -> Value {
    Server::shared().add_jobs(queue, jobs, prefix)
}

/// A count from `queue.js`' output.
pub fn count(counts: &Value, name: &str) -> u64 {
    counts[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no count {name} in {counts}"))
}

/// [`Server::worker_program`] on the shared Redis, Workers named after their Pods.
pub fn worker_program(queue: &str, ledger: &str) -> WorkerProgram {
    Server::shared().worker_program(queue, ledger, true)
}

/// A `node worker.js` process; SIGKILLed when dropped if still running.
pub struct NodeWorker {
    child: Child,
}

impl NodeWorker {
    /// Starts `node worker.js <queue>` on the shared Redis as Pod `pod` (its Worker
    /// `name`, unless `named` is false), recording runs to `record_key`.
    pub fn start(queue: &str, pod: &str, named: bool, record_key: &str) -> Self {
        Self::start_on(Server::shared(), None, queue, pod, named, record_key)
    }

    /// [`Self::start`] on `server`, with the Pod at `pod_ip` when given (a loopback address
    /// other than 127.0.0.1: the worker connects from it, see tests/bullmq/common.js).
    pub fn start_on(
        server: Server,
        pod_ip: Option<&str>,
        queue: &str,
        pod: &str,
        named: bool,
        record_key: &str,
    ) -> Self {
        let mut command = Command::new("node");
        if let Some(ip) = pod_ip {
            command.env("POD_IP", ip);
        }
        let child = command
            .arg("worker.js")
            .arg(queue)
            .current_dir(bullmq_dir())
            .env("WPA_TEST_REDIS", server.url())
            .env("POD_NAME", pod)
            .env("WPA_TEST_UNNAMED", if named { "0" } else { "1" })
            .env("WPA_TEST_RECORD_KEY", record_key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node worker.js starts");
        NodeWorker { child }
    }

    /// SIGTERM (the worker closes gracefully) and wait for the exit; its exit code.
    #[allow(unsafe_code)]
    pub fn terminate(&mut self) -> Option<i32> {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on our own unreaped child; no memory is shared.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        self.child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for NodeWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// [`Server::recorded`] on the shared Redis.
pub fn recorded(key: &str) -> Vec<JobRun> {
    Server::shared().recorded(key)
}

/// [`Server::remove_queue`] on the shared Redis.
pub fn remove_queue(queue: &str, prefix: &str, extra: &[&str]) {
    Server::shared().remove_queue(queue, prefix, extra)
}
