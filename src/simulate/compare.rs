//! `workerpodautoscaler simulate compare`: one arrival trace through the simulated cluster
//! under each policy, and what each cost and made the tasks wait, beside the offline lower
//! bound.

use std::io::Write;

use crate::crd::WorkerPodAutoScaler;
use crate::scaler::ScalerSettings;

use super::arrivals::Task;
use super::bound::{self, Bound, BoundError, BoundParams};
use super::cluster::{self, ClusterConfig, ClusterError, RunResult};
use super::context::{PolicyContext, PolicyError};
use super::policies::{self, Choice};

/// Everything a comparison depends on besides the WPA, the trace and the policies.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    pub cluster: ClusterConfig,
    /// W, the wait target: tasks over it are counted, and the bound keeps every wait under it.
    pub max_wait: f64,
    /// The controller's flags for practo's rule.
    pub settings: ScalerSettings,
    /// The controller's `--idle-window`, seconds.
    pub idle_window: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Bound(#[from] BoundError),
    #[error("--max-wait must be seconds >= 0, got {0}")]
    MaxWait(f64),
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub policy: String,
    /// Wait percentiles over the started tasks (nearest rank); `None` for the bound's line.
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub max: Option<f64>,
    /// Tasks that waited longer than W (or never started).
    pub over: Option<usize>,
    /// Tasks the run ended before starting.
    pub unstarted: usize,
    pub worker_seconds: f64,
    /// worker-seconds / (sum of task durations).
    pub per_task_second: f64,
    /// worker-seconds / the lower bound, when the bound was asked for.
    pub ratio: Option<f64>,
    pub scale_actions: Option<u32>,
}

/// The comparison: one row per policy (the bound adds two), and the runs for the plot.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub rows: Vec<Row>,
    pub runs: Vec<RunResult>,
    pub bound: Option<Bound>,
    pub tasks: usize,
    pub task_seconds: f64,
    pub options: CompareOptions,
    /// The trace compared on.
    pub trace: Vec<Task>,
}

/// The value at rank ceil(q * n) of the sorted values (q in (0, 1]).
pub fn nearest_rank(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

fn wait_row(policy: String, waits: &[f64], unstarted: usize, max_wait: f64) -> Row {
    let mut sorted = waits.to_vec();
    sorted.sort_by(f64::total_cmp);
    Row {
        policy,
        p50: nearest_rank(&sorted, 0.50),
        p95: nearest_rank(&sorted, 0.95),
        max: sorted.last().copied(),
        // A hair of tolerance: a wait of exactly W meets the target in any float rounding.
        over: Some(sorted.iter().filter(|&&w| w > max_wait + 1e-9).count() + unstarted),
        unstarted,
        worker_seconds: 0.0,
        per_task_second: 0.0,
        ratio: None,
        scale_actions: None,
    }
}

/// Runs every policy on the trace, and the bound if asked for.
pub fn compare(
    wpa: &WorkerPodAutoScaler,
    tasks: &[Task],
    choices: &[Choice],
    options: &CompareOptions,
) -> Result<Comparison, CompareError> {
    if !(options.max_wait.is_finite() && options.max_wait >= 0.0) {
        return Err(CompareError::MaxWait(options.max_wait));
    }
    let ctx = PolicyContext {
        wpa,
        settings: options.settings.clone(),
        idle_window: options.idle_window,
        poll: options.cluster.poll,
        heartbeats: options.cluster.heartbeat.is_some(),
        max_wait: options.max_wait,
        cluster: &options.cluster,
    };
    let task_seconds: f64 = tasks.iter().map(|t| t.duration).sum();
    let mut rows = Vec::new();
    let mut runs = Vec::new();
    let mut bound = None;
    for &choice in choices {
        match policies::build(choice, &ctx)? {
            Some(mut policy) => {
                let run = cluster::run(tasks, &options.cluster, policy.as_mut())?;
                let waits: Vec<f64> = run.tasks.iter().filter_map(|t| t.wait()).collect();
                let unstarted = run.tasks.len() - waits.len();
                let worker_seconds = run.worker_seconds();
                rows.push(Row {
                    worker_seconds,
                    per_task_second: worker_seconds / task_seconds,
                    scale_actions: Some(run.scale_actions),
                    ..wait_row(run.policy.clone(), &waits, unstarted, options.max_wait)
                });
                runs.push(run);
            }
            None if bound.is_none() => {
                let params = BoundParams {
                    max_wait: options.max_wait,
                    startup: options.cluster.startup,
                    concurrency: options.cluster.concurrency,
                    initial: u32::try_from(options.cluster.initial_replicas).unwrap_or(0),
                    max_pods: u32::try_from(wpa.spec.max_replicas).ok(),
                };
                let found = bound::lower_bound(tasks, &params)?;
                rows.push(Row {
                    policy: "bound (lower)".to_string(),
                    p50: None,
                    p95: None,
                    max: None,
                    over: None,
                    unstarted: 0,
                    worker_seconds: found.lower,
                    per_task_second: found.lower / task_seconds,
                    ratio: None,
                    scale_actions: None,
                });
                let schedule = &found.schedule;
                rows.push(Row {
                    worker_seconds: schedule.worker_seconds,
                    per_task_second: schedule.worker_seconds / task_seconds,
                    ..wait_row(
                        "bound (offline schedule)".to_string(),
                        &schedule.waits,
                        0,
                        options.max_wait,
                    )
                });
                bound = Some(found);
            }
            None => {}
        }
    }
    if let Some(found) = &bound {
        for row in &mut rows {
            row.ratio = Some(row.worker_seconds / found.lower);
        }
    }
    Ok(Comparison {
        rows,
        runs,
        bound,
        tasks: tasks.len(),
        task_seconds,
        options: options.clone(),
        trace: tasks.to_vec(),
    })
}

fn seconds(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.1} s"))
}

/// The comparison as a Markdown table with a few lines of context above it.
pub fn write_table(comparison: &Comparison, mut out: impl Write) -> std::io::Result<()> {
    let options = &comparison.options;
    let cluster = &options.cluster;
    writeln!(
        out,
        "{} tasks, {:.0} task-seconds; start-up {} s, {} slot(s) per pod, prefetch {}, {} ack, poll {} s; target wait W = {} s",
        comparison.tasks,
        comparison.task_seconds,
        cluster.startup,
        cluster.concurrency,
        cluster.prefetch,
        match cluster.ack {
            cluster::Ack::Early => "early",
            cluster::Ack::Late => "late",
        },
        cluster.poll,
        options.max_wait,
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| policy | wait p50 | wait p95 | wait max | tasks over {} s | worker-seconds | per task-second | x lower bound | scale actions |",
        options.max_wait
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|")?;
    for row in &comparison.rows {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.0} | {:.2} | {} | {} |",
            row.policy,
            seconds(row.p50),
            seconds(row.p95),
            seconds(row.max),
            row.over.map_or_else(|| "-".to_string(), |n| n.to_string()),
            row.worker_seconds,
            row.per_task_second,
            row.ratio
                .map_or_else(|| "-".to_string(), |r| format!("{r:.2}")),
            row.scale_actions
                .map_or_else(|| "-".to_string(), |n| n.to_string()),
        )?;
    }
    for row in comparison.rows.iter().filter(|r| r.unstarted > 0) {
        writeln!(
            out,
            "\n{}: {} task(s) never started before the run ended (counted over W).",
            row.policy, row.unstarted
        )?;
    }
    if let Some(bound) = &comparison.bound {
        writeln!(out)?;
        writeln!(
            out,
            "Lower bound: max(LB0 {:.1}, LP {:.1}) = {:.1} worker-seconds ({} piece(s), {} one-second cells{}{}); offline schedule {:.1} (so the optimum lies between).",
            bound.lb0,
            bound.lp,
            bound.lower,
            bound.segments,
            bound.cells,
            if bound.capped {
                ", within maxReplicas"
            } else {
                ", maxReplicas not applied"
            },
            if bound.late_tasks > 0 {
                format!(
                    ", {} task(s) arriving before S - W allowed until S",
                    bound.late_tasks
                )
            } else {
                String::new()
            },
            bound.schedule.worker_seconds,
        )?;
    }
    out.flush()
}

/// Every task of every run, one CSV row each: `policy,task,arrival,duration,start,wait,pod`
/// (task = its row in the trace, from 0; start, wait and pod empty for a task never started;
/// the offline schedule's rows have no pod).
pub fn write_tasks(comparison: &Comparison, mut out: impl Write) -> std::io::Result<()> {
    writeln!(out, "policy,task,arrival,duration,start,wait,pod")?;
    let number = |v: Option<f64>| v.map_or_else(String::new, |v| format!("{v:.3}"));
    for run in &comparison.runs {
        for (i, t) in run.tasks.iter().enumerate() {
            writeln!(
                out,
                "{},{i},{:.3},{:.3},{},{},{}",
                run.policy,
                t.arrival,
                t.duration,
                number(t.start),
                number(t.wait()),
                t.pod.map_or_else(String::new, |p| p.to_string()),
            )?;
        }
    }
    if let Some(bound) = &comparison.bound {
        for (i, (wait, t)) in bound
            .schedule
            .waits
            .iter()
            .zip(&comparison.trace)
            .enumerate()
        {
            writeln!(
                out,
                "bound (offline schedule),{i},{:.3},{:.3},{:.3},{wait:.3},",
                t.arrival,
                t.duration,
                t.arrival + wait,
            )?;
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(nearest_rank(&values, 0.5), Some(10.0));
        assert_eq!(nearest_rank(&values, 0.95), Some(19.0));
        assert_eq!(nearest_rank(&values, 1.0), Some(20.0));
        assert_eq!(nearest_rank(&[3.0], 0.5), Some(3.0));
        assert_eq!(nearest_rank(&[], 0.5), None);
    }

    #[test]
    fn rows_count_tasks_over_the_target_and_unstarted_ones() {
        let row = wait_row("p".into(), &[0.0, 30.0, 30.5, 10.0], 2, 30.0);
        assert_eq!(row.over, Some(3));
        assert_eq!(row.max, Some(30.5));
        assert_eq!(row.unstarted, 2);
    }
}
