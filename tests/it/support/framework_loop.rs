//! A closed loop with another framework's real workers (Sidekiq, RQ, BullMQ, Dramatiq): the
//! API double runs a Deployment's Pods, the pod runner starts one worker per Pod from a
//! [`WorkerProgram`] and stops it as a kubelet does (SIGTERM, SIGKILL after the grace), and
//! the real controller binary scales the Deployment on a WPA's `queueURI`. The jobs record
//! their start and finish in a ledger ([`JobRun`]); the checks every such loop shares are
//! here: every job ran exactly once, no worker was stopped while it ran a job, none was
//! SIGKILLed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use redis::Commands;
use serde_json::{Value, json};

use super::apiserver::{ApiServerDouble, DELETION_COST, Gvr, PodIps, objects};
use super::brokers::{redis_conn, redis_port};
use super::celery_pods::{CeleryPodConfig, CeleryPodRunner, WorkerProgram, WorkerRecord};
use super::closed_loop::tally::Clock;
use super::controller::{ControllerProcess, condition, wpa};

/// One start or finish a job recorded in its ledger (a Redis list of JSON objects).
#[derive(Debug, Clone, PartialEq)]
pub struct JobRun {
    /// "start" or "finish".
    pub event: String,
    pub job: String,
    /// The Pod (hostname) that ran it.
    pub pod: String,
    /// Unix seconds.
    pub at: f64,
    /// The worker's own id where the framework records one (Dramatiq), else empty.
    pub worker: String,
}

/// How a framework's jobs name the fields of their ledger entries.
#[derive(Debug, Clone, Copy)]
pub struct LedgerFields {
    pub job: &'static str,
    pub pod: &'static str,
    /// `at` is in Unix milliseconds (else seconds).
    pub millis: bool,
}

impl LedgerFields {
    /// `{"event", "job", "pod", "at": Unix seconds}`.
    pub const PLAIN: LedgerFields = LedgerFields {
        job: "job",
        pod: "pod",
        millis: false,
    };
}

/// Every entry of the ledger `key` in Redis database `db`, oldest first.
pub fn read_ledger(db: u8, key: &str, fields: LedgerFields) -> Vec<JobRun> {
    read_ledger_at(redis_port(), db, key, fields)
}

/// [`read_ledger`] from the Redis at 127.0.0.1:`port` (a test's own server).
pub fn read_ledger_at(port: u16, db: u8, key: &str, fields: LedgerFields) -> Vec<JobRun> {
    let mut conn = redis_conn(port, db);
    let entries: Vec<String> = conn.lrange(key, 0, -1).expect("LRANGE the ledger");
    let text = |v: &Value, name: &str| v[name].as_str().unwrap_or_default().to_string();
    entries
        .iter()
        .map(|e| {
            let v: Value = serde_json::from_str(e)
                .unwrap_or_else(|err| panic!("ledger entry {e:?} is no JSON: {err}"));
            let at = v["at"].as_f64().unwrap_or_default();
            JobRun {
                event: text(&v, "event"),
                job: text(&v, fields.job),
                pod: text(&v, fields.pod),
                at: if fields.millis { at / 1000.0 } else { at },
                worker: text(&v, "worker"),
            }
        })
        .collect()
}

/// Per job: (starts, finishes).
pub fn tally(runs: &[JobRun]) -> BTreeMap<String, (usize, usize)> {
    let mut by_job: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for run in runs {
        let entry = by_job.entry(run.job.clone()).or_default();
        match run.event.as_str() {
            "start" => entry.0 += 1,
            "finish" => entry.1 += 1,
            _ => {}
        }
    }
    by_job
}

/// (Unix seconds, replicas) of the successful writes to a Deployment's scale, oldest first.
pub fn scale_writes(server: &ApiServerDouble, namespace: &str, name: &str) -> Vec<(f64, i64)> {
    let path = format!("/namespaces/{namespace}/deployments/{name}/scale");
    server
        .recorded()
        .into_iter()
        .filter(|r| matches!(r.method.as_str(), "PATCH" | "PUT") && r.succeeded())
        .filter(|r| r.path.ends_with(&path))
        .filter_map(|r| {
            let replicas = r.body.pointer("/spec/replicas")?.as_i64()?;
            Some((r.at.as_millisecond() as f64 / 1000.0, replicas))
        })
        .collect()
}

/// The WPA's first poll has finished: its status says whether metrics are available.
pub fn polled(server: &ApiServerDouble, namespace: &str, name: &str) -> bool {
    server
        .get(&Gvr::WORKER_POD_AUTOSCALERS, Some(namespace), name)
        .and_then(|w| condition(&w["status"], "MetricsAvailable"))
        .is_some()
}

/// What differs between the framework loops' set-ups.
pub struct Setup<'a> {
    pub namespace: &'a str,
    pub deployment: &'a str,
    /// The controller's log and kubeconfig name, and the log directory's prefix.
    pub name: &'a str,
    pub program: WorkerProgram,
    /// SIGTERM to SIGKILL (terminationGracePeriodSeconds).
    pub kill_grace: Duration,
    /// Where the Pods are (the double's default when `None`).
    pub pod_ips: Option<PodIps>,
    pub queue_uri: String,
    pub max_replicas: i64,
    /// `spec.workerSignal`, when set.
    pub worker_signal: Option<&'a str>,
    pub idle_window: u64,
    pub scale_down_delay: u64,
    /// More controller flags (`--resync-period=20`, a provider's poll interval).
    pub flags: &'a [&'a str],
}

/// A running loop: the API double, the pod runner and the controller.
pub struct FrameworkLoop {
    pub server: ApiServerDouble,
    pub runner: CeleryPodRunner,
    pub controller: ControllerProcess,
    /// Controller log here, one `<pod>.log` per worker in `workers/`; kept after a run so
    /// that the logs can be read.
    pub dir: PathBuf,
    /// Maps the pod runner's `Instant`s onto the ledger's Unix seconds.
    pub clock: Clock,
    namespace: String,
    deployment: String,
}

impl FrameworkLoop {
    /// A Deployment at 0 with the WPA (`minReplicas` 0, one message per worker) on
    /// `setup.queue_uri`, its worker Pods run from `setup.program`, and the controller.
    pub async fn start(setup: Setup<'_>) -> Self {
        let clock = Clock::now();
        let dir = tempfile::Builder::new()
            .prefix(&format!("wpa-{}", setup.name))
            .tempdir()
            .expect("tempdir")
            .keep();
        let workers = dir.join("workers");
        std::fs::create_dir_all(&workers).expect("log dir");
        let (ns, deployment) = (setup.namespace, setup.deployment);

        let server = ApiServerDouble::start().await.expect("API double");
        server.simulate_pods(true);
        if let Some(ips) = setup.pod_ips {
            server.set_pod_ips(ips);
        }
        server
            .insert(objects::deployment(ns, deployment, 0))
            .expect("deployment");
        let mut config = CeleryPodConfig::new(&Gvr::DEPLOYMENTS, ns, deployment, "", "");
        config.program = Some(setup.program);
        config.kill_grace = setup.kill_grace;
        config.log_dir = Some(workers);
        let runner = CeleryPodRunner::start(&server, config);

        let mut spec = json!({
            "minReplicas": 0,
            "maxReplicas": setup.max_replicas,
            "targetMessagesPerWorker": 1,
            "deploymentName": deployment,
            "queueURI": setup.queue_uri,
        });
        if let Some(signal) = setup.worker_signal {
            spec["workerSignal"] = json!(signal);
        }
        server.insert(wpa(ns, deployment, spec)).expect("wpa");
        let idle_window = format!("--idle-window={}", setup.idle_window);
        let delay = format!(
            "--scale-down-delay-after-last-scale-activity={}",
            setup.scale_down_delay
        );
        let mut flags = vec![idle_window.as_str(), delay.as_str(), "--log-level=info"];
        flags.extend(setup.flags);
        let controller = ControllerProcess::start(&server, &dir, setup.name, &flags);
        FrameworkLoop {
            server,
            runner,
            controller,
            dir,
            clock,
            namespace: ns.to_string(),
            deployment: deployment.to_string(),
        }
    }

    /// The Deployment's `spec.replicas` (-1 when it is gone).
    pub fn replicas(&self) -> i64 {
        self.server
            .get(&Gvr::DEPLOYMENTS, Some(&self.namespace), &self.deployment)
            .and_then(|d| d["spec"]["replicas"].as_i64())
            .unwrap_or(-1)
    }

    pub fn scale_writes(&self) -> Vec<(f64, i64)> {
        scale_writes(&self.server, &self.namespace, &self.deployment)
    }

    fn assert_running(&mut self) {
        assert!(
            !self.controller.has_exited(),
            "controller exited; log {}:\n{}",
            self.controller.log.display(),
            self.controller.log_text()
        );
    }

    /// Waits for the controller's first poll of the queue, at most `timeout`.
    pub async fn first_poll(&mut self, timeout: Duration) {
        let polled_by = Instant::now() + timeout;
        while !polled(&self.server, &self.namespace, &self.deployment) {
            self.assert_running();
            assert!(
                Instant::now() < polled_by,
                "the controller never polled; log {}",
                self.controller.log.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every job of `ids` has finished (by `ledger`), the Deployment is at 0
    /// and no worker runs, and all stays so for `settle` (a scale back up would show);
    /// panics at `deadline`. Returns the replicas seen, (Unix seconds, replicas) at each
    /// change.
    pub async fn until_at_rest(
        &mut self,
        ids: &[String],
        ledger: impl Fn() -> Vec<JobRun>,
        settle: Duration,
        deadline: Instant,
    ) -> Vec<(f64, i64)> {
        let mut seen: Vec<(f64, i64)> = Vec::new();
        let mut rest_since: Option<Instant> = None;
        loop {
            self.assert_running();
            let replicas = self.replicas();
            if seen.last().is_none_or(|(_, r)| *r != replicas) {
                seen.push((self.clock.unix(Instant::now()), replicas));
            }
            let runs = tally(&ledger());
            let done = ids
                .iter()
                .filter(|id| runs.get(*id).is_some_and(|(_, f)| *f >= 1))
                .count();
            let running = self.runner.running();
            let at_rest = replicas == 0 && running.is_empty() && done == ids.len();
            rest_since = if at_rest {
                rest_since.or(Some(Instant::now()))
            } else {
                None
            };
            if rest_since.is_some_and(|since| since.elapsed() >= settle) {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "not at rest: replicas {replicas}, running {running:?}, {done} of {} jobs \
                 done; replicas seen {seen:?}; scale writes {:?}; logs in {}",
                ids.len(),
                self.scale_writes(),
                self.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The WPA statuses the controller wrote (successful PATCHes), oldest first.
    fn statuses(&self) -> Vec<Value> {
        let path = format!("/workerpodautoscalers/{}/status", self.deployment);
        self.server
            .requests("PATCH", &path)
            .into_iter()
            .filter(|r| r.succeeded())
            .map(|r| r.body["status"].clone())
            .collect()
    }

    /// (Pod, value) of each `pod-deletion-cost` the controller wrote, oldest first.
    fn deletion_costs(&self) -> Vec<(String, String)> {
        let pods = format!("/namespaces/{}/pods/", self.namespace);
        self.server
            .requests("PATCH", &pods)
            .into_iter()
            .filter(|r| r.succeeded())
            .filter_map(|r| {
                let cost = r.body["metadata"]["annotations"][DELETION_COST].as_str()?;
                let pod = r.path.rsplit('/').next()?;
                Some((pod.to_string(), cost.to_string()))
            })
            .collect()
    }

    /// Takes what the run left (`runs`: the ledger now) and stops the controller; the
    /// workers have all exited by now (see [`Self::until_at_rest`]).
    pub fn finish(mut self, runs: Vec<JobRun>, seen: Vec<(f64, i64)>) -> Observed {
        let writes = self.scale_writes();
        let statuses = self.statuses();
        let deletion_costs = self.deletion_costs();
        let workers = self.runner.records();
        self.controller.terminate();
        let context = format!(
            "scale writes {writes:?}; replicas seen {seen:?}; workers {:?}; ledger {runs:?}; \
             logs in {}",
            workers
                .iter()
                .map(|w| (
                    &w.pod,
                    w.terminated_at.map(|t| self.clock.unix(t)),
                    w.killed(),
                    w.exit
                ))
                .collect::<Vec<_>>(),
            self.dir.display()
        );
        Observed {
            runs,
            writes,
            statuses,
            deletion_costs,
            seen,
            workers,
            clock: self.clock,
            controller_log: self.controller.log.clone(),
            dir: self.dir.clone(),
            context,
        }
    }
}

/// What a finished loop left: the ledger, the scale writes, the workers.
pub struct Observed {
    pub runs: Vec<JobRun>,
    /// (Unix seconds, replicas) of the successful scale writes.
    pub writes: Vec<(f64, i64)>,
    /// (Unix seconds, replicas) as polled while waiting, at each change.
    pub seen: Vec<(f64, i64)>,
    /// The WPA statuses the controller wrote, oldest first.
    pub statuses: Vec<Value>,
    /// (Pod, value) of each `pod-deletion-cost` the controller wrote, oldest first.
    pub deletion_costs: Vec<(String, String)>,
    pub workers: Vec<WorkerRecord>,
    pub clock: Clock,
    pub controller_log: PathBuf,
    pub dir: PathBuf,
    /// For failure messages.
    pub context: String,
}

impl Observed {
    /// Every job of `ids` ran to its end exactly once (one start, then one finish, on one
    /// Pod), and the ledger holds no other job.
    pub fn assert_each_ran_once(&self, ids: &[String]) {
        let context = &self.context;
        let mut by_job: BTreeMap<&str, Vec<&JobRun>> = BTreeMap::new();
        for run in &self.runs {
            by_job.entry(run.job.as_str()).or_default().push(run);
        }
        let expected: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        let unknown: Vec<&&str> = by_job.keys().filter(|j| !expected.contains(*j)).collect();
        assert!(unknown.is_empty(), "jobs never sent {unknown:?}; {context}");
        for id in ids {
            let runs = by_job
                .get(id.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            let events: Vec<&str> = runs.iter().map(|r| r.event.as_str()).collect();
            assert_eq!(events, ["start", "finish"], "job {id}; {context}");
            assert_eq!(runs[0].pod, runs[1].pod, "job {id}; {context}");
        }
    }

    /// Workers that got SIGTERM while a job ran on their Pod (started there by then and
    /// not finished there by then), with the job.
    pub fn stopped_busy(&self) -> Vec<String> {
        let mut found = Vec::new();
        for worker in &self.workers {
            let Some(term) = worker.terminated_at.map(|t| self.clock.unix(t)) else {
                continue;
            };
            let on_pod = |event: &str, job: &str| {
                self.runs.iter().any(|r| {
                    r.pod == worker.pod && r.event == event && r.job == job && r.at <= term
                })
            };
            for start in self.runs.iter().filter(|r| r.event == "start") {
                if start.pod == worker.pod && start.at <= term && !on_pod("finish", &start.job) {
                    found.push(format!("{} at {term:.3} (job {})", worker.pod, start.job));
                }
            }
        }
        found
    }

    /// No worker got SIGTERM while it ran a job.
    pub fn assert_none_stopped_busy(&self) {
        assert_eq!(
            self.stopped_busy(),
            Vec::<String>::new(),
            "{}",
            self.context
        );
    }

    /// No worker was still running when its grace ran out.
    pub fn assert_none_killed(&self) {
        let killed: Vec<&str> = self
            .workers
            .iter()
            .filter(|w| w.killed())
            .map(|w| w.pod.as_str())
            .collect();
        assert!(killed.is_empty(), "SIGKILLed {killed:?}; {}", self.context);
    }

    /// The most replicas written.
    pub fn peak(&self) -> i64 {
        self.writes.iter().map(|(_, r)| *r).max().unwrap_or(0)
    }

    /// When the replicas were first lowered to a number above 0.
    pub fn first_scale_in(&self) -> Option<f64> {
        self.writes
            .windows(2)
            .find(|w| w[1].1 < w[0].1 && w[1].1 > 0)
            .map(|w| w[1].0)
    }

    /// The last finish of a job `which` accepts (`f64::MIN` when none).
    pub fn last_finish(&self, which: impl Fn(&str) -> bool) -> f64 {
        self.runs
            .iter()
            .filter(|r| r.event == "finish" && which(&r.job))
            .map(|r| r.at)
            .fold(f64::MIN, f64::max)
    }

    /// How long a job ran (its finish minus its start), if it did both.
    pub fn duration(&self, job: &str) -> Option<f64> {
        let at = |event: &str| {
            self.runs
                .iter()
                .find(|r| r.job == job && r.event == event)
                .map(|r| r.at)
        };
        Some(at("finish")? - at("start")?)
    }

    /// When the last scale write was, asserting it set 0.
    pub fn back_to_zero_at(&self) -> f64 {
        let last = self.writes.last().copied();
        assert_eq!(last.map(|w| w.1), Some(0), "{}", self.context);
        last.map_or(f64::MAX, |w| w.0)
    }

    /// Lines the controller logged at ERROR level.
    pub fn controller_errors(&self) -> Vec<String> {
        std::fs::read_to_string(&self.controller_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" ERROR "))
            .map(str::to_string)
            .collect()
    }

    /// Removes the logs (after a pass).
    pub fn remove_logs(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
