//! Scenarios 1 and 1b: how long from a message reaching the broker to the scale PATCH
//! reaching the API server.
//!
//! Every trial has its own queue, Deployment and WPA, so no trial waits for a scale-down
//! of the one before. Trials run in batches: a batch's WPAs are created, the bench waits
//! until the controller has polled each queue once (`MetricsAvailable=True`), then pushes
//! one trial's messages at a time at random moments spread over at least one poll
//! interval (so the push lands at a random phase of the poll loop, as in production).
//! The latency of a trial is the API double's timestamp of the matching scale PATCH minus
//! the moment the broker acknowledged the push.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use rand::Rng;
use serde_json::{Value, json};

use crate::brokers::{Broker, Flavor, Queue, SQS_SECRET};
use crate::support::apiserver::{ApiServerDouble, Gvr, objects};
use crate::support::controller::{ControllerProcess, condition, metric_value, wpa};

pub const NAMESPACE: &str = "bench";

/// One latency configuration.
#[derive(Debug, Clone)]
pub struct Case {
    pub flavor: Flavor,
    /// Poll interval in seconds (the provider's flag).
    pub interval: u64,
    pub trials: usize,
    /// WPAs alive at once.
    pub batch: usize,
    /// Replicas (and available replicas) of each Deployment before the push.
    pub start_replicas: i32,
    /// Messages on each queue before the push (none at zero replicas).
    pub prefill: usize,
    /// Messages pushed by the trial.
    pub push: usize,
    /// The replica count whose PATCH ends the trial.
    pub expect: i32,
    pub target_per_worker: i32,
    pub max_replicas: i32,
    /// Run the controller with every flag at its default, client-side API pacing (5 QPS,
    /// burst 10) included; otherwise pacing is off and `interval` is set explicitly.
    pub default_flags: bool,
}

pub struct Outcome {
    pub case: Case,
    pub samples: Vec<Duration>,
    /// Trials whose PATCH never came within the deadline.
    pub missing: usize,
    /// Polls per queue per minute, from the controller's poll histogram count.
    pub polls_per_queue_minute: Option<f64>,
}

struct Trial {
    queue: Queue,
    deployment: String,
    offset: Duration,
    pushed_at: Option<jiff::Timestamp>,
}

pub async fn run(case: Case, broker: &mut Broker, dir: &Path) -> Result<Outcome> {
    let server = ApiServerDouble::start().await?;
    // Deployments report their replicas available as soon as they are scaled.
    server.simulate_workloads(Some(Duration::ZERO));
    if let Some(secret) = broker.secret(NAMESPACE) {
        server
            .insert(secret)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let interval_flag = case.flavor.interval_flag(case.interval);
    let name = format!(
        "latency-{}{}",
        case.flavor.metric_provider(),
        if case.default_flags { "-defaults" } else { "" }
    );
    // The test harness's fast settings, put back to the controller's (practo's) defaults.
    let mut flags = vec![
        "--resync-period=20",
        "--idle-window=60",
        "--scale-down-delay-after-last-scale-activity=600",
        "--log-level=info",
    ];
    if !case.default_flags {
        // Client-side API pacing off: the figures are the controller's own cost and
        // reaction; the from-zero scenario measures the same with pacing on.
        flags.push("--k8s-api-qps=0");
        flags.push(&interval_flag);
    }
    let controller = ControllerProcess::start(&server, dir, &name, &flags);

    let interval = Duration::from_secs(case.interval);
    let mut samples = Vec::new();
    let mut missing = 0;
    let mut polls = 0.0;
    let mut queue_seconds = 0.0;
    let mut done = 0;
    let mut batch_index = 0;
    while done < case.trials {
        let size = case.batch.min(case.trials - done);
        let mut trials = Vec::with_capacity(size);
        // Offsets spread the pushes over max(one interval, 100 ms per trial).
        let window = interval.max(Duration::from_millis(100) * size as u32);
        for i in 0..size {
            let queue_name =
                crate::support::broker_procs::unique(&format!("wpa-bench-{batch_index}"));
            let queue = broker.create(&queue_name).await?;
            if case.prefill > 0 {
                broker.push(&queue, case.prefill).await?;
            }
            let deployment = format!("w{batch_index}-{i}");
            server
                .insert(objects::deployment_with_status(
                    NAMESPACE,
                    &deployment,
                    case.start_replicas,
                    case.start_replicas,
                ))
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            server
                .insert(wpa(
                    NAMESPACE,
                    &deployment,
                    spec(&case, &queue.uri, &deployment),
                ))
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let jitter = rand::rng().random_range(0.0..1.0);
            let offset = window.mul_f64((i as f64 + jitter) / size as f64);
            trials.push(Trial {
                queue,
                deployment,
                offset,
                pushed_at: None,
            });
        }
        wait_polled(&server, &trials, &controller, interval).await?;
        for t in &trials {
            if !scale_patches(&server, &t.deployment).is_empty() {
                bail!(
                    "{} was scaled before its trial started; the setup is wrong",
                    t.deployment
                );
            }
        }

        let polls_before = poll_count(&controller, case.flavor).await;
        let started = Instant::now();
        trials.sort_by_key(|t| t.offset);
        for t in &mut trials {
            tokio::time::sleep_until((started + t.offset).into()).await;
            broker.push(&t.queue, case.push).await?;
            t.pushed_at = Some(jiff::Timestamp::now());
        }
        // Generous: two intervals after the last push plus time for a slow, shared machine.
        let deadline = Instant::now() + interval * 2 + Duration::from_secs(30);
        loop {
            let scaled = trials
                .iter()
                .filter(|t| replicas(&server, &t.deployment) == Some(i64::from(case.expect)))
                .count();
            if scaled == trials.len() || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if batch_index == 0 {
            // Count polls over several intervals so the rate is not dominated by rounding
            // (the batch's loops started together, so their phases are aligned).
            let observe = Duration::from_secs(30).max(interval * 3 + interval / 2);
            tokio::time::sleep_until((started + observe).into()).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        if let (Some(before), Some(after)) =
            (polls_before, poll_count(&controller, case.flavor).await)
        {
            polls += after - before;
            queue_seconds += elapsed * trials.len() as f64;
        }

        for t in &trials {
            let pushed = t.pushed_at.unwrap_or_else(jiff::Timestamp::now);
            let patch = scale_patches(&server, &t.deployment)
                .into_iter()
                .find(|(at, replicas)| *replicas == i64::from(case.expect) && *at >= pushed);
            match patch {
                Some((at, _)) => {
                    let took = at.duration_since(pushed);
                    samples.push(Duration::try_from(took).unwrap_or(Duration::ZERO));
                }
                None => missing += 1,
            }
        }
        for t in &trials {
            let _ = server.delete(&Gvr::WORKER_POD_AUTOSCALERS, Some(NAMESPACE), &t.deployment);
            let _ = server.delete(&Gvr::DEPLOYMENTS, Some(NAMESPACE), &t.deployment);
            broker.remove(&t.queue).await;
        }
        server.clear_recorded();
        done += size;
        batch_index += 1;
    }
    drop(controller);
    Ok(Outcome {
        case,
        samples,
        missing,
        polls_per_queue_minute: (queue_seconds > 0.0).then(|| polls / queue_seconds * 60.0),
    })
}

fn spec(case: &Case, queue_uri: &str, deployment: &str) -> Value {
    let mut spec = json!({
        "minReplicas": 0,
        "maxReplicas": case.max_replicas,
        "targetMessagesPerWorker": case.target_per_worker,
        "deploymentName": deployment,
        "queueURI": queue_uri,
    });
    if case.flavor == Flavor::Sqs {
        spec["credentialsSecretRef"] = json!({"name": SQS_SECRET});
    }
    spec
}

/// Waits until the controller has polled every trial's queue (or explains why not).
async fn wait_polled(
    server: &ApiServerDouble,
    trials: &[Trial],
    controller: &ControllerProcess,
    interval: Duration,
) -> Result<()> {
    let deadline = Instant::now() + interval * 2 + Duration::from_secs(60);
    loop {
        let pending: Vec<&str> = trials
            .iter()
            .filter(|t| !metrics_available(server, &t.deployment))
            .map(|t| t.deployment.as_str())
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let status = server
                .get(&Gvr::WORKER_POD_AUTOSCALERS, Some(NAMESPACE), pending[0])
                .map(|w| w["status"].to_string())
                .unwrap_or_default();
            bail!(
                "{} WPAs never reported MetricsAvailable=True (first: {} with status {status}); controller log: {}",
                pending.len(),
                pending[0],
                controller.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn metrics_available(server: &ApiServerDouble, name: &str) -> bool {
    server
        .get(&Gvr::WORKER_POD_AUTOSCALERS, Some(NAMESPACE), name)
        .and_then(|w| condition(&w["status"], "MetricsAvailable"))
        .is_some_and(|c| c["status"] == "True")
}

fn replicas(server: &ApiServerDouble, deployment: &str) -> Option<i64> {
    server
        .get(&Gvr::DEPLOYMENTS, Some(NAMESPACE), deployment)
        .and_then(|d| d["spec"]["replicas"].as_i64())
}

/// (time, replicas) of the successful scale PATCH/PUTs of a Deployment, oldest first.
fn scale_patches(server: &ApiServerDouble, deployment: &str) -> Vec<(jiff::Timestamp, i64)> {
    let path = format!("/namespaces/{NAMESPACE}/deployments/{deployment}/scale");
    server
        .recorded()
        .into_iter()
        .filter(|r| matches!(r.method.as_str(), "PATCH" | "PUT") && r.succeeded())
        .filter(|r| r.path.ends_with(&path))
        .filter_map(|r| Some((r.at, r.body.pointer("/spec/replicas")?.as_i64()?)))
        .collect()
}

/// Polls of this provider so far, from the controller's poll latency histogram.
async fn poll_count(controller: &ControllerProcess, flavor: Flavor) -> Option<f64> {
    let text = controller.metrics().await;
    metric_value(
        &text,
        &format!(
            "wpa_queue_poll_duration_seconds_count{{provider=\"{}\"}}",
            flavor.metric_provider()
        ),
    )
}
