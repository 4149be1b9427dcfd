//! What the wait rule needs, learned per WPA from what its workers and its queue report:
//! task arrival rate, task run time, slots per pod and pod start-up. Pure (time is an
//! argument) and bounded: a few dozen buckets and one mark per live worker.
//!
//! - Task starts and task time, from Celery's heartbeats: `processed` counts the tasks a
//!   worker process started, and the worker table sums `active` over time (busy seconds).
//!   By Little's law the mean task time is busy seconds / starts over the same window.
//! - Slots per pod: the most tasks one worker ran at once in the last 30 minutes (a lower
//!   bound until a backlog has kept a worker full; too few slots means more pods, the safe
//!   side).
//! - Arrivals: what entered the queue is what it holds more now, plus what workers took
//!   from it: `Δ(visible + in flight) + starts` per interval, summed over 30 s and 2 min
//!   windows (a negative window, tasks finishing faster than the counts show, reads 0).
//! - Start-up: from a scale-up to the first event of a worker that appeared after it; the
//!   second largest of the last 8 (about the 90th percentile), 30 s until one is seen.

use std::collections::{HashMap, VecDeque};

use jiff::{SignedDuration, Timestamp};

use super::WaitModel;

/// Seconds a start-up is assumed to take until one has been seen.
pub const DEFAULT_STARTUP_SECONDS: f64 = 30.0;
/// Task starts needed before the task time counts as known.
pub const MIN_STARTS: f64 = 20.0;
/// Seconds of observation needed before the arrival rate counts as known.
pub const MIN_OBSERVED_SECONDS: f64 = 60.0;
/// Most workers remembered (a WPA's pods; more are ignored until some are gone).
const MAX_WORKERS: usize = 1024;
/// A worker not reported for this long is forgotten.
const FORGET_AFTER: SignedDuration = SignedDuration::from_secs(180);
/// Start-up samples kept.
const STARTUP_SAMPLES: usize = 8;
/// A worker appearing this long after a scale-up is not that scale-up's.
const STARTUP_LIMIT: SignedDuration = SignedDuration::from_secs(600);

/// One worker of the WPA's target as its heartbeats describe it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkerSample<'a> {
    pub hostname: &'a str,
    pub active: u32,
    pub processed: u64,
    pub busy_seconds: f64,
    pub first_seen: Timestamp,
}

/// What one reconcile saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation<'a> {
    pub now: Timestamp,
    /// The queue's visible messages.
    pub visible: u64,
    /// Messages delivered and not acknowledged.
    pub in_flight: u64,
    pub workers: &'a [WorkerSample<'a>],
    /// The last scale-up of the target.
    pub last_scale_up: Option<Timestamp>,
}

/// Sums of two figures per time bucket, over a bounded span.
#[derive(Debug, Clone, PartialEq)]
struct Buckets {
    width: i64,
    keep: usize,
    /// (bucket start, a, b), oldest first.
    entries: VecDeque<(i64, f64, f64)>,
}

impl Buckets {
    fn new(width_seconds: i64, keep: usize) -> Self {
        Buckets {
            width: width_seconds.max(1),
            keep,
            entries: VecDeque::new(),
        }
    }

    fn add(&mut self, now: Timestamp, a: f64, b: f64) {
        let start = now.as_second().div_euclid(self.width) * self.width;
        match self.entries.back_mut() {
            Some(last) if last.0 == start => {
                last.1 += a;
                last.2 += b;
            }
            _ => self.entries.push_back((start, a, b)),
        }
        while self.entries.len() > self.keep {
            self.entries.pop_front();
        }
    }

    /// Keeps the larger of `a` and the bucket's (a maximum per bucket, not a sum).
    fn add_max(&mut self, now: Timestamp, a: f64) {
        let start = now.as_second().div_euclid(self.width) * self.width;
        match self.entries.back_mut() {
            Some(last) if last.0 == start => last.1 = last.1.max(a),
            _ => self.entries.push_back((start, a, 0.0)),
        }
        while self.entries.len() > self.keep {
            self.entries.pop_front();
        }
    }

    /// Sums of the buckets that started within `seconds` before `now`.
    fn sum(&self, now: Timestamp, seconds: i64) -> (f64, f64) {
        let since = now.as_second() - seconds;
        self.entries
            .iter()
            .filter(|(start, _, _)| *start + self.width > since)
            .fold((0.0, 0.0), |(a, b), (_, x, y)| (a + x, b + y))
    }
}

/// Where a worker's counters stood at the last observation.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Mark {
    processed: u64,
    busy_seconds: f64,
    seen: Timestamp,
}

/// The learning of one WPA.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitLearner {
    started: Option<Timestamp>,
    last: Option<(Timestamp, u64)>,
    marks: HashMap<String, Mark>,
    /// 5 s buckets over 2 minutes: (arrivals, seconds observed).
    arrivals: Buckets,
    /// 1 min buckets over 15 minutes: (task starts, busy seconds).
    work: Buckets,
    /// 10 min buckets over 30 minutes: the most tasks one worker ran at once.
    slots: Buckets,
    startups: VecDeque<f64>,
}

impl Default for WaitLearner {
    fn default() -> Self {
        WaitLearner {
            started: None,
            last: None,
            marks: HashMap::new(),
            arrivals: Buckets::new(5, 24),
            work: Buckets::new(60, 15),
            slots: Buckets::new(600, 3),
            startups: VecDeque::new(),
        }
    }
}

/// What is known so far, and what is still missing.
#[derive(Debug, Clone, PartialEq)]
pub struct Learned {
    /// `None` until the task time and the arrival rate are known.
    pub model: Option<WaitModel>,
    /// What is still being learned, for the status ("task time: 7 of 20 task starts
    /// seen").
    pub missing: Vec<String>,
    /// The start-up time used, and whether it was measured (else the default).
    pub startup_seconds: f64,
    pub startup_measured: bool,
}

impl WaitLearner {
    /// Takes one observation in. Observations closer than a second to the previous one
    /// only update the worker marks.
    pub fn observe(&mut self, obs: &Observation<'_>) {
        let started = *self.started.get_or_insert(obs.now);
        let mut starts = 0.0;
        let mut busy = 0.0;
        let mut most_active = 0u32;
        for worker in obs.workers {
            most_active = most_active.max(worker.active);
            let fresh = worker.first_seen > started + SignedDuration::from_secs(5);
            let previous = self.marks.get(worker.hostname).copied();
            let (baseline_processed, baseline_busy) = match previous {
                // A restarted process (its counter went down) starts from zero.
                Some(mark) if worker.processed >= mark.processed => {
                    (mark.processed, mark.busy_seconds)
                }
                Some(_) => (0, 0.0),
                // A worker that came up while we watched: everything it did is new.
                None if fresh => (0, 0.0),
                None => (worker.processed, worker.busy_seconds),
            };
            if previous.is_none() && fresh {
                self.learn_startup(worker.first_seen, obs.last_scale_up);
            }
            starts += worker.processed.saturating_sub(baseline_processed) as f64;
            busy += (worker.busy_seconds - baseline_busy).max(0.0);
            if previous.is_some() || self.marks.len() < MAX_WORKERS {
                self.marks.insert(
                    worker.hostname.to_string(),
                    Mark {
                        processed: worker.processed,
                        busy_seconds: worker.busy_seconds,
                        seen: obs.now,
                    },
                );
            }
        }
        self.marks
            .retain(|_, mark| obs.now.duration_since(mark.seen) < FORGET_AFTER);
        self.slots.add_max(obs.now, f64::from(most_active));
        let in_queue = obs.visible.saturating_add(obs.in_flight);
        if let Some((at, before)) = self.last {
            let seconds = obs.now.duration_since(at).as_secs_f64();
            if seconds > 0.0 {
                let arrived = in_queue as f64 - before as f64 + starts;
                self.arrivals.add(obs.now, arrived, seconds);
                self.work.add(obs.now, starts, busy);
            }
        }
        self.last = Some((obs.now, in_queue));
    }

    fn learn_startup(&mut self, first_seen: Timestamp, last_scale_up: Option<Timestamp>) {
        let Some(up) = last_scale_up else { return };
        let took = first_seen.duration_since(up);
        if took.is_negative() || took > STARTUP_LIMIT {
            return;
        }
        self.startups.push_back(took.as_secs_f64());
        while self.startups.len() > STARTUP_SAMPLES {
            self.startups.pop_front();
        }
    }

    /// What is known at `now`.
    pub fn learned(&self, now: Timestamp) -> Learned {
        let mut missing = Vec::new();
        let (starts, busy) = self.work.sum(now, 15 * 60);
        let task_seconds = (starts >= MIN_STARTS && busy > 0.0).then(|| busy / starts);
        if task_seconds.is_none() {
            missing.push(format!(
                "task time: {:.0} of {MIN_STARTS:.0} task starts seen",
                starts.min(MIN_STARTS)
            ));
        }
        let observed = self
            .started
            .map_or(0.0, |s| now.duration_since(s).as_secs_f64());
        if observed < MIN_OBSERVED_SECONDS {
            missing.push(format!(
                "arrival rate: {:.0} of {MIN_OBSERVED_SECONDS:.0} s observed",
                observed.max(0.0)
            ));
        }
        let rate = |window: i64| {
            let (arrived, seconds) = self.arrivals.sum(now, window);
            if seconds > 0.0 {
                (arrived / seconds).max(0.0)
            } else {
                0.0
            }
        };
        let slots = self
            .slots
            .entries
            .iter()
            .map(|(_, most, _)| *most)
            .fold(1.0f64, f64::max);
        let mut sorted: Vec<f64> = self.startups.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let startup = match sorted.len() {
            0 => None,
            1 => sorted.first().copied(),
            n => sorted.get(n - 2).copied(),
        };
        let startup_seconds = startup.unwrap_or(DEFAULT_STARTUP_SECONDS);
        let model = match (task_seconds, missing.is_empty()) {
            (Some(task_seconds), true) => Some(WaitModel {
                arrivals_short: rate(30),
                arrivals_long: rate(120),
                task_seconds,
                slots: slots.min(f64::from(u32::MAX)) as u32,
                startup_seconds,
            }),
            _ => None,
        };
        Learned {
            model,
            missing,
            startup_seconds,
            startup_measured: startup.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: f64) -> Timestamp {
        Timestamp::UNIX_EPOCH + SignedDuration::from_secs_f64(1_700_000_000.0 + seconds)
    }

    /// Workers that each start a task of `task` seconds back to back, and a stream of
    /// `rate` tasks a second into a queue that stays at `visible`: observed every 2 s.
    fn run(
        learner: &mut WaitLearner,
        workers: u32,
        task: f64,
        rate: f64,
        from: f64,
        to: f64,
        scale_up: Option<f64>,
    ) {
        let mut now = from;
        while now <= to {
            let names: Vec<String> = (0..workers).map(|i| format!("celery@w{i}")).collect();
            let samples: Vec<WorkerSample> = names
                .iter()
                .map(|name| WorkerSample {
                    hostname: name,
                    active: 1,
                    processed: (now / task).floor() as u64,
                    busy_seconds: now,
                    first_seen: t(0.0),
                })
                .collect();
            let _ = rate;
            learner.observe(&Observation {
                now: t(now),
                visible: 3,
                in_flight: u64::from(workers),
                workers: &samples,
                last_scale_up: scale_up.map(t),
            });
            now += 2.0;
        }
    }

    #[test]
    fn task_time_and_arrivals_are_learned_from_the_workers() {
        let mut learner = WaitLearner::default();
        // 4 busy workers, 5 s tasks: 0.8 starts/s, which with a steady queue is the
        // arrival rate.
        run(&mut learner, 4, 5.0, 0.8, 0.0, 30.0, None);
        let early = learner.learned(t(30.0));
        assert!(early.model.is_none());
        assert!(
            early.missing.iter().any(|m| m.starts_with("arrival rate")),
            "{early:?}"
        );
        run(&mut learner, 4, 5.0, 0.8, 32.0, 200.0, None);
        let learned = learner.learned(t(200.0));
        let model = learned.model.expect("learned");
        assert!((model.task_seconds - 5.0).abs() < 0.5, "{model:?}");
        assert!((model.arrivals_short - 0.8).abs() < 0.15, "{model:?}");
        assert!((model.arrivals_long - 0.8).abs() < 0.15, "{model:?}");
        assert_eq!(model.slots, 1);
        assert_eq!(model.startup_seconds, DEFAULT_STARTUP_SECONDS);
        assert!(!learned.startup_measured);
    }

    #[test]
    fn start_up_is_measured_from_the_scale_up_to_a_new_worker() {
        let mut learner = WaitLearner::default();
        learner.observe(&Observation {
            now: t(0.0),
            visible: 0,
            in_flight: 0,
            workers: &[],
            last_scale_up: None,
        });
        for (i, took) in [12.0, 9.0, 11.0].into_iter().enumerate() {
            let up = 100.0 * (i as f64 + 1.0);
            let name = format!("celery@new{i}");
            let worker = [WorkerSample {
                hostname: &name,
                active: 0,
                processed: 0,
                busy_seconds: 0.0,
                first_seen: t(up + took),
            }];
            learner.observe(&Observation {
                now: t(up + took + 1.0),
                visible: 0,
                in_flight: 0,
                workers: &worker,
                last_scale_up: Some(t(up)),
            });
        }
        // The second largest of 9, 11, 12.
        let learned = learner.learned(t(400.0));
        assert!(learned.startup_measured);
        assert!((learned.startup_seconds - 11.0).abs() < 1e-3, "{learned:?}");
    }

    #[test]
    fn memory_is_bounded() {
        let mut learner = WaitLearner::default();
        let names: Vec<String> = (0..3000).map(|i| format!("celery@w{i}")).collect();
        let samples: Vec<WorkerSample> = names
            .iter()
            .map(|n| WorkerSample {
                hostname: n,
                active: 1,
                processed: 1,
                busy_seconds: 1.0,
                first_seen: t(0.0),
            })
            .collect();
        for step in 0..2000 {
            learner.observe(&Observation {
                now: t(f64::from(step) * 2.0),
                visible: 1,
                in_flight: 1,
                workers: &samples,
                last_scale_up: None,
            });
        }
        assert!(learner.marks.len() <= MAX_WORKERS);
        assert!(learner.arrivals.entries.len() <= 24);
        assert!(learner.work.entries.len() <= 15);
        assert!(learner.slots.entries.len() <= 3);
    }
}
