//! Benchmarks of the real `workerpodautoscaler run` binary against the in-memory API
//! server double and real brokers. Prints tables; never asserts on timing.
//!
//! ```text
//! cargo bench --bench wpa_bench -- [--scenario from-zero,latency,burst,scale,startup,scale-in,
//!     wait,drain]
//!     [--trials 100] [--providers redis,rabbitmq,sqs,beanstalkd] [--wpas 100,1000,5000]
//!     [--window 60] [--scale-in-tasks 80 --scale-in-seed N ...]
//! ```
//! `hack/bench.sh` starts the brokers first and passes its arguments through.

#![allow(clippy::unwrap_used, clippy::expect_used)]

// `cargo clippy --all-targets` builds benches with cfg(test) but without the test harness:
// the support modules' unit-test imports are then unused.
#[allow(unused_imports)]
#[path = "../tests/it/support/mod.rs"]
mod support;

#[path = "wpa_bench/brokers.rs"]
mod brokers;
#[path = "wpa_bench/drain.rs"]
mod drain;
#[path = "wpa_bench/latency.rs"]
mod latency;
#[path = "wpa_bench/procstat.rs"]
mod procstat;
#[path = "wpa_bench/scale.rs"]
mod scale;
#[path = "wpa_bench/scale_in_report.rs"]
mod scale_in_report;
#[path = "wpa_bench/startup.rs"]
mod startup;
#[path = "wpa_bench/stats.rs"]
mod stats;
#[path = "wpa_bench/wait.rs"]
mod wait;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};

use brokers::{Broker, Flavor};
use stats::{Summary, Table, ms};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Scenario 0: as 1, with every controller flag at its default (API pacing included),
    /// on queues that were never used.
    FromZero,
    /// Scenario 1: zero replicas, one message, time to the scale PATCH.
    Latency,
    /// Scenario 1b: 5 replicas, a burst of backlog, time to the PATCH to 20.
    Burst,
    /// Scenario 2: many idle WPAs, steady-state cost.
    Scale,
    /// Scenario 3: a start with N WPAs under default flags (API pacing on): time until every
    /// queue is polled and every WPA has a status, and a burst into 100 queues at 60 s.
    Startup,
    /// Scenario 4: real Celery workers started and stopped as the replicas change, a seeded
    /// burst of tasks, both ack modes, workerSignal Auto and Off: what happens to the tasks.
    ScaleIn,
    /// Scenario 5: real Celery workers with a start-up delay, a seeded Poisson trace in
    /// phases, practo's rule at several targets and maxWaitSeconds: waits and worker-seconds.
    Wait,
    /// Scenario 6: real Celery workers, a burst then a sparse stream of tasks longer than
    /// the grace while the pool shrinks, both ack modes, `--drain-before-scale-in` on and
    /// off: did a worker get SIGTERM while it held a task.
    Drain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ScaleInRun {
    Burst,
    LongTask,
    TutorMix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Provider {
    Redis,
    Rabbitmq,
    Sqs,
    Beanstalkd,
}

#[derive(Debug, Parser)]
#[command(about = "worker-pod-autoscaler benchmarks (see BENCHMARKS.md)")]
struct Args {
    /// Scenarios to run, comma-separated (scale-in, wait and drain, which run Python Celery
    /// workers, only when named).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "from-zero,latency,burst,scale,startup"
    )]
    scenario: Vec<Scenario>,
    /// Latency trials per provider and poll interval.
    #[arg(long, default_value_t = 100)]
    trials: usize,
    /// Burst trials per provider.
    #[arg(long, default_value_t = 20)]
    burst_trials: usize,
    /// WPAs alive at once in the latency and burst scenarios.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Trials per provider of the from-zero scenario.
    #[arg(long, default_value_t = 40)]
    from_zero_trials: usize,
    /// WPAs alive at once in the from-zero scenario (small: it runs under default API
    /// pacing, and a lone WPA reacting from zero is what it measures).
    #[arg(long, default_value_t = 5)]
    from_zero_batch: usize,
    /// Providers of the latency and burst scenarios.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "redis,rabbitmq,sqs,beanstalkd"
    )]
    providers: Vec<Provider>,
    /// WPA counts of the scale scenario.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
    wpas: Vec<usize>,
    /// WPA counts of the startup scenario.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    startup_wpas: Vec<usize>,
    /// Providers of the startup scenario.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "redis,beanstalkd"
    )]
    startup_providers: Vec<Provider>,
    /// Longest a startup run waits for every WPA's status (seconds; at least the burst's
    /// 150 s). 5000 statuses at the default 5 QPS need about 1000 s.
    #[arg(long, default_value_t = 300)]
    startup_limit: u64,
    /// Seconds of the startup scenario's steady-state window, measured once every WPA has
    /// a status and one resync period has passed (so it needs a `--startup-limit` of about
    /// N / 5 + 100 s); 0 skips it.
    #[arg(long, default_value_t = 60)]
    startup_steady_window: u64,
    /// Seconds of the steady-state measurement window of the scale scenario.
    #[arg(long, default_value_t = 60)]
    window: u64,
    /// Tasks of the scale-in scenario's burst (five eighths at once, the rest
    /// `--scale-in-gap` seconds later).
    #[arg(long, default_value_t = 80)]
    scale_in_tasks: usize,
    /// Seed of the scale-in burst's task lengths.
    #[arg(long, default_value_t = 20261204)]
    scale_in_seed: u64,
    /// Shortest and longest task of the scale-in burst, in seconds.
    #[arg(long, value_delimiter = ',', num_args = 2, default_value = "3,12")]
    scale_in_task_seconds: Vec<f64>,
    /// Seconds between the scale-in burst's two waves.
    #[arg(long, default_value_t = 20)]
    scale_in_gap: u64,
    /// Seconds from SIGTERM to SIGKILL of a worker (terminationGracePeriodSeconds); shorter
    /// than most tasks on purpose.
    #[arg(long, default_value_t = 5)]
    scale_in_grace: u64,
    /// Length of the scale-in scenario's lone long task, in seconds (0 skips those runs).
    #[arg(long, default_value_t = 70)]
    scale_in_long_task: u64,
    /// Longest a scale-in run lasts after its first task is sent, in seconds.
    #[arg(long, default_value_t = 240)]
    scale_in_timeout: u64,
    /// Which scale-in runs: `burst` (the seeded burst: Redis in both ack modes with
    /// workerSignal Auto and Off, RabbitMQ in both ack modes with Auto), `long-task` (the
    /// lone long task on Redis), `tutor-mix` (a few long tasks among short ones on Tutor's
    /// three LMS queues, as a new install meets them: Redis and RabbitMQ with `?management=`
    /// in a new vhost, both ack modes, Auto).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "burst,long-task,tutor-mix"
    )]
    scale_in_runs: Vec<ScaleInRun>,
    /// The tutor-mix load: LONG_COUNT,LONG_SECONDS,SHORT_COUNT,SHORT_SECONDS.
    #[arg(long, value_delimiter = ',', num_args = 4, default_value = "5,60,45,2")]
    scale_in_mix: Vec<f64>,
    /// SIGTERM to SIGKILL in the tutor-mix runs, in seconds.
    #[arg(long, default_value_t = 10)]
    scale_in_mix_grace: u64,
    /// Scenario 5's Poisson phases, RATE:SECONDS comma-separated (quiet, ramp, plateau,
    /// burst, quiet, tail).
    #[arg(long, default_value = "0.05:60,0.3:30,0.6:30,1:90,3:30,0:60,0.3:60")]
    wait_phases: String,
    /// Scenario 5's shortest and longest task, in seconds.
    #[arg(long, value_delimiter = ',', num_args = 2, default_value = "2,8")]
    wait_task_seconds: Vec<f64>,
    /// Seed of scenario 5's trace.
    #[arg(long, default_value_t = 20261207)]
    wait_seed: u64,
    /// Scenario 5's maxWaitSeconds.
    #[arg(long, default_value_t = 30)]
    wait_max_wait: i32,
    /// Scenario 5's targetMessagesPerWorker values for practo's rule.
    #[arg(long, value_delimiter = ',', default_value = "2,5,10")]
    wait_targets: Vec<i32>,
    /// Seconds a Pod takes before its worker starts, in scenario 5.
    #[arg(long, default_value_t = 10)]
    wait_start_delay: u64,
    #[command(flatten)]
    drain: drain::DrainArgs,
    /// Port of the shared Redis used by the latency and burst scenarios.
    #[arg(long, default_value_t = 6379)]
    redis_port: u16,
    /// Also write the tables to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Passed by `cargo bench` to every bench binary; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // kube builds a TLS connector even for http URLs; give rustls its provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the Tokio runtime")?;
    runtime.block_on(run(args))
}

struct Report {
    file: Option<std::fs::File>,
}

impl Report {
    fn emit(&mut self, text: &str) {
        println!("{text}");
        if let Some(file) = self.file.as_mut() {
            // The report file is a copy; stdout has everything if writing fails.
            let _ = writeln!(file, "{text}");
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("wpa-bench-")
        .tempdir()
        .context("creating a temp dir")?;
    let mut report = Report {
        file: match &args.report {
            Some(path) => Some(
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            ),
            None => None,
        },
    };
    report.emit(&format!(
        "controller binary: {} (logs in {})",
        env!("CARGO_BIN_EXE_workerpodautoscaler"),
        dir.path().display()
    ));
    if args.scenario.contains(&Scenario::FromZero) {
        from_zero_scenario(&args, dir.path(), &mut report).await?;
    }
    if args.scenario.contains(&Scenario::Latency) {
        latency_scenario(&args, dir.path(), &mut report).await?;
    }
    if args.scenario.contains(&Scenario::Burst) {
        burst_scenario(&args, dir.path(), &mut report).await?;
    }
    if args.scenario.contains(&Scenario::Scale) {
        scale_scenario(&args, dir.path(), &mut report).await?;
    }
    if args.scenario.contains(&Scenario::Startup) {
        startup_scenario(&args, dir.path(), &mut report).await?;
    }
    if args.scenario.contains(&Scenario::ScaleIn) {
        scale_in_report::scenario(&args, dir.path(), &mut report).await?;
    }
    if args.scenario.contains(&Scenario::Wait) {
        wait::scenario(&args, dir.path(), &mut report).await?;
    }
    if args.scenario.contains(&Scenario::Drain) {
        drain::scenario(&args.drain, args.redis_port, dir.path(), &mut report).await?;
    }
    // Keep the controller logs of a run for a look afterwards.
    let kept = dir.keep();
    eprintln!("logs kept in {}", kept.display());
    Ok(())
}

/// The (flavor, poll interval) pairs measured for a provider.
fn latency_cases(provider: Provider) -> Vec<(Flavor, u64)> {
    match provider {
        Provider::Redis => vec![(Flavor::Redis, 1)],
        Provider::Rabbitmq => vec![(Flavor::RabbitAmqp, 1), (Flavor::RabbitManagement, 1)],
        Provider::Sqs => vec![(Flavor::Sqs, 20), (Flavor::Sqs, 1)],
        Provider::Beanstalkd => vec![(Flavor::Beanstalkd, 1)],
    }
}

/// The flavors measured from zero with default flags for a provider.
fn from_zero_flavors(provider: Provider) -> Vec<Flavor> {
    match provider {
        Provider::Redis => vec![Flavor::Redis],
        Provider::Rabbitmq => vec![Flavor::RabbitAmqp, Flavor::RabbitManagement],
        Provider::Sqs => vec![Flavor::Sqs],
        Provider::Beanstalkd => vec![Flavor::Beanstalkd],
    }
}

async fn from_zero_scenario(args: &Args, dir: &std::path::Path, report: &mut Report) -> Result<()> {
    let mut table = latency_table();
    for provider in &args.providers {
        for flavor in from_zero_flavors(*provider) {
            eprintln!(
                "from zero, default flags: {}, {} trials",
                flavor.label(),
                args.from_zero_trials
            );
            let mut broker = Broker::connect(flavor, args.redis_port, dir).await?;
            let case = latency::Case {
                flavor,
                interval: flavor.default_interval(),
                trials: args.from_zero_trials,
                batch: args.from_zero_batch,
                start_replicas: 0,
                prefill: 0,
                push: 1,
                expect: 1,
                target_per_worker: 10,
                max_replicas: 20,
                default_flags: true,
            };
            let outcome = latency::run(case, &mut broker, dir).await?;
            latency_row(&mut table, &outcome);
        }
    }
    report.emit(
        "\n## Scenario 0: from zero with default flags (API pacing 5 QPS / burst 10 included), \
         0 -> 1 replica after one message into a queue that was never used\n",
    );
    report.emit(&table.render());
    Ok(())
}

fn latency_table() -> Table {
    Table::new(&[
        "provider",
        "poll interval",
        "trials",
        "p50",
        "p90",
        "p99",
        "max",
        "missed",
        "polls/queue/min",
        "broker requests per poll",
    ])
}

fn latency_row(table: &mut Table, outcome: &latency::Outcome) {
    let case = &outcome.case;
    let default = if case.interval == case.flavor.default_interval() {
        " (default)"
    } else {
        ""
    };
    let summary = Summary::of(&outcome.samples);
    let cell = |f: fn(&Summary) -> Duration| summary.as_ref().map_or("-".into(), |s| ms(f(s)));
    table.row(vec![
        case.flavor.label().to_string(),
        format!("{} s{default}", case.interval),
        outcome.samples.len().to_string(),
        cell(|s| s.p50),
        cell(|s| s.p90),
        cell(|s| s.p99),
        cell(|s| s.max),
        outcome.missing.to_string(),
        outcome
            .polls_per_queue_minute
            .map_or("-".into(), |p| format!("{p:.1}")),
        case.flavor.requests_per_poll().to_string(),
    ]);
}

async fn latency_scenario(args: &Args, dir: &std::path::Path, report: &mut Report) -> Result<()> {
    let mut table = latency_table();
    for provider in &args.providers {
        for (flavor, interval) in latency_cases(*provider) {
            eprintln!(
                "latency: {} every {interval} s, {} trials",
                flavor.label(),
                args.trials
            );
            let mut broker = Broker::connect(flavor, args.redis_port, dir).await?;
            let case = latency::Case {
                flavor,
                interval,
                trials: args.trials,
                batch: args.batch,
                start_replicas: 0,
                prefill: 0,
                push: 1,
                expect: 1,
                target_per_worker: 10,
                max_replicas: 20,
                default_flags: false,
            };
            let outcome = latency::run(case, &mut broker, dir).await?;
            latency_row(&mut table, &outcome);
        }
    }
    report.emit("\n## Scenario 1: reaction latency, 0 -> 1 replica after one message\n");
    report.emit(&table.render());
    Ok(())
}

async fn burst_scenario(args: &Args, dir: &std::path::Path, report: &mut Report) -> Result<()> {
    let mut table = latency_table();
    for provider in &args.providers {
        // The default interval of each provider; RabbitMQ through its management API.
        let flavor = match provider {
            Provider::Redis => Flavor::Redis,
            Provider::Rabbitmq => Flavor::RabbitManagement,
            Provider::Sqs => Flavor::Sqs,
            Provider::Beanstalkd => Flavor::Beanstalkd,
        };
        let interval = flavor.default_interval();
        eprintln!(
            "burst: {} every {interval} s, {} trials",
            flavor.label(),
            args.burst_trials
        );
        let mut broker = Broker::connect(flavor, args.redis_port, dir).await?;
        let target = 10;
        let case = latency::Case {
            flavor,
            interval,
            trials: args.burst_trials,
            batch: args.batch,
            start_replicas: 5,
            prefill: 5 * target,
            push: 15 * target,
            expect: 20,
            target_per_worker: i32::try_from(target).unwrap_or(10),
            max_replicas: 20,
            default_flags: false,
        };
        let outcome = latency::run(case, &mut broker, dir).await?;
        latency_row(&mut table, &outcome);
    }
    report.emit(
        "\n## Scenario 1b: burst, 5 -> 20 replicas (50 messages at 10 per worker, then 150 more)\n",
    );
    report.emit(&table.render());
    Ok(())
}

async fn scale_scenario(args: &Args, dir: &std::path::Path, report: &mut Report) -> Result<()> {
    let mut table = Table::new(&[
        "WPAs",
        "startup",
        "CPU (cores)",
        "vs 0.25",
        "peak RSS",
        "vs 150 MiB",
        "threads",
        "API reads/min",
        "API watches/min",
        "API writes/min",
        "Redis round trips/min",
        "Redis commands/min",
        "redis-server CPU",
        "bench (API double) CPU",
    ]);
    let mut writes = Vec::new();
    for &wpas in &args.wpas {
        eprintln!("scale: {wpas} WPAs, {} s window", args.window);
        let o = scale::run(wpas, Duration::from_secs(args.window), dir).await?;
        let mib = procstat::mib(o.peak_rss);
        table.row(vec![
            o.wpas.to_string(),
            format!("{:.1} s", o.startup.as_secs_f64()),
            format!("{:.3}", o.cpu),
            format!("{:.0}%", o.cpu / 0.25 * 100.0),
            format!("{mib:.1} MiB"),
            format!("{:.0}%", mib / 150.0 * 100.0),
            o.threads.to_string(),
            format!("{:.1}", o.reads_per_minute),
            format!("{:.1}", o.watches_per_minute),
            format!("{:.1}", o.writes_per_minute),
            format!("{:.0}", o.redis_round_trips_per_minute),
            format!("{:.0}", o.redis_commands_per_minute),
            format!("{:.3}", o.redis_cpu),
            format!("{:.3}", o.bench_cpu),
        ]);
        let polls = o
            .polls_per_minute
            .map_or("-".to_string(), |p| format!("{p:.0}"));
        writes.push(format!(
            "- {} WPAs: window {:.0} s, RSS at the end {:.1} MiB, controller polls/min {polls}, writes {:?}",
            o.wpas,
            o.window.as_secs_f64(),
            procstat::mib(o.rss),
            o.writes
        ));
    }
    report.emit(
        "\n## Scenario 2: steady state with N idle WPAs (Redis, default 1 s poll, 20 s resync)\n",
    );
    report.emit(&table.render());
    report.emit("");
    for line in writes {
        report.emit(&line);
    }
    Ok(())
}

async fn startup_scenario(args: &Args, dir: &std::path::Path, report: &mut Report) -> Result<()> {
    let mut table = Table::new(&[
        "provider",
        "WPAs",
        "every queue polled",
        "every WPA has a status",
        "statuses written before the burst",
        "burst scaled in 90 s",
        "burst p50",
        "burst p99",
        "burst max",
        "API requests/min (burst window)",
        "CPU (cores, whole run)",
        "peak RSS",
    ]);
    let mut steady = Table::new(&[
        "provider",
        "WPAs",
        "window",
        "CPU (cores)",
        "RSS at the end",
        "peak RSS (whole run)",
        "API requests/min",
        "controller polls/min",
        "broker poll calls/min (all clients)",
        "broker connections (all clients)",
    ]);
    for provider in &args.startup_providers {
        let flavor = match provider {
            Provider::Redis => Flavor::Redis,
            Provider::Beanstalkd => Flavor::Beanstalkd,
            other => {
                anyhow::bail!("the startup scenario runs on redis and beanstalkd, not {other:?}")
            }
        };
        for &wpas in &args.startup_wpas {
            eprintln!("startup: {} with {wpas} WPAs", flavor.label());
            let limit = Duration::from_secs(args.startup_limit.max(150));
            let steady_window = Duration::from_secs(args.startup_steady_window);
            let o = startup::run(flavor, wpas, limit, steady_window, args.redis_port, dir).await?;
            let summary = o.burst_summary();
            let cell = |f: fn(&Summary) -> Duration| {
                summary.as_ref().map_or("-".to_string(), |s| ms(f(s)))
            };
            table.row(vec![
                o.flavor.metric_provider().to_string(),
                o.wpas.to_string(),
                o.all_polled.map_or("not measured".to_string(), |d| {
                    format!("{:.1} s", d.as_secs_f64())
                }),
                o.all_statuses.map_or(
                    format!("{}/{} after {} s", o.statuses, o.wpas, o.limit.as_secs()),
                    |d| format!("{:.1} s", d.as_secs_f64()),
                ),
                o.statuses_at_burst.to_string(),
                format!("{}/{}", o.scaled(), o.burst.len()),
                cell(|s| s.p50),
                cell(|s| s.p99),
                cell(|s| s.max),
                format!("{:.0}", o.requests_per_minute),
                format!("{:.3}", o.cpu),
                format!("{:.1} MiB", procstat::mib(o.peak_rss)),
            ]);
            let optional = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
            steady.row(match &o.steady {
                Some(s) => vec![
                    o.flavor.metric_provider().to_string(),
                    o.wpas.to_string(),
                    format!("{:.0} s", s.window.as_secs_f64()),
                    format!("{:.3}", s.cpu),
                    format!("{:.1} MiB", procstat::mib(s.rss)),
                    format!("{:.1} MiB", procstat::mib(s.peak_rss)),
                    format!("{:.1}", s.requests_per_minute),
                    optional(s.polls_per_minute),
                    optional(s.broker_calls_per_minute),
                    s.broker_connections
                        .map_or("-".to_string(), |c| c.to_string()),
                ],
                None => {
                    let mut row = vec![
                        o.flavor.metric_provider().to_string(),
                        o.wpas.to_string(),
                        "not measured (not every WPA had a status)".to_string(),
                    ];
                    row.resize(10, "-".to_string());
                    row
                }
            });
        }
    }
    report.emit(
        "\n## Scenario 3: controller start with N WPAs, default flags (API pacing 5 QPS / burst 10), \
         burst of one message into 100 queues at 60 s\n",
    );
    report.emit(&table.render());
    if args.startup_steady_window > 0 {
        report.emit(
            "\n### Steady state after the start (every WPA has a status, one resync later; same default flags)\n",
        );
        report.emit(&steady.render());
    }
    Ok(())
}
