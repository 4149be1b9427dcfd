//! Scenario 4's tables and lines.

use crate::scale_in::Outcome;
use crate::scale_in_load::Load;
use crate::stats::Table;

pub fn heading(seed: u64, burst: &Load, grace: u64) -> String {
    format!(
        "\n## Scenario 4: closed-loop scale-in with real Celery workers \
         (seed {seed}; burst: {}, {:.0} task-seconds, waves of {}; grace {grace} s; \
         controller flags at their defaults but --idle-window=20 \
         --scale-down-delay-after-last-scale-activity=30)\n",
        burst.label,
        burst.work(),
        burst
            .waves
            .iter()
            .map(|w| format!("{} at {} s", w.seconds.len(), w.at.as_secs()))
            .collect::<Vec<_>>()
            .join(" and "),
    )
}

fn seconds(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.1} s"))
}

pub fn table(outcomes: &[Outcome]) -> Table {
    let mut table = Table::new(&[
        "broker",
        "ack",
        "workerSignal",
        "load",
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
        table.row(vec![
            o.case.broker.label().to_string(),
            if o.case.acks_late { "late" } else { "early" }.to_string(),
            o.case.signal.to_string(),
            o.case.load.label.clone(),
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
    }
    table
}

pub fn summary_line(o: &Outcome) -> String {
    let f = &o.figures;
    format!(
        "{:.0} s: completed {}/{}, interrupted {}, never started {}, runs cut {}, reruns {}, \
         SIGTERM on busy {}, SIGKILLed {}/{}, replicas {}",
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
        o.path
    )
}

/// Per run: the replica path and the controller's decision reasons.
pub fn details(outcomes: &[Outcome]) -> Vec<String> {
    outcomes
        .iter()
        .map(|o| {
            format!(
                "- {} {} ack, {}, {}: replicas {}; reasons {}",
                o.case.broker.label(),
                if o.case.acks_late { "late" } else { "early" },
                o.case.signal,
                o.case.load.label,
                o.path,
                o.reasons.join(", ")
            )
        })
        .collect()
}
