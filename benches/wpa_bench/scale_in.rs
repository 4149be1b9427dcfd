//! Scenario 4: a closed loop of real Celery workers. The API double runs the Deployment's
//! Pods, the pod runner starts one Celery worker per Pod and stops it as a kubelet would
//! (SIGTERM, SIGKILL after a grace shorter than the tasks), the release controller scales
//! the Deployment from the queue, and a seeded load of `wpa.test.sleep` tasks goes in. A
//! run ends once the Deployment has been back at 0 for a while with no worker left, or at
//! a timeout. What counts is what happened to the tasks (the workers record every run in
//! a ledger) and to the workers.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::latency::{NAMESPACE, metrics_available};
use crate::scale_in_load::Load;
use crate::scale_in_tally::{self, Clock, Figures, Inputs};
use crate::support::apiserver::{ApiServerDouble, Gvr, objects};
use crate::support::broker_procs::unique;
use crate::support::brokers::redis_broker;
use crate::support::brokers_amqp;
use crate::support::celery_pods::{CeleryPodConfig, CeleryPodRunner};
use crate::support::celery_tasks::{TaskLedger, send_sleep_tasks_each};
use crate::support::controller::{ControllerProcess, wpa};

/// A Redis database of its own: SIGKILLed tasks leave entries in kombu's per-database
/// `unacked` hash, which must not mix with other suites' queues.
const DB: u8 = 12;
const DEPLOYMENT: &str = "worker";
/// How long the Deployment must stay at 0 with no worker running for a run to end (a few
/// polls, so a scale back up, e.g. for a redelivered task, is not missed).
const SETTLE: Duration = Duration::from_secs(10);
/// Workers may take long to start on a loaded machine; the controller's first poll does not.
const FIRST_POLL: Duration = Duration::from_secs(60);

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

#[derive(Debug, Clone)]
pub struct Case {
    pub broker: CeleryBroker,
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
}

impl Case {
    fn name(&self) -> String {
        format!(
            "scale-in-{}-{}-{}-{}",
            self.broker.label().to_lowercase(),
            if self.acks_late { "late" } else { "early" },
            self.signal.to_lowercase(),
            self.load.tasks()
        )
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
}

/// Where Celery connects and what the WPA's queueURI is.
struct Endpoints {
    celery: String,
    uri: String,
}

fn endpoints(case: &Case, queue: &str) -> Endpoints {
    match case.broker {
        CeleryBroker::Redis => Endpoints {
            celery: redis_broker(case.redis_port, DB),
            uri: format!("redis://127.0.0.1:{}/{DB}/{queue}", case.redis_port),
        },
        CeleryBroker::Rabbitmq => Endpoints {
            celery: format!("amqp://guest:guest@127.0.0.1:{}//", brokers_amqp::AMQP_PORT),
            uri: format!(
                "amqp://guest:guest@127.0.0.1:{}/%2F/{queue}",
                brokers_amqp::AMQP_PORT
            ),
        },
    }
}

pub async fn run(case: Case, dir: &Path) -> Result<Outcome> {
    let name = case.name();
    let queue = unique("wpa-scale-in");
    let ends = endpoints(&case, &queue);
    if case.broker == CeleryBroker::Rabbitmq {
        // Declared as Celery declares it (durable, no arguments), so the controller's first
        // passive declare finds it before any task is sent.
        let (_conn, channel) = brokers_amqp::open(brokers_amqp::AMQP_PORT, "/").await;
        brokers_amqp::declare(&channel, &queue, true).await;
    }
    let server = ApiServerDouble::start().await?;
    server.simulate_pods(true);
    server
        .insert(objects::deployment(NAMESPACE, DEPLOYMENT, 0))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;

    let ledger = TaskLedger::new(
        &redis_broker(case.redis_port, DB),
        &unique("wpa-scale-in-ledger"),
    );
    let logs = dir.join(&name);
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let clock = Clock::now();
    let mut config = CeleryPodConfig::new(
        &Gvr::DEPLOYMENTS,
        NAMESPACE,
        DEPLOYMENT,
        &ends.celery,
        &queue,
    );
    config.acks_late = case.acks_late;
    config.kill_grace = case.grace;
    config.record = ledger.record_target();
    config.log_dir = Some(logs);
    let runner = CeleryPodRunner::start(&server, config);

    server
        .insert(wpa(
            NAMESPACE,
            DEPLOYMENT,
            json!({
                "minReplicas": 0,
                "maxReplicas": 10,
                "targetMessagesPerWorker": 5,
                "deploymentName": DEPLOYMENT,
                "queueURI": ends.uri,
                "workerSignal": case.signal,
            }),
        ))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    // Default flags but two, shortened so that a run takes minutes (defaults 600 and 60).
    let mut controller = ControllerProcess::start(
        &server,
        dir,
        &name,
        &[
            "--resync-period=20",
            "--idle-window=20",
            "--scale-down-delay-after-last-scale-activity=30",
            "--log-level=info",
        ],
    );
    let polled_by = Instant::now() + FIRST_POLL;
    while !metrics_available(&server, DEPLOYMENT) {
        if Instant::now() >= polled_by || controller.has_exited() {
            bail!(
                "the controller never polled the queue; log: {}",
                controller.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let started = Instant::now();
    let first_sent = scale_in_tally::unix_now();
    let mut sent = Vec::with_capacity(case.load.tasks());
    for wave in &case.load.waves {
        tokio::time::sleep_until((started + wave.at).into()).await;
        let (broker, to, seconds) = (ends.celery.clone(), queue.clone(), wave.seconds.clone());
        let ids =
            tokio::task::spawn_blocking(move || send_sleep_tasks_each(&broker, &to, &seconds))
                .await
                .context("sending tasks")?;
        sent.extend(ids);
    }

    let mut zero_since: Option<Instant> = None;
    let stuck_at = loop {
        if controller.has_exited() {
            bail!("the controller exited; log: {}", controller.log.display());
        }
        let replicas = server
            .get(&Gvr::DEPLOYMENTS, Some(NAMESPACE), DEPLOYMENT)
            .and_then(|d| d["spec"]["replicas"].as_i64())
            .unwrap_or(-1);
        let at_rest = replicas == 0 && runner.running().is_empty();
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

    let scale_writes = scale_writes(&server);
    let started_runs = ledger.started();
    let finished_runs = ledger.finished();
    let workers = runner.records();
    let figures = scale_in_tally::figures(&Inputs {
        sent: &sent,
        tally: ledger.tally(&sent),
        started: &started_runs,
        finished: &finished_runs,
        workers: &workers,
        clock,
        scale_writes: &scale_writes,
        first_sent,
    });
    let reasons = decision_reasons(&server);
    controller.terminate();
    // SIGKILLs whatever still runs (only after a timeout).
    drop(runner);
    remove_queue(&case, &queue).await;
    Ok(Outcome {
        path: scale_in_tally::replica_path(&scale_writes),
        case,
        figures,
        reasons,
        stuck_at,
        took,
    })
}

/// (Unix seconds, replicas) of the successful scale writes, oldest first.
fn scale_writes(server: &ApiServerDouble) -> Vec<(f64, i64)> {
    let path = format!("/namespaces/{NAMESPACE}/deployments/{DEPLOYMENT}/scale");
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

/// Deletes the run's queue, and on Redis the `unacked` entries SIGKILLed workers left for
/// it (kombu would restore them to the queue after its visibility timeout, an hour).
async fn remove_queue(case: &Case, queue: &str) {
    match case.broker {
        CeleryBroker::Rabbitmq => {
            let (_conn, channel) = brokers_amqp::open(brokers_amqp::AMQP_PORT, "/").await;
            brokers_amqp::delete(&channel, queue).await;
        }
        CeleryBroker::Redis => {
            let url = redis_broker(case.redis_port, DB);
            let queue = queue.to_string();
            // Best effort: leftovers only clutter the bench's own database.
            let _ = tokio::task::spawn_blocking(move || remove_redis_queue(&url, &queue)).await;
        }
    }
}

fn remove_redis_queue(url: &str, queue: &str) -> redis::RedisResult<()> {
    use redis::Commands;
    let mut conn = redis::Client::open(url)?.get_connection()?;
    conn.del::<_, ()>(queue)?;
    let unacked: std::collections::HashMap<String, String> = conn.hgetall("unacked")?;
    for (tag, entry) in unacked {
        // kombu stores [message, exchange, routing_key]; the routing key is the queue.
        let ours = serde_json::from_str::<serde_json::Value>(&entry)
            .is_ok_and(|v| v[2].as_str() == Some(queue));
        if ours {
            conn.hdel::<_, _, ()>("unacked", &tag)?;
            conn.zrem::<_, _, ()>("unacked_index", &tag)?;
        }
    }
    Ok(())
}
