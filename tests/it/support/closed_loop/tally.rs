//! The figures of a closed-loop run, from what the workers recorded about each task run
//! (the ledger), what happened to each worker process (the pod runner) and the scale writes
//! the API double received. Times are Unix seconds, as the workers record them.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use crate::support::celery_pods::WorkerRecord;
use crate::support::celery_tasks::{TaskRun, TaskTally};

/// Maps the pod runner's `Instant`s onto Unix seconds (the ledger's clock).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    instant: Instant,
    unix: f64,
}

impl Clock {
    pub fn now() -> Self {
        Clock {
            instant: Instant::now(),
            unix: unix_now(),
        }
    }

    pub fn unix(&self, at: Instant) -> f64 {
        // Instants before the reference (none are taken before it) would saturate to it.
        self.unix + at.saturating_duration_since(self.instant).as_secs_f64()
    }
}

pub fn unix_now() -> f64 {
    jiff::Timestamp::now().as_millisecond() as f64 / 1000.0
}

/// What a run did to its tasks and workers.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub sent: usize,
    /// Per sent task: finished at least once, started but never finished, never started.
    pub tally: TaskTally,
    /// Runs that started on a worker and never finished there (SIGKILL mid-task).
    pub runs_cut: usize,
    /// Runs of a task after its first (late ack redelivers a task whose worker died).
    pub reruns: usize,
    pub workers_started: usize,
    /// Workers that got SIGTERM while a task ran on them.
    pub sigterm_busy: usize,
    /// Workers still running when the grace ran out (SIGKILLed).
    pub sigkilled: usize,
    /// Workers that got SIGTERM: the pods a scale-in removed.
    pub victims: usize,
    /// Victims whose worker recorded `cancel_consumer` before its SIGTERM (drained first).
    pub victims_told: usize,
    /// Victims that held a task, running or prefetched, when SIGTERM came.
    pub victims_holding: usize,
    /// Tasks held, running or prefetched, by a victim at its SIGTERM (a task held by two
    /// victims in turn counts twice).
    pub held_at_sigterm: usize,
    /// Tasks a victim took after its SIGTERM (a fetch already waiting on the broker when
    /// the signal came returns a task during Celery's warm shutdown).
    pub taken_after_sigterm: usize,
    /// Victims that held a task at SIGTERM or took one after it: SIGTERMed while holding
    /// work, in the sense of issue 22.
    pub victims_interrupted: usize,
    /// Tasks held by a worker when the grace ran out and it got SIGKILL.
    pub held_at_sigkill: usize,
    pub peak_replicas: i64,
    /// First task sent to the last task run that finished (seconds).
    pub drain: Option<f64>,
    /// Last task run that finished to the last scale write to 0 (seconds; negative when the
    /// scale to 0 came first, i.e. the last finish was a redelivery or the zero killed work).
    pub back_to_zero: Option<f64>,
    /// Per task that started: its first start minus its send (seconds), ascending.
    pub waits: Vec<f64>,
    /// Per task that started, in sending order: (sent, seconds after the first send; wait).
    pub task_waits: Vec<(f64, f64)>,
    /// Seconds the workers ran, summed (a worker still running at the end counts until then):
    /// what the pods cost.
    pub worker_seconds: f64,
    /// The first scale write that lowered the replicas.
    pub first_scale_in: Option<ScaleStep>,
    /// When the last task of at least [`LONG_TASK`] seconds finished (seconds after the
    /// first send).
    pub long_tasks_end: Option<f64>,
}

/// Tasks this long or longer are "the long tasks" of a load.
pub const LONG_TASK: f64 = 30.0;

/// A change of the replicas written to the scale subresource.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleStep {
    /// Seconds after the first send.
    pub at: f64,
    pub from: i64,
    pub to: i64,
}

impl Figures {
    /// The `q` quantile (0..=1) of the waits, nearest rank.
    pub fn wait(&self, q: f64) -> Option<f64> {
        let n = self.waits.len();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        Some(self.waits[rank - 1])
    }

    /// How long before the last long task ended the replicas first went down (negative:
    /// after); `None` without a scale-in or without long tasks.
    pub fn scale_in_lead(&self) -> Option<f64> {
        Some(self.long_tasks_end? - self.first_scale_in?.at)
    }
}

pub struct Inputs<'a> {
    /// Each task's id and the Unix time its send returned, in sending order.
    pub sent: &'a [(String, f64)],
    /// Each task's length, in sending order.
    pub seconds: &'a [f64],
    pub tally: TaskTally,
    pub started: &'a [TaskRun],
    pub finished: &'a [TaskRun],
    /// When workers took tasks (prefetched or to run), and got `cancel_consumer`.
    pub received: &'a [TaskRun],
    pub cancelled: &'a [TaskRun],
    pub workers: &'a [WorkerRecord],
    pub clock: Clock,
    /// (Unix seconds, replicas) of each successful scale write, oldest first.
    pub scale_writes: &'a [(f64, i64)],
    pub first_sent: f64,
    /// When the run ended (workers still running count until then).
    pub end: Instant,
}

pub fn figures(inputs: &Inputs<'_>) -> Figures {
    let finished_runs: HashSet<(&str, &str)> = inputs
        .finished
        .iter()
        .map(|r| (r.id.as_str(), r.host.as_str()))
        .collect();
    let runs_cut = inputs
        .started
        .iter()
        .filter(|r| !finished_runs.contains(&(r.id.as_str(), r.host.as_str())))
        .count();
    let distinct: HashSet<&str> = inputs.started.iter().map(|r| r.id.as_str()).collect();
    let sigterm_busy = inputs
        .workers
        .iter()
        .filter_map(|w| Some((w, inputs.clock.unix(w.terminated_at?))))
        .filter(|(w, at)| busy_at(inputs, &format!("celery@{}", w.pod), *at))
        .count();
    let victims: Vec<(&WorkerRecord, f64)> = inputs
        .workers
        .iter()
        .filter_map(|w| Some((w, inputs.clock.unix(w.terminated_at?))))
        .collect();
    let held_at = |w: &WorkerRecord, at: f64| held_at(inputs, &format!("celery@{}", w.pod), at);
    let victims_told = victims
        .iter()
        .filter(|(w, at)| {
            let host = format!("celery@{}", w.pod);
            inputs
                .cancelled
                .iter()
                .any(|c| c.host == host && c.at <= *at)
        })
        .count();
    let held: Vec<usize> = victims.iter().map(|(w, at)| held_at(w, *at)).collect();
    let taken_after: Vec<usize> = victims
        .iter()
        .map(|(w, at)| {
            let host = format!("celery@{}", w.pod);
            inputs
                .received
                .iter()
                .filter(|r| r.host == host && r.at > *at)
                .count()
        })
        .collect();
    let held_at_sigkill = inputs
        .workers
        .iter()
        .filter_map(|w| Some(held_at(w, inputs.clock.unix(w.killed_at?))))
        .sum();
    let last_finish = inputs
        .finished
        .iter()
        .map(|r| r.at)
        .fold(None, |max: Option<f64>, at| {
            Some(max.map_or(at, |m| m.max(at)))
        });
    let zero_at = inputs
        .scale_writes
        .iter()
        .rev()
        .find(|(_, replicas)| *replicas == 0)
        .map(|(at, _)| *at);
    let first_start = first_starts(inputs.started);
    let task_waits: Vec<(f64, f64)> = inputs
        .sent
        .iter()
        .filter_map(|(id, sent_at)| {
            let wait = (first_start.get(id.as_str())? - sent_at).max(0.0);
            Some((sent_at - inputs.first_sent, wait))
        })
        .collect();
    let mut waits: Vec<f64> = task_waits.iter().map(|(_, w)| *w).collect();
    waits.sort_by(f64::total_cmp);
    let worker_seconds = inputs
        .workers
        .iter()
        .map(|w| {
            w.exited_at
                .unwrap_or(inputs.end)
                .saturating_duration_since(w.started_at)
                .as_secs_f64()
        })
        .sum();
    let long: HashSet<&str> = inputs
        .sent
        .iter()
        .zip(inputs.seconds)
        .filter(|(_, s)| **s >= LONG_TASK)
        .map(|((id, _), _)| id.as_str())
        .collect();
    let long_tasks_end = inputs
        .finished
        .iter()
        .filter(|r| long.contains(r.id.as_str()))
        .map(|r| r.at - inputs.first_sent)
        .reduce(f64::max);
    Figures {
        sent: inputs.sent.len(),
        tally: inputs.tally.clone(),
        runs_cut,
        reruns: inputs.started.len() - distinct.len(),
        workers_started: inputs.workers.len(),
        sigterm_busy,
        sigkilled: inputs.workers.iter().filter(|w| w.killed()).count(),
        victims: victims.len(),
        victims_told,
        victims_holding: held.iter().filter(|n| **n > 0).count(),
        held_at_sigterm: held.iter().sum(),
        taken_after_sigterm: taken_after.iter().sum(),
        victims_interrupted: held
            .iter()
            .zip(&taken_after)
            .filter(|(h, t)| **h + **t > 0)
            .count(),
        held_at_sigkill,
        peak_replicas: inputs
            .scale_writes
            .iter()
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(0),
        drain: last_finish.map(|end| end - inputs.first_sent),
        back_to_zero: last_finish.zip(zero_at).map(|(end, zero)| zero - end),
        waits,
        task_waits,
        worker_seconds,
        first_scale_in: first_scale_in(inputs.scale_writes, inputs.first_sent),
        long_tasks_end,
    }
}

/// Each task's first start (Unix seconds).
fn first_starts(started: &[TaskRun]) -> HashMap<&str, f64> {
    let mut first: HashMap<&str, f64> = HashMap::new();
    for run in started {
        first
            .entry(run.id.as_str())
            .and_modify(|at| *at = at.min(run.at))
            .or_insert(run.at);
    }
    first
}

fn first_scale_in(scale_writes: &[(f64, i64)], first_sent: f64) -> Option<ScaleStep> {
    let mut current = 0;
    for (at, replicas) in scale_writes {
        if *replicas < current {
            return Some(ScaleStep {
                at: at - first_sent,
                from: current,
                to: *replicas,
            });
        }
        current = *replicas;
    }
    None
}

/// A run had started on `host` by `at` and had not finished there by then.
fn busy_at(inputs: &Inputs<'_>, host: &str, at: f64) -> bool {
    inputs
        .started
        .iter()
        .filter(|run| run.host == host && run.at <= at)
        .any(|run| {
            !inputs
                .finished
                .iter()
                .any(|f| f.id == run.id && f.host == host && f.at <= at)
        })
}

/// How many tasks `host` held at `at`: taken (received or started) there by then and not
/// finished there by then.
fn held_at(inputs: &Inputs<'_>, host: &str, at: f64) -> usize {
    let taken: HashSet<&str> = inputs
        .received
        .iter()
        .chain(inputs.started)
        .filter(|run| run.host == host && run.at <= at)
        .map(|run| run.id.as_str())
        .collect();
    taken
        .into_iter()
        .filter(|id| {
            !inputs
                .finished
                .iter()
                .any(|f| f.id == *id && f.host == host && f.at <= at)
        })
        .count()
}

/// The replica counts written, as "0 -> 8 -> 10 -> 0" (consecutive repeats once).
pub fn replica_path(scale_writes: &[(f64, i64)]) -> String {
    let mut steps: Vec<i64> = vec![0];
    for (_, replicas) in scale_writes {
        if steps.last() != Some(replicas) {
            steps.push(*replicas);
        }
    }
    steps
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(" -> ")
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn run(id: &str, host: &str, at: f64) -> TaskRun {
        TaskRun {
            id: id.to_string(),
            host: host.to_string(),
            at,
            redelivered: false,
        }
    }

    fn worker(pod: &str, start: Instant, term: Option<f64>, kill: Option<f64>) -> WorkerRecord {
        let at = |s: f64| start + Duration::from_secs_f64(s);
        WorkerRecord {
            pod: pod.to_string(),
            ip: "10.0.0.1".to_string(),
            pid: 2,
            started_at: start,
            terminated_at: term.map(at),
            killed_at: kill.map(at),
            exited_at: kill.or(term).map(at),
            exit: None,
        }
    }

    /// Pod a: told to stop, idle at SIGTERM. Pod b: holds a prefetched task at SIGTERM and
    /// is SIGKILLed with it. Pod c: takes a task after its SIGTERM.
    #[test]
    fn victims_holding_taking_and_told() {
        let clock = Clock::now();
        let t0 = clock.unix(clock_instant(&clock));
        let start = clock_instant(&clock);
        let workers = [
            worker("a", start, Some(10.0), None),
            worker("b", start, Some(10.0), Some(20.0)),
            worker("c", start, Some(10.0), Some(20.0)),
        ];
        let received = [
            run("1", "celery@a", t0 + 1.0),
            run("2", "celery@b", t0 + 2.0),
            run("3", "celery@b", t0 + 3.0),
            run("4", "celery@c", t0 + 10.5),
        ];
        let started = [
            run("1", "celery@a", t0 + 1.0),
            run("2", "celery@b", t0 + 2.0),
            run("4", "celery@c", t0 + 10.5),
        ];
        let finished = [
            run("1", "celery@a", t0 + 4.0),
            run("2", "celery@b", t0 + 5.0),
        ];
        let cancelled = [run("q", "celery@a", t0 + 9.0)];
        let sent: Vec<(String, f64)> = ["1", "2", "3", "4"]
            .iter()
            .map(|id| (id.to_string(), t0))
            .collect();
        let f = figures(&Inputs {
            sent: &sent,
            seconds: &[5.0; 4],
            tally: TaskTally::default(),
            started: &started,
            finished: &finished,
            received: &received,
            cancelled: &cancelled,
            workers: &workers,
            clock,
            scale_writes: &[],
            first_sent: t0,
            end: start + Duration::from_secs(30),
        });
        assert_eq!(f.victims, 3);
        assert_eq!(f.victims_told, 1);
        assert_eq!(f.held_at_sigterm, 1, "task 3, prefetched on b");
        assert_eq!(f.victims_holding, 1);
        assert_eq!(f.taken_after_sigterm, 1, "task 4 on c");
        assert_eq!(f.victims_interrupted, 2);
        assert_eq!(f.held_at_sigkill, 2, "task 3 on b, task 4 on c");
    }

    /// The Instant `clock` was taken at, found through its mapping.
    fn clock_instant(clock: &Clock) -> Instant {
        clock.instant
    }
}
