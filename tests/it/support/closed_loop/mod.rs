//! A closed loop of real Celery workers, for the benchmarks (scenario 4) and the tests. The
//! API double runs the Deployment's Pods, the pod runner starts one Celery worker per Pod and
//! stops it as a kubelet would (SIGTERM, SIGKILL after a grace shorter than the tasks), the
//! controller binary scales the Deployment from the queue, and a load of
//! `wpa.test.sleep` tasks goes in. A run ends once the Deployment has been back at 0 for a
//! while with no worker left, or at a timeout. What counts is what happened to the tasks
//! (the workers record every run in a ledger), to the workers, and what the pods cost.

pub mod load;
pub mod tally;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::support::apiserver::{ApiServerDouble, Gvr, PodIps, objects};
use crate::support::broker_procs::unique;
use crate::support::brokers::redis_broker;
use crate::support::brokers_amqp;
use crate::support::celery_pods::{CeleryPodConfig, CeleryPodRunner};
use crate::support::celery_tasks::{TaskLedger, send_sleep_tasks_at, send_sleep_tasks_each};
use crate::support::controller::{ControllerProcess, wpa};
use crate::support::framework_loop::{polled, scale_writes};
use load::Load;
use tally::{Clock, Figures, Inputs};

pub const NAMESPACE: &str = "closed-loop";
/// A Redis database of its own: SIGKILLed tasks leave entries in kombu's per-database
/// `unacked` hash, which must not mix with other suites' queues.
const DB: u8 = 12;
const DEPLOYMENT: &str = "worker";
/// How long the Deployment must stay at 0 with no worker running for a run to end (a few
/// polls, so a scale back up, e.g. for a redelivered task, is not missed).
const SETTLE: Duration = Duration::from_secs(10);
/// Workers may take long to start on a loaded machine; the controller's first poll does not.
const FIRST_POLL: Duration = Duration::from_secs(60);
/// Open edX's LMS worker queues as Tutor configures them (`--queues`); tasks go to the first.
pub const TUTOR_LMS_QUEUES: [&str; 3] = [
    "edx.lms.core.default",
    "edx.lms.core.high",
    "edx.lms.core.high_mem",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CeleryBroker {
    Redis,
    Rabbitmq,
}

impl CeleryBroker {
    pub fn label(self) -> &'static str {
        match self {
            CeleryBroker::Redis => "Redis",
            CeleryBroker::Rabbitmq => "RabbitMQ",
        }
    }
}

/// Which queues the workers consume and how the WPA reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One queue; on RabbitMQ declared before the controller starts and read over AMQP
    /// only.
    OneQueue,
    /// Tutor's three LMS queues (`queueURIs`) as a new install meets them: on RabbitMQ in a
    /// vhost of their own that nobody has declared anything in yet, read with
    /// `?management=`; on Redis, keys nobody has written.
    TutorLms,
}

impl Layout {
    pub fn label(self) -> &'static str {
        match self {
            Layout::OneQueue => "one queue",
            Layout::TutorLms => "Tutor LMS queues",
        }
    }
}

impl Case {
    /// The queues and where the broker sees the Pods, for reports.
    pub fn setup_label(&self) -> String {
        match self.pod_ips {
            PodIps::Shared => format!("{}, Pods at one IP", self.layout.label()),
            _ => self.layout.label().to_string(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Case {
    pub broker: CeleryBroker,
    pub layout: Layout,
    /// Celery's `task_acks_late`.
    pub acks_late: bool,
    /// `spec.workerSignal`: "Auto" (worker-aware scale-in) or "Off" (practo's decisions).
    pub signal: &'static str,
    pub load: Load,
    /// SIGTERM to SIGKILL (terminationGracePeriodSeconds).
    pub grace: Duration,
    /// Longest a run lasts after the first task is sent.
    pub timeout: Duration,
    pub redis_port: u16,
    /// Where the workers connect from: each Pod at its own IP ([`PodIps::Loopback`], as in
    /// a cluster), or all at one ([`PodIps::Shared`]: host networking, or a NAT between the
    /// Pods and RabbitMQ). RabbitMQ's consumer reports name Pods by that address.
    pub pod_ips: PodIps,
    /// The WPA's sizing: `targetMessagesPerWorker`, and `maxWaitSeconds` when set.
    pub sizing: Sizing,
    /// How long a Pod takes before its worker starts (counted in its worker-seconds).
    pub start_delay: Duration,
    /// The controller's flags: every one at its default, or the idle window and the
    /// scale-down delay shortened (20 s and 30 s) so that a run takes minutes.
    pub flags: Flags,
    /// `--drain-before-scale-in` (true is the default and is not passed).
    pub drain: bool,
}

/// The controller flags of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flags {
    Defaults,
    ShortDelays,
}

impl Flags {
    fn args(self) -> [&'static str; 4] {
        match self {
            Flags::Defaults => [
                "--resync-period=20",
                "--idle-window=60",
                "--scale-down-delay-after-last-scale-activity=600",
                "--log-level=info",
            ],
            Flags::ShortDelays => [
                "--resync-period=20",
                "--idle-window=20",
                "--scale-down-delay-after-last-scale-activity=30",
                "--log-level=info",
            ],
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Flags::Defaults => "default flags",
            Flags::ShortDelays => "idle window 20 s, scale-down delay 30 s",
        }
    }
}

/// How the WPA sizes the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizing {
    pub target_messages_per_worker: i32,
    pub max_wait_seconds: Option<i32>,
    pub max_replicas: i32,
}

impl Default for Sizing {
    /// Issue 23's: 5 per worker, at most 10.
    fn default() -> Self {
        Sizing {
            target_messages_per_worker: 5,
            max_wait_seconds: None,
            max_replicas: 10,
        }
    }
}

impl Sizing {
    pub fn label(&self) -> String {
        match self.max_wait_seconds {
            Some(wait) => format!("maxWaitSeconds {wait}"),
            None => format!("{} per worker", self.target_messages_per_worker),
        }
    }
}

impl Case {
    fn name(&self) -> String {
        format!(
            "closed-loop-{}-{}{}-{}-{}-{}",
            self.broker.label().to_lowercase(),
            match (self.layout, self.sizing.max_wait_seconds) {
                (Layout::OneQueue, None) =>
                    format!("one-{}", self.sizing.target_messages_per_worker),
                (Layout::TutorLms, None) =>
                    format!("tutor-{}", self.sizing.target_messages_per_worker),
                (_, Some(wait)) => format!("wait{wait}"),
            },
            if self.pod_ips == PodIps::Shared {
                "-shared-ip"
            } else {
                ""
            },
            if self.acks_late { "late" } else { "early" },
            self.signal.to_lowercase(),
            self.load.tasks()
        ) + if self.drain { "" } else { "-nodrain" }
    }
}

pub struct Outcome {
    pub case: Case,
    pub figures: Figures,
    /// Replica counts written, "0 -> 8 -> ...".
    pub path: String,
    /// The controller's decision reasons as written to the status, consecutive repeats once.
    pub reasons: Vec<String>,
    /// `None`: back at 0; otherwise the replicas when the run timed out.
    pub stuck_at: Option<i64>,
    pub took: Duration,
    /// Lines the controller logged at ERROR level.
    pub error_lines: Vec<String>,
    /// The reasons of the controller's Events about the WPA (`DrainStarted`, `Drained`...),
    /// each as often as it happened.
    pub events: Vec<String>,
    /// With maxWaitSeconds: when the status first said the wait model was learned (seconds
    /// after the first send), and the last `status.wait`.
    pub wait_learned_at: Option<f64>,
    pub last_wait_status: Option<Value>,
}

/// Where Celery connects, what the workers consume and what the WPA reads.
struct Endpoints {
    celery: String,
    /// The workers' `-Q`; tasks go to the first queue.
    queues: Vec<String>,
    uris: Vec<String>,
    /// A RabbitMQ vhost made for the run.
    vhost: Option<String>,
}

fn endpoints(case: &Case) -> Endpoints {
    let amqp = |vhost: &str| {
        format!(
            "amqp://guest:guest@127.0.0.1:{}/{vhost}",
            brokers_amqp::AMQP_PORT
        )
    };
    match (case.broker, case.layout) {
        (CeleryBroker::Redis, layout) => {
            let queues: Vec<String> = match layout {
                Layout::OneQueue => vec![unique("wpa-closed-loop")],
                // Tutor's names, made unique: the database is shared with other runs.
                Layout::TutorLms => {
                    let run = unique("run");
                    TUTOR_LMS_QUEUES
                        .iter()
                        .map(|q| format!("{q}.{run}"))
                        .collect()
                }
            };
            Endpoints {
                celery: redis_broker(case.redis_port, DB),
                uris: queues
                    .iter()
                    .map(|q| format!("redis://127.0.0.1:{}/{DB}/{q}", case.redis_port))
                    .collect(),
                queues,
                vhost: None,
            }
        }
        (CeleryBroker::Rabbitmq, Layout::OneQueue) => {
            let queue = unique("wpa-closed-loop");
            Endpoints {
                celery: amqp(""),
                uris: vec![format!("{}/%2F/{queue}", amqp(""))],
                queues: vec![queue],
                vhost: None,
            }
        }
        (CeleryBroker::Rabbitmq, Layout::TutorLms) => {
            let vhost = unique("wpa-tutor");
            let queues: Vec<String> = TUTOR_LMS_QUEUES.iter().map(|q| q.to_string()).collect();
            Endpoints {
                celery: amqp(&vhost),
                uris: queues
                    .iter()
                    .map(|q| {
                        format!(
                            "{}/{q}?management={}",
                            amqp(&vhost),
                            brokers_amqp::MANAGEMENT
                        )
                    })
                    .collect(),
                queues,
                vhost: Some(vhost),
            }
        }
    }
}

/// The WPA of a run: min 0 and the case's sizing.
fn wpa_spec(case: &Case, ends: &Endpoints) -> Value {
    let mut spec = json!({
        "minReplicas": 0,
        "maxReplicas": case.sizing.max_replicas,
        "targetMessagesPerWorker": case.sizing.target_messages_per_worker,
        "deploymentName": DEPLOYMENT,
        "workerSignal": case.signal,
    });
    if let Some(wait) = case.sizing.max_wait_seconds {
        spec["maxWaitSeconds"] = json!(wait);
    }
    match ends.uris.as_slice() {
        [one] => spec["queueURI"] = json!(one),
        several => spec["queueURIs"] = json!(several),
    }
    spec
}

pub async fn run(case: Case, dir: &Path) -> Result<Outcome> {
    let name = case.name();
    let ends = endpoints(&case);
    if let Some(vhost) = &ends.vhost {
        brokers_amqp::create_vhost(vhost).await;
    }
    if case.broker == CeleryBroker::Rabbitmq && case.layout == Layout::OneQueue {
        // Declared as Celery declares it (durable, no arguments), so the controller's first
        // passive declare finds it before any task is sent.
        let (_conn, channel) = brokers_amqp::open(brokers_amqp::AMQP_PORT, "/").await;
        brokers_amqp::declare(&channel, &ends.queues[0], true).await;
    }
    let server = ApiServerDouble::start().await?;
    server.simulate_pods(true);
    server.set_pod_ips(case.pod_ips);
    let mut deployment = objects::deployment(NAMESPACE, DEPLOYMENT, 0);
    // The grace the pod runner gives, on the Pods too: the controller bounds a drain by it.
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] =
        json!(case.grace.as_secs());
    server
        .insert(deployment)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;

    let ledger = TaskLedger::new(
        &redis_broker(case.redis_port, DB),
        &unique("wpa-closed-loop-ledger"),
    );
    let logs = dir.join(&name);
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let clock = Clock::now();
    let mut config = CeleryPodConfig::new(
        &Gvr::DEPLOYMENTS,
        NAMESPACE,
        DEPLOYMENT,
        &ends.celery,
        &ends.queues.join(","),
    );
    config.acks_late = case.acks_late;
    config.kill_grace = case.grace;
    config.record = ledger.record_target();
    config.log_dir = Some(logs);
    config.start_delay = case.start_delay;
    let runner = CeleryPodRunner::start(&server, config);

    server
        .insert(wpa(NAMESPACE, DEPLOYMENT, wpa_spec(&case, &ends)))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut flags = case.flags.args().to_vec();
    if !case.drain {
        flags.push("--drain-before-scale-in=false");
    }
    let mut controller = ControllerProcess::start(&server, dir, &name, &flags);
    let polled_by = Instant::now() + FIRST_POLL;
    // A queue nobody has declared yet may be an error, which is what a run may want to show.
    while !polled(&server, NAMESPACE, DEPLOYMENT) {
        if Instant::now() >= polled_by || controller.has_exited() {
            bail!(
                "the controller never polled the queue; log: {}",
                controller.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let started = Instant::now();
    let first_sent = tally::unix_now();
    let mut sent = Vec::with_capacity(case.load.tasks());
    for wave in &case.load.waves {
        tokio::time::sleep_until((started + wave.at).into()).await;
        let (broker, to, seconds) = (
            ends.celery.clone(),
            ends.queues[0].clone(),
            wave.seconds.clone(),
        );
        let offsets = wave.offsets.clone();
        let ids = tokio::task::spawn_blocking(move || {
            if offsets.is_empty() {
                send_sleep_tasks_each(&broker, &to, &seconds)
            } else {
                send_sleep_tasks_at(&broker, &to, &seconds, &offsets)
            }
        })
        .await
        .context("sending tasks")?;
        sent.extend(ids);
    }

    let ids: Vec<String> = sent.iter().map(|(id, _)| id.clone()).collect();
    let mut zero_since: Option<Instant> = None;
    let stuck_at = loop {
        if controller.has_exited() {
            bail!("the controller exited; log: {}", controller.log.display());
        }
        let replicas = server
            .get(&Gvr::DEPLOYMENTS, Some(NAMESPACE), DEPLOYMENT)
            .and_then(|d| d["spec"]["replicas"].as_i64())
            .unwrap_or(-1);
        // At rest once every task ran (a run that never scaled up is not done).
        let at_rest =
            replicas == 0 && runner.running().is_empty() && ledger.tally(&ids).never_started == 0;
        zero_since = match (at_rest, zero_since) {
            (true, Some(since)) => Some(since),
            (true, None) => Some(Instant::now()),
            (false, _) => None,
        };
        if zero_since.is_some_and(|since| since.elapsed() >= SETTLE) {
            break None;
        }
        if started.elapsed() >= case.timeout {
            break Some(replicas);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let took = started.elapsed();
    let end = Instant::now();

    let scale_writes = scale_writes(&server, NAMESPACE, DEPLOYMENT);
    let started_runs = ledger.started();
    let finished_runs = ledger.finished();
    let received = ledger.received();
    let cancelled = ledger.cancelled();
    let workers = runner.records();
    let seconds: Vec<f64> = case.load.seconds().collect();
    let figures = tally::figures(&Inputs {
        sent: &sent,
        seconds: &seconds,
        tally: ledger.tally(&ids),
        started: &started_runs,
        finished: &finished_runs,
        received: &received,
        cancelled: &cancelled,
        workers: &workers,
        clock,
        scale_writes: &scale_writes,
        first_sent,
        end,
    });
    let reasons = decision_reasons(&server);
    let events = event_occurrences(&server);
    let (wait_learned_at, last_wait_status) = wait_statuses(&server, first_sent);
    controller.terminate();
    let error_lines = controller
        .log_text()
        .lines()
        .filter(|line| line.contains(" ERROR "))
        .map(str::to_string)
        .collect();
    // SIGKILLs whatever still runs (only after a timeout).
    drop(runner);
    remove_queues(&case, &ends).await;
    Ok(Outcome {
        path: tally::replica_path(&scale_writes),
        case,
        figures,
        reasons,
        stuck_at,
        took,
        error_lines,
        events,
        wait_learned_at,
        last_wait_status,
    })
}

/// `lastDecisionReason` of each status write, consecutive repeats once.
fn decision_reasons(server: &ApiServerDouble) -> Vec<String> {
    let mut reasons: Vec<String> = Vec::new();
    let path = format!("/workerpodautoscalers/{DEPLOYMENT}/status");
    for request in server.requests("PATCH", &path) {
        let Some(reason) = request.body["status"]["lastDecisionReason"].as_str() else {
            continue;
        };
        if reasons.last().map(String::as_str) != Some(reason) {
            reasons.push(reason.to_string());
        }
    }
    reasons
}

/// The reasons of the Events about the WPA, each repeated as often as it happened: the
/// controller's recorder folds a repeat of a reason into one Event with a series count.
fn event_occurrences(server: &ApiServerDouble) -> Vec<String> {
    let mut reasons = Vec::new();
    for gvr in [Gvr::EVENTS, Gvr::CORE_EVENTS] {
        for event in server.list(&gvr, Some(NAMESPACE)) {
            let regarding = if event["regarding"].is_object() {
                &event["regarding"]
            } else {
                &event["involvedObject"]
            };
            let Some(reason) = event["reason"].as_str() else {
                continue;
            };
            if regarding["name"] != DEPLOYMENT {
                continue;
            }
            let count = event["series"]["count"]
                .as_u64()
                .or_else(|| event["count"].as_u64())
                .unwrap_or(1)
                .max(1);
            reasons.extend((0..count).map(|_| reason.to_string()));
        }
    }
    reasons
}

/// When a status first said `wait.mode: MaxWait` (seconds after `first_sent`), and the last
/// `status.wait` written.
fn wait_statuses(server: &ApiServerDouble, first_sent: f64) -> (Option<f64>, Option<Value>) {
    let path = format!("/workerpodautoscalers/{DEPLOYMENT}/status");
    let writes = server.requests("PATCH", &path);
    let learned = writes
        .iter()
        .find(|r| r.body["status"]["wait"]["mode"] == "MaxWait")
        .map(|r| r.at.as_millisecond() as f64 / 1000.0 - first_sent);
    let last = writes
        .iter()
        .rev()
        .map(|r| &r.body["status"]["wait"])
        .find(|w| w.is_object())
        .cloned();
    (learned, last)
}

/// Deletes the run's queues (the whole vhost when the run made one), and on Redis the
/// `unacked` entries SIGKILLed workers left for them (kombu would restore them to the queue
/// after its visibility timeout, an hour).
async fn remove_queues(case: &Case, ends: &Endpoints) {
    match (case.broker, &ends.vhost) {
        (CeleryBroker::Rabbitmq, Some(vhost)) => brokers_amqp::delete_vhost(vhost).await,
        (CeleryBroker::Rabbitmq, None) => {
            let (_conn, channel) = brokers_amqp::open(brokers_amqp::AMQP_PORT, "/").await;
            for queue in &ends.queues {
                brokers_amqp::delete(&channel, queue).await;
            }
        }
        (CeleryBroker::Redis, _) => {
            let url = redis_broker(case.redis_port, DB);
            let queues = ends.queues.clone();
            // Best effort: leftovers only clutter the run's own database.
            let _ = tokio::task::spawn_blocking(move || remove_redis_queues(&url, &queues)).await;
        }
    }
}

fn remove_redis_queues(url: &str, queues: &[String]) -> redis::RedisResult<()> {
    use redis::Commands;
    let mut conn = redis::Client::open(url)?.get_connection()?;
    conn.del::<_, ()>(queues)?;
    let unacked: std::collections::HashMap<String, String> = conn.hgetall("unacked")?;
    for (tag, entry) in unacked {
        // kombu stores [message, exchange, routing_key]; the routing key is the queue.
        let ours = serde_json::from_str::<serde_json::Value>(&entry)
            .is_ok_and(|v| v[2].as_str().is_some_and(|q| queues.iter().any(|o| o == q)));
        if ours {
            conn.hdel::<_, _, ()>("unacked", &tag)?;
            conn.zrem::<_, _, ()>("unacked_index", &tag)?;
        }
    }
    Ok(())
}
