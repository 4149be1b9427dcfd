//! Scenario 3: a controller start with N WPAs under default flags (API pacing 5 QPS / burst
//! 10 included). How long until every queue is polled, until every WPA has a status, and how
//! fast is a burst into 100 queues scaled 60 s after the start, while start-up status writes
//! may still be waiting for the API budget? Once every WPA has a status, one resync period
//! later, an optional window measures the steady state under the same default flags.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use rand::seq::index::sample;

use crate::brokers::{Broker, Flavor, Queue};
use crate::latency::NAMESPACE;
use crate::procstat;
use crate::scale::insert_worker;
use crate::stats::Summary;
use crate::support::apiserver::{ApiServerDouble, Gvr};
use crate::support::controller::{ControllerProcess, metric_value};

/// When the burst is sent, after the controller starts.
const BURST_AT: Duration = Duration::from_secs(60);
/// Queues that get one message each in the burst.
const BURST_QUEUES: usize = 100;
/// How long the burst's scale writes are waited for.
const BURST_WINDOW: Duration = Duration::from_secs(90);
/// The controller's resync period in this scenario (practo's default).
const RESYNC: Duration = Duration::from_secs(20);

/// The steady state after the start: every WPA has a status, a resync period has passed.
pub struct Steady {
    pub window: Duration,
    /// Controller CPU in the window, fraction of one core.
    pub cpu: f64,
    /// Resident set at the end of the window.
    pub rss: u64,
    /// Peak resident set of the whole run, start included.
    pub peak_rss: u64,
    /// API requests per minute (reads, writes and watches).
    pub requests_per_minute: f64,
    /// Polls per minute, from the controller's own poll counter.
    pub polls_per_minute: Option<f64>,
    /// Poll requests per minute the broker served (all its clients; see
    /// [`Broker::served`]).
    pub broker_calls_per_minute: Option<f64>,
    /// Clients connected to the broker at the end of the window (all of them).
    pub broker_connections: Option<u64>,
}

pub struct Outcome {
    pub wpas: usize,
    pub flavor: Flavor,
    /// From the start until every WPA's queue had a poll loop and as many polls had finished.
    pub all_polled: Option<Duration>,
    /// From the start until every WPA had a status (None: not within `limit`).
    pub all_statuses: Option<Duration>,
    /// WPAs with a status when the run ended.
    pub statuses: usize,
    pub limit: Duration,
    /// Per burst queue, from the push to the scale write (None: not scaled in the window).
    pub burst: Vec<Option<Duration>>,
    /// Status writes already done when the burst was sent.
    pub statuses_at_burst: usize,
    /// API requests per minute in the burst window.
    pub requests_per_minute: f64,
    /// Controller CPU over the whole run, fraction of one core.
    pub cpu: f64,
    pub peak_rss: u64,
    /// `None` when not asked for, or when not every WPA got a status within the limit.
    pub steady: Option<Steady>,
}

impl Outcome {
    pub fn burst_summary(&self) -> Option<Summary> {
        let scaled: Vec<Duration> = self.burst.iter().flatten().copied().collect();
        Summary::of(&scaled)
    }

    pub fn scaled(&self) -> usize {
        self.burst.iter().flatten().count()
    }
}

fn has_status(server: &ApiServerDouble, name: &str) -> bool {
    server
        .get(&Gvr::WORKER_POD_AUTOSCALERS, Some(NAMESPACE), name)
        .is_some_and(|w| w["status"]["conditions"].is_array())
}

pub async fn run(
    flavor: Flavor,
    wpas: usize,
    limit: Duration,
    steady_window: Duration,
    redis_port: u16,
    dir: &Path,
) -> Result<Outcome> {
    let mut broker = Broker::connect(flavor, redis_port, dir).await?;
    let server = ApiServerDouble::start().await?;
    server.set_history_limit(wpas * 6 + 10_000);
    let run_id = crate::support::broker_procs::unique("start");
    let mut queues: Vec<Queue> = Vec::with_capacity(wpas);
    for i in 0..wpas {
        let queue = broker.create(&format!("{run_id}-{i}")).await?;
        insert_worker(&server, &format!("w{i}"), &queue.uri)?;
        queues.push(queue);
    }

    let started = Instant::now();
    // Every flag at the controller's default (the harness sets some for test speed).
    let mut controller = ControllerProcess::start(
        &server,
        dir,
        &format!("startup-{}-{wpas}", flavor.metric_provider()),
        &[
            "--resync-period=20",
            "--idle-window=60",
            "--scale-down-delay-after-last-scale-activity=600",
            "--log-level=info",
        ],
    );
    let pid = controller.pid();
    let cpu_before = procstat::cpu_time(pid)?;
    let provider_polls = format!(
        "wpa_queue_poll_duration_seconds_count{{provider=\"{}\"}}",
        flavor.metric_provider()
    );

    let mut all_polled = None;
    let mut next_status = 0;
    let mut all_statuses = None;
    let mut burst: Option<(Vec<usize>, Instant, jiff::Timestamp)> = None;
    let mut statuses_at_burst = 0;
    loop {
        if controller.has_exited() {
            bail!("the controller exited; log: {}", controller.log.display());
        }
        let elapsed = started.elapsed();
        if all_polled.is_none() {
            let metrics = controller.metrics().await;
            let loops = metric_value(&metrics, "wpa_queue_poll_loops").unwrap_or(0.0);
            let polls = metric_value(&metrics, &provider_polls).unwrap_or(0.0);
            if loops >= wpas as f64 && polls >= wpas as f64 {
                all_polled = Some(elapsed);
            }
        }
        while next_status < wpas && has_status(&server, &format!("w{next_status}")) {
            next_status += 1;
        }
        if next_status == wpas && all_statuses.is_none() {
            // The in-order walk may have passed a WPA whose status came out of order.
            next_status = (0..wpas)
                .find(|i| !has_status(&server, &format!("w{i}")))
                .unwrap_or(wpas);
            if next_status == wpas {
                all_statuses = Some(elapsed);
            }
        }
        if burst.is_none() && elapsed >= BURST_AT {
            statuses_at_burst = server
                .requests("PATCH", "/status")
                .iter()
                .filter(|r| r.succeeded())
                .count();
            let chosen = sample(&mut rand::rng(), wpas, BURST_QUEUES.min(wpas)).into_vec();
            let at = Instant::now();
            let wall = jiff::Timestamp::now();
            for &i in &chosen {
                broker.push(&queues[i], 1).await?;
            }
            burst = Some((chosen, at, wall));
        }
        let burst_done = burst
            .as_ref()
            .is_some_and(|(_, at, _)| at.elapsed() >= BURST_WINDOW);
        if burst_done && (all_statuses.is_some() || elapsed >= limit) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let run_time = started.elapsed();
    let cpu = (procstat::cpu_time(pid)? - cpu_before).as_secs_f64() / run_time.as_secs_f64();
    let peak_rss = procstat::vm_bytes(pid, "VmHWM")?;

    let Some((chosen, _, pushed_at)) = burst else {
        bail!("the run ended before the burst");
    };
    let window_end = pushed_at + jiff::SignedDuration::try_from(BURST_WINDOW)?;
    let recorded = server.recorded();
    let mut first_scale: BTreeMap<String, jiff::Timestamp> = BTreeMap::new();
    for r in &recorded {
        if matches!(r.method.as_str(), "PATCH" | "PUT")
            && r.succeeded()
            && r.path.ends_with("/scale")
        {
            first_scale.entry(r.path.clone()).or_insert(r.at);
        }
    }
    let burst_latencies = chosen
        .iter()
        .map(|i| {
            let path = format!("/namespaces/{NAMESPACE}/deployments/w{i}/scale");
            first_scale
                .iter()
                .find(|(p, _)| p.ends_with(&path))
                .map(|(_, at)| *at)
                .filter(|at| *at <= window_end)
                .and_then(|at| Duration::try_from(at - pushed_at).ok())
        })
        .collect();
    let in_window = recorded
        .iter()
        .filter(|r| r.at >= pushed_at && r.at <= window_end)
        .count();
    let statuses = (0..wpas)
        .filter(|i| has_status(&server, &format!("w{i}")))
        .count();
    let steady = if steady_window.is_zero() || all_statuses.is_none() {
        None
    } else {
        // One resync period so every WPA went through a steady-state reconcile.
        tokio::time::sleep(RESYNC + Duration::from_secs(5)).await;
        Some(
            measure_steady(
                &mut controller,
                &server,
                &mut broker,
                &provider_polls,
                steady_window,
            )
            .await?,
        )
    };
    controller.terminate();
    for queue in &queues {
        broker.remove(queue).await;
    }
    Ok(Outcome {
        wpas,
        flavor,
        all_polled,
        all_statuses,
        statuses,
        limit,
        burst: burst_latencies,
        statuses_at_burst,
        requests_per_minute: in_window as f64 / BURST_WINDOW.as_secs_f64() * 60.0,
        cpu,
        peak_rss,
        steady,
    })
}

async fn measure_steady(
    controller: &mut ControllerProcess,
    server: &ApiServerDouble,
    broker: &mut Broker,
    provider_polls: &str,
    window: Duration,
) -> Result<Steady> {
    let pid = controller.pid();
    let served_before = broker.served().await?;
    let polls_before = metric_value(&controller.metrics().await, provider_polls);
    let cpu_before = procstat::cpu_time(pid)?;
    let wall_start = jiff::Timestamp::now();
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let measured = started.elapsed();
    let cpu_after = procstat::cpu_time(pid)?;
    let wall_end = jiff::Timestamp::now();
    let rss = procstat::vm_bytes(pid, "VmRSS")?;
    let peak_rss = procstat::vm_bytes(pid, "VmHWM")?;
    let polls_after = metric_value(&controller.metrics().await, provider_polls);
    let served_after = broker.served().await?;
    if controller.has_exited() {
        bail!("the controller exited during the steady window");
    }
    let minutes = measured.as_secs_f64() / 60.0;
    let requests = server
        .recorded()
        .iter()
        .filter(|r| r.at >= wall_start && r.at <= wall_end)
        .count();
    Ok(Steady {
        window: measured,
        cpu: (cpu_after - cpu_before).as_secs_f64() / measured.as_secs_f64(),
        rss,
        peak_rss,
        requests_per_minute: requests as f64 / minutes,
        polls_per_minute: polls_before
            .zip(polls_after)
            .map(|(before, after)| (after - before) / minutes),
        broker_calls_per_minute: served_before
            .zip(served_after)
            .map(|((before, _), (after, _))| after.saturating_sub(before) as f64 / minutes),
        broker_connections: served_after.map(|(_, connections)| connections),
    })
}
