//! A "kubelet" for the API server double's simulated Pods: one real Celery worker process
//! per Pod of a workload (tests/celery/worker_app.py), started when the Pod is created and
//! stopped as a kubelet stops a container when the Pod starts terminating: SIGTERM to the
//! main process (Celery's warm shutdown: finish running tasks, then exit), SIGKILL to the
//! whole process group if it is still running after the kill grace.
//!
//! Each worker runs `python3 -m celery -A worker_app worker --hostname celery@<pod>` with
//! heartbeats, gossip and mingle left on (Celery's defaults), so it behaves like a worker
//! in a real Pod. What happened to each process is recorded in a [`WorkerRecord`].
//!
//! ```ignore
//! server.simulate_pods(true);
//! let runner = CeleryPodRunner::start(&server, CeleryPodConfig::new(
//!     &Gvr::DEPLOYMENTS, "ns", "worker", &broker, &queue));
//! // scale the Deployment; the runner starts and stops workers as its Pods come and go
//! runner.wait_until(secs(30), |records| records.iter().filter(|r| r.running()).count() == 2).await;
//! ```

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use super::apiserver::{ApiServerDouble, Gvr, PodEvent, PodRef, WorkloadKind};

/// Which Pods to run workers for and how.
#[derive(Debug, Clone)]
pub struct CeleryPodConfig {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub workload: String,
    pub broker: String,
    /// Comma-separated queue names (`-Q`).
    pub queues: String,
    pub concurrency: u32,
    /// `--pool`: "threads" (default; light on a small machine) or "prefork".
    pub pool: String,
    /// WPA_TEST_ACKS_LATE: acknowledge after the task ran (default true).
    pub acks_late: bool,
    /// How long after SIGTERM the process group gets SIGKILL (the Pod's
    /// terminationGracePeriodSeconds; default 30 s, as in Kubernetes).
    pub kill_grace: Duration,
    /// Where `wpa.test.sleep` records its runs (see [`super::celery_tasks::TaskLedger`]).
    pub record: Option<(String, String)>,
    /// Directory for one `<pod>.log` per worker; `None` discards the output.
    pub log_dir: Option<PathBuf>,
    /// More `celery worker` arguments, e.g. `--without-heartbeat`.
    pub extra_args: Vec<String>,
    /// More environment for the Celery worker (tests/celery/worker_app.py's settings).
    pub env: Vec<(String, String)>,
    /// How long a Pod's container takes before its worker starts (image pull, app
    /// start-up): the worker process starts this much later than the Pod, and the Pod is
    /// counted from its creation.
    pub start_delay: Duration,
    /// Another framework's worker instead of Celery's (`broker`, `queues`, `concurrency`,
    /// `pool`, `acks_late` and `extra_args` are then Celery's only and unused).
    pub program: Option<WorkerProgram>,
}

/// A worker process of another framework, run per Pod like the Celery worker: in its own
/// process group, with `POD_NAME` and `POD_IP` set, SIGTERM then SIGKILL after the grace.
#[derive(Debug, Clone)]
pub struct WorkerProgram {
    pub program: String,
    /// Arguments; `{pod}` in one is replaced by the Pod's name.
    pub args: Vec<String>,
    /// Working directory.
    pub dir: PathBuf,
    pub env: Vec<(String, String)>,
}

impl CeleryPodConfig {
    /// `gvr` is `Gvr::DEPLOYMENTS`, `REPLICASETS` or `STATEFULSETS`.
    pub fn new(gvr: &Gvr, namespace: &str, workload: &str, broker: &str, queues: &str) -> Self {
        CeleryPodConfig {
            kind: WorkloadKind::of(gvr).expect("a Deployment, ReplicaSet or StatefulSet"),
            namespace: namespace.to_string(),
            workload: workload.to_string(),
            broker: broker.to_string(),
            queues: queues.to_string(),
            concurrency: 1,
            pool: "threads".to_string(),
            acks_late: true,
            kill_grace: Duration::from_secs(30),
            record: None,
            log_dir: None,
            extra_args: Vec::new(),
            env: Vec::new(),
            start_delay: Duration::ZERO,
            program: None,
        }
    }

    fn wants(&self, pod: &PodRef) -> bool {
        pod.kind == self.kind && pod.namespace == self.namespace && pod.workload == self.workload
    }
}

/// What happened to one Pod's worker process.
#[derive(Debug, Clone)]
pub struct WorkerRecord {
    pub pod: String,
    pub ip: String,
    pub pid: u32,
    pub started_at: Instant,
    /// When the Pod started terminating and the worker got SIGTERM.
    pub terminated_at: Option<Instant>,
    /// When the process group got SIGKILL because the grace ran out.
    pub killed_at: Option<Instant>,
    pub exited_at: Option<Instant>,
    pub exit: Option<ExitStatus>,
}

impl WorkerRecord {
    pub fn running(&self) -> bool {
        self.exit.is_none()
    }

    /// SIGKILLed after the grace period (rather than exiting on its own after SIGTERM).
    pub fn killed(&self) -> bool {
        self.killed_at.is_some()
    }

    /// Exited by itself with status 0 (Celery's warm shutdown ends that way).
    pub fn exited_cleanly(&self) -> bool {
        self.exit.is_some_and(|s| s.success())
    }

    /// The signal that ended the process, if one did.
    pub fn exit_signal(&self) -> Option<i32> {
        self.exit.and_then(|s| s.signal())
    }
}

type Records = Arc<Mutex<Vec<WorkerRecord>>>;

fn lock(records: &Records) -> MutexGuard<'_, Vec<WorkerRecord>> {
    records.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs workers for a workload's Pods until dropped (dropping SIGKILLs what still runs).
pub struct CeleryPodRunner {
    records: Records,
    follower: JoinHandle<()>,
}

impl CeleryPodRunner {
    /// Starts following the double's Pod events, and starts workers for the workload's
    /// Pods that already exist.
    pub fn start(server: &ApiServerDouble, config: CeleryPodConfig) -> Self {
        // Subscribe before listing, so no Pod falls between the two (duplicates are skipped).
        let mut events = server.pod_events();
        let existing: Vec<(String, String)> = server
            .pods_of(&config.kind.gvr(), &config.namespace, &config.workload)
            .into_iter()
            .filter(|p| !p.terminating)
            .map(|p| (p.name, p.ip))
            .collect();
        let records: Records = Arc::default();
        let follower = tokio::spawn({
            let records = Arc::clone(&records);
            async move {
                let mut stops: HashMap<String, mpsc::UnboundedSender<()>> = HashMap::new();
                for (name, ip) in existing {
                    let stop = spawn_worker(&config, &records, &name, &ip);
                    stops.insert(name, stop);
                }
                loop {
                    let event = match events.recv().await {
                        Ok(event) => event,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            panic!("pod runner missed {n} pod events")
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    };
                    if !config.wants(event.pod()) {
                        continue;
                    }
                    match event {
                        PodEvent::Created { pod, ip } if !stops.contains_key(&pod.name) => {
                            let stop = spawn_worker(&config, &records, &pod.name, &ip);
                            stops.insert(pod.name, stop);
                        }
                        // A Pod deleted without terminating first (forced) is stopped too.
                        PodEvent::Terminating { pod } | PodEvent::Deleted { pod } => {
                            if let Some(stop) = stops.remove(&pod.name) {
                                let _ = stop.send(());
                            }
                        }
                        PodEvent::Created { .. } => {}
                    }
                }
            }
        });
        CeleryPodRunner { records, follower }
    }

    /// Every worker started so far, in start order.
    pub fn records(&self) -> Vec<WorkerRecord> {
        lock(&self.records).clone()
    }

    pub fn record(&self, pod: &str) -> Option<WorkerRecord> {
        lock(&self.records).iter().find(|r| r.pod == pod).cloned()
    }

    /// Pods whose worker process is still running.
    pub fn running(&self) -> Vec<String> {
        lock(&self.records)
            .iter()
            .filter(|r| r.running())
            .map(|r| r.pod.clone())
            .collect()
    }

    /// Polls the records until `check` holds; false after `timeout`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&[WorkerRecord]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if check(&lock(&self.records)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for CeleryPodRunner {
    fn drop(&mut self) {
        self.follower.abort();
        for record in lock(&self.records).iter().filter(|r| r.running()) {
            // The supervising tasks may never run again (the runtime may be shutting
            // down), so kill the groups here. A group id is its leader's pid; a leader
            // still marked running is unreaped (so its pid not reused), except in the
            // instant between its supervisor reaping it and recording the exit.
            signal_group(record.pid, libc::SIGKILL);
        }
    }
}

/// `program` started after the container's start-up delay: a shell that sleeps, then
/// becomes the worker (so the kubelet's signals reach the worker, or end the sleep).
fn delayed(program: &str, delay: Duration) -> Command {
    if delay.is_zero() {
        return Command::new(program);
    }
    let mut shell = Command::new("sh");
    shell.args([
        "-c",
        "sleep \"$1\" && shift && exec \"$0\" \"$@\"",
        program,
        &format!("{:.3}", delay.as_secs_f64()),
    ]);
    shell
}

fn worker_command(config: &CeleryPodConfig, pod: &str, ip: &str) -> Command {
    let mut command = match &config.program {
        Some(worker) => {
            let mut command = delayed(&worker.program, config.start_delay);
            command
                .args(worker.args.iter().map(|a| a.replace("{pod}", pod)))
                .current_dir(&worker.dir)
                .envs(worker.env.iter().map(|(k, v)| (k, v)));
            command
        }
        None => {
            let mut command = delayed("python3", config.start_delay);
            command
                .args(["-m", "celery", "-A", "worker_app", "worker"])
                .args(["--hostname", &format!("celery@{pod}")])
                .args(["-Q", &config.queues])
                .args(["--concurrency", &config.concurrency.to_string()])
                .args(["--pool", &config.pool, "--loglevel", "INFO"])
                .args(&config.extra_args)
                .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/celery"))
                .env("WPA_TEST_BROKER", &config.broker)
                .env(
                    "WPA_TEST_ACKS_LATE",
                    if config.acks_late { "1" } else { "0" },
                )
                .envs(config.env.iter().map(|(k, v)| (k, v)));
            command
        }
    };
    command
        .env("POD_NAME", pod)
        .env("POD_IP", ip)
        .stdin(Stdio::null())
        // Its own process group, so SIGKILL reaches prefork children too, as a container's
        // cgroup kill would.
        .process_group(0)
        .kill_on_drop(true);
    if let Some((url, key)) = &config.record {
        command
            .env("WPA_TEST_RECORD_REDIS", url)
            .env("WPA_TEST_RECORD_KEY", key);
    }
    match config
        .log_dir
        .as_ref()
        .and_then(|dir| std::fs::File::create(dir.join(format!("{pod}.log"))).ok())
    {
        Some(log) => {
            let err = log.try_clone().map_or(Stdio::null(), Stdio::from);
            command.stdout(Stdio::from(log)).stderr(err);
        }
        None => {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    command
}

/// Starts a Pod's worker and a task supervising it; sending on (or dropping) the returned
/// sender starts the termination.
fn spawn_worker(
    config: &CeleryPodConfig,
    records: &Records,
    pod: &str,
    ip: &str,
) -> mpsc::UnboundedSender<()> {
    let child = worker_command(config, pod, ip)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start a celery worker for {pod}: {e}"));
    let pid = child.id().expect("a just-started child has a pid");
    let index = {
        let mut records = lock(records);
        records.push(WorkerRecord {
            pod: pod.to_string(),
            ip: ip.to_string(),
            pid,
            started_at: Instant::now(),
            terminated_at: None,
            killed_at: None,
            exited_at: None,
            exit: None,
        });
        records.len() - 1
    };
    let (stop, stopped) = mpsc::unbounded_channel();
    tokio::spawn(supervise(
        child,
        stopped,
        Arc::clone(records),
        index,
        config.kill_grace,
    ));
    stop
}

/// Waits for the worker to exit; on a stop request sends SIGTERM, then SIGKILL to the group
/// after `grace`. Owning the `Child` here means the pid is signalled only before it is
/// reaped, so it cannot name a reused process.
async fn supervise(
    mut child: Child,
    mut stopped: mpsc::UnboundedReceiver<()>,
    records: Records,
    index: usize,
    grace: Duration,
) {
    let pid = lock(&records)[index].pid;
    let mut kill_at: Option<tokio::time::Instant> = None;
    let mut stop_requested = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            // A request, or the runner going away (the sender dropped).
            _ = stopped.recv(), if !stop_requested => {
                stop_requested = true;
                // The kubelet signals the container's main process only.
                signal_process(pid, libc::SIGTERM);
                lock(&records)[index].terminated_at = Some(Instant::now());
                kill_at = Some(tokio::time::Instant::now() + grace);
            }
            _ = tokio::time::sleep_until(kill_at.unwrap_or_else(tokio::time::Instant::now)),
                if kill_at.is_some() => {
                kill_at = None;
                signal_group(pid, libc::SIGKILL);
                lock(&records)[index].killed_at = Some(Instant::now());
            }
        }
    };
    let mut records = lock(&records);
    records[index].exited_at = Some(Instant::now());
    records[index].exit = status.ok();
}

/// SIGTERM, SIGKILL… to one process (not its group).
#[allow(unsafe_code)]
pub fn signal_process(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    assert!(pid > 1, "refusing to signal pid {pid}");
    // SAFETY: kill(2) takes plain integers; a positive pid names one process.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// A signal to the process group `leader` leads.
#[allow(unsafe_code)]
pub fn signal_group(leader: u32, signal: libc::c_int) {
    let pgid = libc::pid_t::try_from(leader).expect("pid fits pid_t");
    assert!(pgid > 1, "refusing to signal process group {pgid}");
    // SAFETY: kill(2) takes plain integers; a negative pid names one process group.
    unsafe {
        libc::kill(-pgid, signal);
    }
}
