//! Scenario 4: its runs, tables and lines.

use std::time::Duration;

use anyhow::Result;

use crate::stats::Table;
use crate::support::apiserver::PodIps;
use crate::support::closed_loop::load::Load;
use crate::support::closed_loop::tally::LONG_TASK;
use crate::support::closed_loop::{self, Case, CeleryBroker, Layout, Outcome};
use crate::{Args, Report, ScaleInRun};

/// The scenario's heading: each load that ran, with its work and grace.
pub fn heading(seed: u64, outcomes: &[Outcome]) -> String {
    let mut loads: Vec<String> = Vec::new();
    for o in outcomes {
        let load = &o.case.load;
        let line = format!(
            "{} ({:.0} task-seconds, waves of {}; grace {} s)",
            load.label,
            load.work(),
            load.waves
                .iter()
                .map(|w| format!("{} at {} s", w.seconds.len(), w.at.as_secs()))
                .collect::<Vec<_>>()
                .join(" and "),
            o.case.grace.as_secs()
        );
        if !loads.contains(&line) {
            loads.push(line);
        }
    }
    format!(
        "\n## Scenario 4: closed-loop scale-in with real Celery workers (seed {seed}; {}; \
         controller flags at their defaults but --idle-window=20 \
         --scale-down-delay-after-last-scale-activity=30)\n",
        loads.join("; ")
    )
}

pub fn seconds(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.1} s"))
}

/// The cells every closed-loop table has: wait p50, p95 and max, worker-seconds, per
/// task-second and the first scale-in.
pub fn wait_cost_cells(o: &Outcome) -> [String; 6] {
    let f = &o.figures;
    let work = o.case.load.work();
    [
        seconds(f.wait(0.5)),
        seconds(f.wait(0.95)),
        seconds(f.wait(1.0)),
        format!("{:.0}", f.worker_seconds),
        if work > 0.0 {
            format!("{:.2}", f.worker_seconds / work)
        } else {
            "-".to_string()
        },
        f.first_scale_in.map_or("-".to_string(), |s| {
            format!("{} -> {} at {:.0} s", s.from, s.to, s.at)
        }),
    ]
}

/// The columns that say which run a row is.
const CASE_COLUMNS: [&str; 5] = ["broker", "queues", "ack", "workerSignal", "load"];

/// The values of [`CASE_COLUMNS`] for `o`.
fn case_cells(o: &Outcome) -> Vec<String> {
    vec![
        o.case.broker.label().to_string(),
        o.case.setup_label(),
        if o.case.acks_late { "late" } else { "early" }.to_string(),
        o.case.signal.to_string(),
        o.case.load.label.clone(),
    ]
}

/// A table with the case columns first, then `columns`.
fn with_case_columns(columns: &[&str]) -> Table {
    let all: Vec<&str> = CASE_COLUMNS.iter().chain(columns).copied().collect();
    Table::new(&all)
}

pub fn table(outcomes: &[Outcome]) -> Table {
    let mut table = with_case_columns(&[
        "completed",
        "killed mid-run (never finished)",
        "never started (lost)",
        "runs cut by SIGKILL",
        "redelivered runs",
        "SIGTERMs on busy workers",
        "workers SIGKILLed / started",
        "peak replicas",
        "drain (first sent -> last finished)",
        "back to zero (last finished -> 0)",
    ]);
    for o in outcomes {
        let f = &o.figures;
        let zero = match o.stuck_at {
            None => seconds(f.back_to_zero),
            Some(replicas) => format!(
                "not at 0 after {:.0} s ({replicas} replicas)",
                o.took.as_secs_f64()
            ),
        };
        let mut cells = case_cells(o);
        cells.extend([
            format!("{}/{}", f.tally.completed, f.sent),
            f.tally.interrupted.to_string(),
            f.tally.never_started.to_string(),
            f.runs_cut.to_string(),
            f.reruns.to_string(),
            f.sigterm_busy.to_string(),
            format!("{}/{}", f.sigkilled, f.workers_started),
            f.peak_replicas.to_string(),
            seconds(f.drain),
            zero,
        ]);
        table.row(cells);
    }
    table
}

/// What the tasks waited, what the pods cost, when the pool first shrank, and the
/// controller's ERROR lines.
pub fn cost_table(outcomes: &[Outcome]) -> Table {
    let mut table = with_case_columns(&[
        "wait p50",
        "wait p95",
        "wait max",
        "worker-seconds",
        "per task-second",
        "first scale-in",
        "long tasks ended",
        "scale-in while long tasks ran",
        "ERROR lines",
    ]);
    for o in outcomes {
        let f = &o.figures;
        let mut cells = case_cells(o);
        cells.extend(wait_cost_cells(o));
        cells.extend([
            seconds(f.long_tasks_end),
            match (f.long_tasks_end, f.scale_in_lead()) {
                (None, _) => format!("- (no task of {LONG_TASK:.0} s or more)"),
                (Some(_), Some(lead)) if lead > 0.0 => {
                    format!("yes, {lead:.0} s before they ended")
                }
                (Some(_), _) => "no".to_string(),
            },
            o.error_lines.len().to_string(),
        ]);
        table.row(cells);
    }
    table
}

pub fn summary_line(o: &Outcome) -> String {
    let f = &o.figures;
    format!(
        "{:.0} s: completed {}/{}, interrupted {}, never started {}, runs cut {}, reruns {}, \
         SIGTERM on busy {}, SIGKILLed {}/{}, worker-seconds {:.0}, wait p95 {}, \
         ERROR lines {}, replicas {}",
        o.took.as_secs_f64(),
        f.tally.completed,
        f.sent,
        f.tally.interrupted,
        f.tally.never_started,
        f.runs_cut,
        f.reruns,
        f.sigterm_busy,
        f.sigkilled,
        f.workers_started,
        f.worker_seconds,
        seconds(f.wait(0.95)),
        o.error_lines.len(),
        o.path
    )
}

/// Per run: the replica path and the controller's decision reasons.
pub fn details(outcomes: &[Outcome]) -> Vec<String> {
    outcomes
        .iter()
        .map(|o| {
            format!(
                "- {} ({}) {} ack, {}, {}: replicas {}; reasons {}",
                o.case.broker.label(),
                o.case.setup_label(),
                if o.case.acks_late { "late" } else { "early" },
                o.case.signal,
                o.case.load.label,
                o.path,
                o.reasons.join(", ")
            )
        })
        .collect()
}

/// Runs scenario 4 and emits its section.
pub async fn scenario(args: &Args, dir: &std::path::Path, report: &mut Report) -> Result<()> {
    let (shortest, longest) = match args.scale_in_task_seconds[..] {
        [a, b] if a > 0.0 && a <= b => (a, b),
        _ => anyhow::bail!("--scale-in-task-seconds takes SHORTEST,LONGEST"),
    };
    let burst = Load::seeded_burst(
        args.scale_in_seed,
        args.scale_in_tasks,
        shortest,
        longest,
        Duration::from_secs(args.scale_in_gap),
    );
    let mix = match args.scale_in_mix[..] {
        [long, long_s, short, short_s]
            if long >= 1.0 && short >= 0.0 && long_s > 0.0 && short_s > 0.0 =>
        {
            Load::mixed(long as usize, long_s, short as usize, short_s)
        }
        _ => {
            anyhow::bail!("--scale-in-mix takes LONG_COUNT,LONG_SECONDS,SHORT_COUNT,SHORT_SECONDS")
        }
    };
    let case = |broker, layout, acks_late, signal, load: &Load| Case {
        broker,
        layout,
        acks_late,
        signal,
        load: load.clone(),
        grace: Duration::from_secs(args.scale_in_grace),
        timeout: Duration::from_secs(args.scale_in_timeout),
        redis_port: args.redis_port,
        pod_ips: PodIps::Loopback,
        sizing: closed_loop::Sizing::default(),
        start_delay: Duration::ZERO,
        flags: closed_loop::Flags::ShortDelays,
        drain: true,
    };
    let mut cases = Vec::new();
    if args.scale_in_runs.contains(&ScaleInRun::Burst) {
        for acks_late in [false, true] {
            for signal in ["Auto", "Off"] {
                cases.push(case(
                    CeleryBroker::Redis,
                    Layout::OneQueue,
                    acks_late,
                    signal,
                    &burst,
                ));
            }
        }
        for acks_late in [false, true] {
            cases.push(case(
                CeleryBroker::Rabbitmq,
                Layout::OneQueue,
                acks_late,
                "Auto",
                &burst,
            ));
        }
    }
    if args.scale_in_runs.contains(&ScaleInRun::LongTask) {
        let long = Load::one_long_task(args.scale_in_long_task as f64);
        for acks_late in [false, true] {
            for signal in ["Auto", "Off"] {
                cases.push(case(
                    CeleryBroker::Redis,
                    Layout::OneQueue,
                    acks_late,
                    signal,
                    &long,
                ));
            }
        }
    }
    if args.scale_in_runs.contains(&ScaleInRun::TutorMix) {
        let mix_case = |broker, acks_late, pod_ips| Case {
            grace: Duration::from_secs(args.scale_in_mix_grace),
            pod_ips,
            ..case(broker, Layout::TutorLms, acks_late, "Auto", &mix)
        };
        for broker in [CeleryBroker::Redis, CeleryBroker::Rabbitmq] {
            for acks_late in [false, true] {
                cases.push(mix_case(broker, acks_late, PodIps::Loopback));
            }
        }
        // RabbitMQ seeing every Pod at one address (host networking, a NAT).
        for acks_late in [false, true] {
            cases.push(mix_case(CeleryBroker::Rabbitmq, acks_late, PodIps::Shared));
        }
    }
    let mut outcomes = Vec::new();
    for case in cases {
        eprintln!(
            "scale-in: {} ({}) {} ack, workerSignal {}, {}",
            case.broker.label(),
            case.setup_label(),
            if case.acks_late { "late" } else { "early" },
            case.signal,
            case.load.label
        );
        let outcome = closed_loop::run(case, dir).await?;
        eprintln!("  {}", summary_line(&outcome));
        outcomes.push(outcome);
    }
    report.emit(&heading(args.scale_in_seed, &outcomes));
    report.emit(&table(&outcomes).render());
    report.emit("");
    report.emit(&cost_table(&outcomes).render());
    report.emit("");
    for line in details(&outcomes) {
        report.emit(&line);
    }
    Ok(())
}
