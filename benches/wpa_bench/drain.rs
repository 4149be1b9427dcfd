//! Scenario 6: drain before removal (issue 22). The closed loop of scenario 4 (real Celery
//! workers as Pods on Redis, prefetch 1, one slot per pod, workerSignal Auto) with a grace
//! shorter than the tasks: a burst of short tasks scales the pool up, then a seeded,
//! sparse Poisson stream of long tasks arrives while the pool shrinks, so a pod that looked
//! idle when it was picked may take a task before its SIGTERM. Each ack mode runs with
//! `--drain-before-scale-in` on (the default) and off, repeated. What counts is what each
//! worker held when its SIGTERM came or took after it (a fetch already waiting on Redis
//! returns a task during the warm shutdown), from the workers' own records: the tasks they
//! took (Celery's `task_received`), ran and finished, and when they got `cancel_consumer`.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::scale_in_report::seconds;
use crate::stats::Table;
use crate::support::apiserver::PodIps;
use crate::support::closed_loop::load::{Load, Wave};
use crate::support::closed_loop::{self, Case, CeleryBroker, Flags, Layout, Outcome, Sizing};
use crate::{Report, scale_in_report, wait};

/// The scenario's command-line settings (`--drain-...`).
#[derive(Debug, clap::Args)]
pub struct DrainArgs {
    /// Short tasks sent at once first: enough to scale the pool up to its maximum (10, at
    /// 5 per worker).
    #[arg(long, default_value_t = 50)]
    pub drain_burst: usize,
    /// Shortest and longest task of the burst, in seconds.
    #[arg(long, value_delimiter = ',', num_args = 2, default_value = "2,4")]
    pub drain_burst_seconds: Vec<f64>,
    /// The stream of long tasks sent alongside the burst, as Poisson phases RATE:SECONDS
    /// (quiet while the burst runs, denser around the first scale-in, sparse after).
    #[arg(long, default_value = "0:20,0.2:50,0.04:60")]
    pub drain_phases: String,
    /// Shortest and longest task of the stream, in seconds (longer than the grace).
    #[arg(long, value_delimiter = ',', num_args = 2, default_value = "15,40")]
    pub drain_task_seconds: Vec<f64>,
    /// Seed of the burst's and the stream's lengths and of the stream's arrivals.
    #[arg(long, default_value_t = 20261208)]
    pub drain_seed: u64,
    /// terminationGracePeriodSeconds of the pods (SIGTERM to SIGKILL), and so the drain's
    /// default bound.
    #[arg(long, default_value_t = 10)]
    pub drain_grace: u64,
    /// Runs of each configuration (ack mode x drain on/off), interleaved.
    #[arg(long, default_value_t = 2)]
    pub drain_repeats: usize,
    /// Longest a run lasts after its first task is sent, in seconds.
    #[arg(long, default_value_t = 420)]
    pub drain_timeout: u64,
}

/// The burst, then the stream: one load, sent from one start.
fn load(args: &DrainArgs) -> Result<Load> {
    let (short_lo, short_hi) = match args.drain_burst_seconds[..] {
        [a, b] if a > 0.0 && a <= b => (a, b),
        _ => anyhow::bail!("--drain-burst-seconds takes SHORTEST,LONGEST"),
    };
    let (long_lo, long_hi) = match args.drain_task_seconds[..] {
        [a, b] if a > 0.0 && a <= b => (a, b),
        _ => anyhow::bail!("--drain-task-seconds takes SHORTEST,LONGEST"),
    };
    let phases = wait::parse_phases(&args.drain_phases)?;
    // The burst's lengths from the seed (as scenario 4 draws them), sent all at once.
    let burst = Load::seeded_burst(
        args.drain_seed,
        args.drain_burst,
        short_lo,
        short_hi,
        Duration::ZERO,
    );
    let stream = Load::poisson(args.drain_seed, &phases, long_lo, long_hi);
    let mut waves = vec![Wave {
        at: Duration::ZERO,
        seconds: burst.seconds().collect(),
        offsets: Vec::new(),
    }];
    waves.extend(stream.waves);
    Ok(Load {
        label: format!(
            "burst of {} x {short_lo:.0}-{short_hi:.0} s, then {} ({} tasks)",
            args.drain_burst,
            stream.label,
            waves.last().map_or(0, |w| w.seconds.len())
        ),
        waves,
    })
}

/// Runs scenario 6 and emits its section.
pub async fn scenario(
    args: &DrainArgs,
    redis_port: u16,
    dir: &Path,
    report: &mut Report,
) -> Result<()> {
    let load = load(args)?;
    let case = |acks_late: bool, drain: bool| Case {
        broker: CeleryBroker::Redis,
        layout: Layout::OneQueue,
        acks_late,
        signal: "Auto",
        load: load.clone(),
        grace: Duration::from_secs(args.drain_grace),
        timeout: Duration::from_secs(args.drain_timeout),
        redis_port,
        pod_ips: PodIps::Loopback,
        sizing: Sizing::default(),
        start_delay: Duration::ZERO,
        flags: Flags::ShortDelays,
        drain,
    };
    let mut outcomes: Vec<(usize, Outcome)> = Vec::new();
    for repeat in 1..=args.drain_repeats {
        for acks_late in [false, true] {
            for drain in [true, false] {
                let case = case(acks_late, drain);
                eprintln!(
                    "drain: run {repeat}, {} ack, drain {}",
                    ack(&case),
                    on_off(&case)
                );
                // A directory per repetition: the runs of a configuration share a name, and
                // their controller and worker logs are kept apart.
                let run_dir = dir.join(format!("drain-run{repeat}"));
                std::fs::create_dir_all(&run_dir)?;
                let outcome = closed_loop::run(case, &run_dir).await?;
                eprintln!("  {}", line(&outcome));
                outcomes.push((repeat, outcome));
            }
        }
    }
    report.emit(&format!(
        "\n## Scenario 6: drain before removal (seed {}; {}; {:.0} task-seconds; Redis, \
         prefetch 1, one slot per pod, workerSignal Auto, 5 per worker, min 0, max 10; \
         terminationGracePeriodSeconds {} s; idle window 20 s, scale-down delay 30 s)\n",
        args.drain_seed,
        load.label,
        load.work(),
        args.drain_grace
    ));
    report.emit(&summary_table(&outcomes).render());
    report.emit("");
    report.emit(&runs_table(&outcomes).render());
    report.emit("");
    report.emit(&cost_table(&outcomes).render());
    report.emit("");
    for (repeat, o) in &outcomes {
        report.emit(&format!(
            "- run {repeat}, {} ack, drain {}: replicas {}; Events {}; reasons {}",
            ack(&o.case),
            on_off(&o.case),
            o.path,
            o.events.join(", "),
            o.reasons.join(", ")
        ));
    }
    Ok(())
}

fn ack(case: &Case) -> &'static str {
    if case.acks_late { "late" } else { "early" }
}

fn on_off(case: &Case) -> &'static str {
    if case.drain { "on (default)" } else { "off" }
}

fn lost(o: &Outcome) -> usize {
    o.figures.sent - o.figures.tally.completed
}

/// How many of the run's Events have `reason`.
fn events(o: &Outcome, reason: &str) -> usize {
    o.events.iter().filter(|e| *e == reason).count()
}

/// Last task finished to the scale to 0, or how the run ended without one.
fn back_to_zero(o: &Outcome) -> String {
    match o.stuck_at {
        None => seconds(o.figures.back_to_zero),
        Some(replicas) => format!(
            "not at 0 after {:.0} s ({replicas} replicas)",
            o.took.as_secs_f64()
        ),
    }
}

/// What the runs did to the tasks, one row per run.
fn runs_table(outcomes: &[(usize, Outcome)]) -> Table {
    let mut table = Table::new(&[
        "ack",
        "drain",
        "run",
        "completed/sent",
        "lost",
        "victims (SIGTERMed)",
        "told to stop before SIGTERM",
        "tasks held at SIGTERM",
        "tasks taken after SIGTERM",
        "SIGTERMs on a worker holding a task",
        "SIGKILLs",
        "tasks held at SIGKILL",
        "DrainStarted / Drained / DrainCancelled",
        "peak replicas",
    ]);
    for (repeat, o) in outcomes {
        let f = &o.figures;
        table.row(vec![
            ack(&o.case).to_string(),
            on_off(&o.case).to_string(),
            repeat.to_string(),
            format!("{}/{}", f.tally.completed, f.sent),
            lost(o).to_string(),
            f.victims.to_string(),
            f.victims_told.to_string(),
            f.held_at_sigterm.to_string(),
            f.taken_after_sigterm.to_string(),
            f.victims_interrupted.to_string(),
            f.sigkilled.to_string(),
            f.held_at_sigkill.to_string(),
            format!(
                "{} / {} / {}",
                events(o, "DrainStarted"),
                events(o, "Drained"),
                events(o, "DrainCancelled")
            ),
            f.peak_replicas.to_string(),
        ]);
    }
    table
}

/// Waits and cost, one row per run.
fn cost_table(outcomes: &[(usize, Outcome)]) -> Table {
    let mut table = Table::new(&[
        "ack",
        "drain",
        "run",
        "wait p50",
        "wait p95",
        "wait max",
        "worker-seconds",
        "per task-second",
        "first scale-in",
        "back to 0 (last task finished -> 0)",
        "ERROR lines",
    ]);
    for (repeat, o) in outcomes {
        let mut cells = vec![
            ack(&o.case).to_string(),
            on_off(&o.case).to_string(),
            repeat.to_string(),
        ];
        cells.extend(scale_in_report::wait_cost_cells(o));
        cells.extend([back_to_zero(o), o.error_lines.len().to_string()]);
        table.row(cells);
    }
    table
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// One row per configuration: the counts per run (so a rare event is not averaged away),
/// medians of the rest.
fn summary_table(outcomes: &[(usize, Outcome)]) -> Table {
    let mut table = Table::new(&[
        "ack",
        "drain",
        "runs",
        "victims told to stop before SIGTERM (per run)",
        "SIGTERMs on a worker holding a task (per run)",
        "tasks lost (per run)",
        "SIGKILLs (per run)",
        "wait p95 (median)",
        "worker-seconds (median)",
        "back to 0 (median)",
    ]);
    for acks_late in [false, true] {
        for drain in [true, false] {
            let runs: Vec<&Outcome> = outcomes
                .iter()
                .map(|(_, o)| o)
                .filter(|o| o.case.acks_late == acks_late && o.case.drain == drain)
                .collect();
            let Some(first) = runs.first() else {
                continue;
            };
            let per_run = |f: &dyn Fn(&Outcome) -> String| {
                runs.iter().map(|o| f(o)).collect::<Vec<_>>().join(", ")
            };
            let med = |f: &dyn Fn(&Outcome) -> Option<f64>| {
                median(runs.iter().filter_map(|o| f(o)).collect())
            };
            table.row(vec![
                ack(&first.case).to_string(),
                on_off(&first.case).to_string(),
                runs.len().to_string(),
                per_run(&|o| format!("{}/{}", o.figures.victims_told, o.figures.victims)),
                per_run(&|o| o.figures.victims_interrupted.to_string()),
                per_run(&|o| lost(o).to_string()),
                per_run(&|o| o.figures.sigkilled.to_string()),
                seconds(med(&|o| o.figures.wait(0.95))),
                med(&|o| Some(o.figures.worker_seconds))
                    .map_or("-".to_string(), |w| format!("{w:.0}")),
                seconds(med(&|o| {
                    o.stuck_at.map_or(o.figures.back_to_zero, |_| None)
                })),
            ]);
        }
    }
    table
}

/// One run in a line, for the progress output.
fn line(o: &Outcome) -> String {
    let f = &o.figures;
    format!(
        "{}; victims {}, told first {}, SIGTERM on a holder {} ({} tasks held, {} taken after), \
         SIGKILLed {} ({} tasks held), lost {}, Events {}",
        scale_in_report::summary_line(o),
        f.victims,
        f.victims_told,
        f.victims_interrupted,
        f.held_at_sigterm,
        f.taken_after_sigterm,
        f.sigkilled,
        f.held_at_sigkill,
        lost(o),
        o.events.join(",")
    )
}
