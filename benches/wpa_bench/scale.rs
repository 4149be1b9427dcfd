//! Scenario 2: many WPAs, nothing changing. What does the controller cost at rest?
//!
//! N WPAs, each with its own empty Redis list and Deployment, on a private redis-server
//! (so nobody else's commands are counted). After every WPA has reported
//! `MetricsAvailable=True` and one more resync period has passed, a window of `window`
//! seconds measures the controller's CPU (utime + stime from /proc), its peak RSS, the
//! requests it made to the API double (reads and writes) and the commands it sent to Redis
//! (INFO commandstats; HKEYS is sent exactly once per poll, so it counts round trips).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::latency::{NAMESPACE, metrics_available};
use crate::procstat;
use crate::support::apiserver::{ApiServerDouble, objects};
use crate::support::brokers::RedisServer;
use crate::support::controller::{ControllerProcess, metric_value, wpa};

/// The controller's resync period in this scenario (practo's default).
const RESYNC: Duration = Duration::from_secs(20);

pub struct Outcome {
    pub wpas: usize,
    /// From controller start until every WPA reported MetricsAvailable=True.
    pub startup: Duration,
    pub window: Duration,
    /// Fraction of one core.
    pub cpu: f64,
    pub peak_rss: u64,
    pub rss: u64,
    pub threads: u64,
    pub reads_per_minute: f64,
    pub watches_per_minute: f64,
    pub writes_per_minute: f64,
    /// Write requests in the window by method and resource path shape.
    pub writes: BTreeMap<String, usize>,
    pub redis_commands_per_minute: f64,
    pub redis_round_trips_per_minute: f64,
    pub polls_per_minute: Option<f64>,
    /// redis-server's own CPU, fraction of one core.
    pub redis_cpu: f64,
    /// The bench process (API double) CPU, fraction of one core.
    pub bench_cpu: f64,
}

pub async fn run(wpas: usize, window: Duration, dir: &Path) -> Result<Outcome> {
    let redis = RedisServer::start(&["--maxclients", "20000"]);
    let server = ApiServerDouble::start().await?;
    // Every object is created once before the controller starts; keep their events.
    server.set_history_limit(wpas * 4 + 10_000);
    for i in 0..wpas {
        let uri = format!("redis://127.0.0.1:{}/0/bench-{i}", redis.port);
        insert_worker(&server, &format!("w{i}"), &uri)?;
    }

    let started = Instant::now();
    let mut controller = ControllerProcess::start(
        &server,
        dir,
        &format!("scale-{wpas}"),
        &[
            // Client-side API pacing off: the figures are the controller's own cost and
            // reaction; BENCHMARKS.md says what practo's default 5 QPS / burst 10 adds.
            "--k8s-api-qps=0",
            "--resync-period=20",
            "--idle-window=60",
            "--scale-down-delay-after-last-scale-activity=600",
            "--log-level=info",
        ],
    );
    let pid = controller.pid();
    let startup_limit = Duration::from_secs(120) + Duration::from_millis(100) * wpas as u32;
    let mut next = 0;
    // WPAs report in roughly creation order; resume the scan where it stopped.
    while next < wpas {
        if metrics_available(&server, &format!("w{next}")) {
            next += 1;
            continue;
        }
        if controller.has_exited() {
            bail!("the controller exited; log: {}", controller.log.display());
        }
        if started.elapsed() > startup_limit {
            bail!(
                "only {next} of {wpas} WPAs reported MetricsAvailable=True within {startup_limit:?}; log: {}",
                controller.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A final full scan: the in-order walk may have passed a WPA that turned unready.
    for i in 0..wpas {
        if !metrics_available(&server, &format!("w{i}")) {
            bail!("w{i} lost MetricsAvailable=True during startup");
        }
    }
    let startup = started.elapsed();
    // One resync period so every WPA went through a steady-state reconcile.
    tokio::time::sleep(RESYNC + Duration::from_secs(5)).await;

    let mut redis_conn = redis_connection(redis.port)?;
    server.clear_recorded();
    let cpu_before = procstat::cpu_time(pid)?;
    let bench_before = procstat::cpu_time(std::process::id())?;
    let stats_before = command_stats(&mut redis_conn)?;
    let redis_cpu_before = redis_cpu(&mut redis_conn)?;
    let polls_before = poll_count(&controller).await;
    let window_start = Instant::now();
    tokio::time::sleep(window).await;
    let measured = window_start.elapsed();
    let cpu_after = procstat::cpu_time(pid)?;
    let bench_after = procstat::cpu_time(std::process::id())?;
    let stats_after = command_stats(&mut redis_conn)?;
    let redis_cpu_after = redis_cpu(&mut redis_conn)?;
    let polls_after = poll_count(&controller).await;
    let recorded = server.recorded();
    let peak_rss = procstat::vm_bytes(pid, "VmHWM")?;
    let rss = procstat::vm_bytes(pid, "VmRSS")?;
    let threads = procstat::threads(pid)?;
    if controller.has_exited() {
        bail!("the controller exited during the window");
    }

    let seconds = measured.as_secs_f64();
    let per_minute = |n: f64| n / seconds * 60.0;
    let mut reads = 0usize;
    let mut watches = 0usize;
    let mut writes = BTreeMap::new();
    for r in &recorded {
        if r.is_write() {
            *writes.entry(write_kind(&r.method, &r.path)).or_insert(0) += 1;
        } else if r.is_watch() {
            watches += 1;
        } else {
            reads += 1;
        }
    }
    let delta = |name: &str| -> f64 {
        let after = stats_after.get(name).copied().unwrap_or(0);
        let before = stats_before.get(name).copied().unwrap_or(0);
        after.saturating_sub(before) as f64
    };
    // Our own INFO calls are not the controller's.
    let commands: f64 = stats_after
        .keys()
        .filter(|k| k.as_str() != "info")
        .map(|k| delta(k))
        .sum();
    let outcome = Outcome {
        wpas,
        startup,
        window: measured,
        cpu: (cpu_after - cpu_before).as_secs_f64() / seconds,
        peak_rss,
        rss,
        threads,
        reads_per_minute: per_minute(reads as f64),
        watches_per_minute: per_minute(watches as f64),
        writes_per_minute: per_minute(writes.values().sum::<usize>() as f64),
        writes,
        redis_commands_per_minute: per_minute(commands),
        redis_round_trips_per_minute: per_minute(delta("hkeys")),
        polls_per_minute: polls_before
            .zip(polls_after)
            .map(|(before, after)| per_minute(after - before)),
        redis_cpu: (redis_cpu_after - redis_cpu_before) / seconds,
        bench_cpu: (bench_after - bench_before).as_secs_f64() / seconds,
    };
    controller.terminate();
    drop(redis);
    Ok(outcome)
}

/// Deployment `name` at 0 replicas and its WPA (min 0, max 10, 10 messages per worker) on
/// `queue_uri`.
pub fn insert_worker(server: &ApiServerDouble, name: &str, queue_uri: &str) -> Result<()> {
    server
        .insert(objects::deployment(NAMESPACE, name, 0))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let spec = json!({
        "minReplicas": 0,
        "maxReplicas": 10,
        "targetMessagesPerWorker": 10,
        "deploymentName": name,
        "queueURI": queue_uri,
    });
    server
        .insert(wpa(NAMESPACE, name, spec))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

/// "PATCH .../status" style key of a write, for the report.
fn write_kind(method: &str, path: &str) -> String {
    let resource = path
        .rsplit('/')
        .find(|s| {
            matches!(
                *s,
                "status" | "scale" | "events" | "workerpodautoscalers" | "deployments" | "leases"
            )
        })
        .unwrap_or("other");
    format!("{method} {resource}")
}

fn redis_connection(port: u16) -> Result<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}/0"))?
        .get_connection()
        .context("connecting to the bench redis-server")
}

/// Calls per command since the server started (INFO commandstats).
fn command_stats(conn: &mut redis::Connection) -> Result<BTreeMap<String, u64>> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn)?;
    let mut calls = BTreeMap::new();
    for line in info.lines() {
        let Some((name, fields)) = line
            .strip_prefix("cmdstat_")
            .and_then(|rest| rest.split_once(':'))
        else {
            continue;
        };
        if let Some(n) = fields
            .split(',')
            .find_map(|f| f.strip_prefix("calls="))
            .and_then(|n| n.parse().ok())
        {
            calls.insert(name.to_string(), n);
        }
    }
    Ok(calls)
}

/// redis-server's user + system CPU seconds (INFO cpu).
fn redis_cpu(conn: &mut redis::Connection) -> Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query(conn)?;
    let field = |name: &str| -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    Ok(field("used_cpu_sys:") + field("used_cpu_user:"))
}

async fn poll_count(controller: &ControllerProcess) -> Option<f64> {
    metric_value(
        &controller.metrics().await,
        "wpa_queue_poll_duration_seconds_count{provider=\"redis\"}",
    )
}
