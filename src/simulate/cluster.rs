//! The event-driven cluster behind `simulate compare`: a broker queue, worker pods that take
//! `startup` seconds to become ready, and a scaling policy deciding every few seconds from
//! what a controller would observe.
//!
//! Deterministic: events at the same instant run in a fixed order (task and pod changes,
//! then observations, then the policy's decision; within a class, in the order scheduled),
//! and nothing random happens inside.
//!
//! Modelled after Celery on Redis:
//! - The broker queue is FIFO. Queued tasks go to ready pods with a free slot (the pod idle
//!   longest first, as blocking pops are served), then, with prefetch room left, into pods'
//!   reservations. A pod holds at most `prefetch * concurrency` unacknowledged tasks: with
//!   late ack its running tasks count among them, with early ack they do not (Celery acks
//!   when a task starts), so an early-ack worker busy with a long task holds queued tasks
//!   that no new pod can take (issue 21 point 6).
//! - A scale-down removes pods as the ReplicaSet ranks them when the controller keeps the
//!   `pod-deletion-cost` of busy pods high: starting pods first, then idle ones, then busy
//!   ones, the youngest first within each group. It ranks by the workers' true state, a
//!   little better than the controller, which knows it from heartbeats up to 2 s old.
//! - A removed pod with running tasks stops taking tasks, gives its reserved tasks back to
//!   the queue (kombu restores unacknowledged messages) and exits when its tasks end (warm
//!   shutdown). It is paid until it exits.
//!
//! Worker-seconds are the sum over pods of (exit - creation), start-up included. A run ends
//! when every task has ended and no pod is left, or `horizon` seconds after the last arrival
//! (pods still alive are paid until then).

use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::str::FromStr;

use super::arrivals::Task;
use super::events::{Event, Timed};
use super::view::{ClusterView, Heartbeat, PodView, QueueView, SimPolicy};

/// When a Celery worker acknowledges a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// When the task starts (Celery's default).
    Early,
    /// When the task ends (`task_acks_late=True`).
    Late,
}

impl FromStr for Ack {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "early" => Ok(Ack::Early),
            "late" => Ok(Ack::Late),
            other => Err(format!("expected `early` or `late`, got `{other}`")),
        }
    }
}

/// The cluster and its workers.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Seconds from a pod's creation to its worker consuming.
    pub startup: f64,
    /// Task slots per pod (Celery `--concurrency`).
    pub concurrency: u32,
    /// Celery's prefetch multiplier: unacknowledged tasks per slot a worker may hold.
    pub prefetch: u32,
    pub ack: Ack,
    /// Seconds between two queue polls.
    pub poll: f64,
    /// Seconds between two worker heartbeats; `None`: workers send none.
    pub heartbeat: Option<f64>,
    /// Ready pods at time 0.
    pub initial_replicas: i32,
    /// The run stops at the latest this many seconds after the last arrival.
    pub horizon: f64,
}

impl Default for ClusterConfig {
    /// The issue 21 benchmark's workers: Redis, late ack, prefetch 1, one slot, 10 s start-up.
    fn default() -> Self {
        ClusterConfig {
            startup: 10.0,
            concurrency: 1,
            prefetch: 1,
            ack: Ack::Late,
            poll: 1.0,
            heartbeat: Some(2.0),
            initial_replicas: 0,
            horizon: 3600.0,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ClusterError {
    #[error("{field} must be {expected}, got {value}")]
    Config {
        field: &'static str,
        expected: &'static str,
        value: String,
    },
    #[error("policy {name}: its period must be a number of seconds > 0, got {period}")]
    Period { name: String, period: f64 },
}

impl ClusterConfig {
    fn check(&self) -> Result<(), ClusterError> {
        let bad = |field, expected, value: String| {
            Err(ClusterError::Config {
                field,
                expected,
                value,
            })
        };
        if !(self.startup.is_finite() && self.startup >= 0.0) {
            return bad("--startup", "seconds >= 0", self.startup.to_string());
        }
        if self.concurrency == 0 {
            return bad("--concurrency", ">= 1", "0".into());
        }
        if self.prefetch == 0 {
            return bad("--prefetch", ">= 1", "0".into());
        }
        if !(self.poll.is_finite() && self.poll > 0.0) {
            return bad("--poll", "seconds > 0", self.poll.to_string());
        }
        if let Some(beat) = self.heartbeat
            && !(beat.is_finite() && beat > 0.0)
        {
            return bad("heartbeat", "seconds > 0", beat.to_string());
        }
        if self.initial_replicas < 0 {
            return bad(
                "--initial-replicas",
                ">= 0",
                self.initial_replicas.to_string(),
            );
        }
        if !(self.horizon.is_finite() && self.horizon > 0.0) {
            return bad("--horizon", "seconds > 0", self.horizon.to_string());
        }
        Ok(())
    }
}

/// What happened to one task.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskOutcome {
    pub arrival: f64,
    pub duration: f64,
    /// When a worker started it; `None` if the run ended first.
    pub start: Option<f64>,
    /// The pod that ran it.
    pub pod: Option<u32>,
}

impl TaskOutcome {
    /// start - arrival; `None` for a task never started.
    pub fn wait(&self) -> Option<f64> {
        self.start.map(|s| s - self.arrival)
    }
}

/// One pod's life.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodRecord {
    pub id: u32,
    pub created: f64,
    pub ready_at: Option<f64>,
    /// When a scale-down removed it.
    pub removed_at: Option<f64>,
    /// When it exited, or the end of the run for a pod still alive then.
    pub exited_at: f64,
    pub processed: u64,
}

/// The outcome of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    pub policy: String,
    pub tasks: Vec<TaskOutcome>,
    pub pods: Vec<PodRecord>,
    /// The replicas as set: `(time, replicas)` at 0 and at every change.
    pub replicas: Vec<(f64, i32)>,
    /// Decisions that changed the replicas.
    pub scale_actions: u32,
    /// When the run ended.
    pub end: f64,
}

impl RunResult {
    /// Sum over pods of (exit - creation): what the pool cost, start-up included.
    pub fn worker_seconds(&self) -> f64 {
        self.pods.iter().map(|p| p.exited_at - p.created).sum()
    }
}

#[derive(Debug, Clone)]
struct Pod {
    record: PodRecord,
    ready: bool,
    terminating: bool,
    exited: bool,
    running: Vec<usize>,
    reserved: VecDeque<usize>,
    /// Since when the pod has had a free slot with nothing to run (serving order).
    idle_since: f64,
    beat: Option<Heartbeat>,
}

struct Engine<'a> {
    config: &'a ClusterConfig,
    tasks: Vec<TaskOutcome>,
    queue: BTreeSet<usize>,
    pods: Vec<Pod>,
    events: BinaryHeap<Timed>,
    seq: u64,
    replicas: i32,
    replica_steps: Vec<(f64, i32)>,
    scale_actions: u32,
    queue_view: QueueView,
    published: u64,
    ended: usize,
}

/// Runs `tasks` (sorted by arrival, as [`read_arrivals`](super::arrivals::read_arrivals)
/// and [`generate`](super::generate::generate) give them) through the cluster under `policy`.
pub fn run(
    tasks: &[Task],
    config: &ClusterConfig,
    policy: &mut dyn SimPolicy,
) -> Result<RunResult, ClusterError> {
    config.check()?;
    let period = policy.period();
    if !(period.is_finite() && period > 0.0) {
        return Err(ClusterError::Period {
            name: policy.name().to_string(),
            period,
        });
    }
    let mut engine = Engine {
        config,
        tasks: tasks
            .iter()
            .map(|t| TaskOutcome {
                arrival: t.arrival,
                duration: t.duration,
                start: None,
                pod: None,
            })
            .collect(),
        queue: BTreeSet::new(),
        pods: Vec::new(),
        events: BinaryHeap::new(),
        seq: 0,
        replicas: 0,
        replica_steps: vec![(0.0, config.initial_replicas)],
        scale_actions: 0,
        queue_view: QueueView::default(),
        published: 0,
        ended: 0,
    };
    for _ in 0..config.initial_replicas {
        engine.create_pod(0.0, true);
    }
    engine.replicas = config.initial_replicas;
    for (i, task) in tasks.iter().enumerate() {
        engine.schedule(task.arrival, Event::Arrival(i));
    }
    engine.schedule(0.0, Event::Poll);
    engine.schedule(0.0, Event::Decide);
    let last_arrival = tasks.last().map_or(0.0, |t| t.arrival);
    let limit = last_arrival + config.horizon;
    let mut end = limit;
    while let Some(timed) = engine.events.pop() {
        if timed.at > limit {
            break;
        }
        let now = timed.at;
        match timed.event {
            Event::Arrival(i) => {
                engine.published += 1;
                engine.queue.insert(i);
                engine.dispatch(now);
            }
            Event::PodReady(p) => engine.pod_ready(p, now),
            Event::TaskEnd { pod, task } => engine.task_end(pod, task, now),
            Event::Poll => {
                engine.poll(now);
                engine.schedule(now + config.poll, Event::Poll);
            }
            Event::Beat(p) => engine.beat(p, now),
            Event::Decide => {
                let pods = engine.pod_views();
                let view = ClusterView {
                    now,
                    replicas: engine.replicas,
                    queue: engine.queue_view,
                    pods: &pods,
                    concurrency: config.concurrency,
                };
                let desired = policy.decide(&view);
                engine.scale(desired, now);
                engine.schedule(now + period, Event::Decide);
            }
        }
        let settled = engine.ended == engine.tasks.len()
            && engine.replicas == 0
            && engine.pods.iter().all(|p| p.exited);
        if settled {
            end = now;
            break;
        }
    }
    let pods = engine
        .pods
        .iter()
        .map(|p| PodRecord {
            exited_at: if p.exited { p.record.exited_at } else { end },
            ..p.record
        })
        .collect();
    Ok(RunResult {
        policy: policy.name().to_string(),
        tasks: engine.tasks,
        pods,
        replicas: engine.replica_steps,
        scale_actions: engine.scale_actions,
        end,
    })
}

impl Engine<'_> {
    fn schedule(&mut self, at: f64, event: Event) {
        self.seq += 1;
        self.events.push(Timed {
            at,
            class: event.class(),
            seq: self.seq,
            event,
        });
    }

    fn create_pod(&mut self, now: f64, ready: bool) {
        let index = self.pods.len();
        let id = u32::try_from(index).unwrap_or(u32::MAX);
        self.pods.push(Pod {
            record: PodRecord {
                id,
                created: now,
                ready_at: None,
                removed_at: None,
                exited_at: now,
                processed: 0,
            },
            ready: false,
            terminating: false,
            exited: false,
            running: Vec::new(),
            reserved: VecDeque::new(),
            idle_since: now,
            beat: None,
        });
        let at = if ready {
            now
        } else {
            now + self.config.startup
        };
        self.schedule(at, Event::PodReady(index));
    }

    fn pod_ready(&mut self, p: usize, now: f64) {
        let pod = &mut self.pods[p];
        if pod.terminating {
            return;
        }
        pod.ready = true;
        pod.record.ready_at = Some(now);
        pod.idle_since = now;
        if self.config.heartbeat.is_some() {
            self.schedule(now, Event::Beat(p));
        }
        self.dispatch(now);
    }

    fn start(&mut self, p: usize, task: usize, now: f64) {
        self.tasks[task].start = Some(now);
        self.tasks[task].pod = Some(self.pods[p].record.id);
        self.pods[p].running.push(task);
        let duration = self.tasks[task].duration;
        self.schedule(now + duration, Event::TaskEnd { pod: p, task });
    }

    fn task_end(&mut self, p: usize, task: usize, now: f64) {
        self.ended += 1;
        let pod = &mut self.pods[p];
        pod.running.retain(|&t| t != task);
        pod.record.processed += 1;
        if pod.terminating {
            if pod.running.is_empty() {
                pod.exited = true;
                pod.record.exited_at = now;
            }
            return;
        }
        if let Some(next) = pod.reserved.pop_front() {
            self.start(p, next, now);
        } else if pod.running.is_empty() {
            pod.idle_since = now;
        }
        self.dispatch(now);
    }

    /// Unacknowledged tasks a pod may still take into its reservation.
    fn room(&self, pod: &Pod) -> usize {
        let limit = self.config.prefetch as usize * self.config.concurrency as usize;
        let held = match self.config.ack {
            Ack::Early => pod.reserved.len(),
            Ack::Late => pod.reserved.len() + pod.running.len(),
        };
        limit.saturating_sub(held)
    }

    /// Hands queued tasks, oldest first, to free slots, then to prefetch reservations.
    fn dispatch(&mut self, now: f64) {
        let slots = self.config.concurrency as usize;
        while let Some(&task) = self.queue.first() {
            let free = self
                .pods
                .iter()
                .enumerate()
                .filter(|(_, p)| p.ready && !p.terminating && p.running.len() < slots)
                .min_by(|(_, a), (_, b)| a.idle_since.total_cmp(&b.idle_since))
                .map(|(i, _)| i);
            if let Some(p) = free {
                self.queue.remove(&task);
                self.start(p, task, now);
                continue;
            }
            let holder = (0..self.pods.len()).find(|&i| {
                let pod = &self.pods[i];
                pod.ready && !pod.terminating && self.room(pod) > 0
            });
            match holder {
                Some(p) => {
                    self.queue.remove(&task);
                    self.pods[p].reserved.push_back(task);
                }
                None => break,
            }
        }
    }

    fn poll(&mut self, now: f64) {
        let late = self.config.ack == Ack::Late;
        let in_flight: usize = self
            .pods
            .iter()
            .filter(|p| !p.exited)
            .map(|p| p.reserved.len() + if late { p.running.len() } else { 0 })
            .sum();
        let visible = self.queue.len() as u64;
        let in_flight = in_flight as u64;
        let empty_since = if visible == 0 && in_flight == 0 {
            Some(self.queue_view.empty_since.unwrap_or(now))
        } else {
            None
        };
        self.queue_view = QueueView {
            polled_at: Some(now),
            visible,
            in_flight,
            published: self.published,
            empty_since,
        };
    }

    fn beat(&mut self, p: usize, now: f64) {
        let Some(interval) = self.config.heartbeat else {
            return;
        };
        let pod = &mut self.pods[p];
        if pod.exited {
            return;
        }
        let active = u32::try_from(pod.running.len()).unwrap_or(u32::MAX);
        let beat = match pod.beat {
            None => Heartbeat {
                first_at: now,
                at: now,
                active,
                processed: pod.record.processed,
                last_busy: None,
                busy_seconds: 0.0,
            },
            Some(last) => Heartbeat {
                at: now,
                active,
                processed: pod.record.processed,
                busy_seconds: last.busy_seconds + f64::from(last.active) * (now - last.at),
                ..last
            },
        };
        pod.beat = Some(Heartbeat {
            last_busy: if active > 0 {
                Some(now)
            } else {
                beat.last_busy
            },
            ..beat
        });
        self.schedule(now + interval, Event::Beat(p));
    }

    fn pod_views(&self) -> Vec<PodView> {
        self.pods
            .iter()
            .filter(|p| !p.exited)
            .map(|p| PodView {
                id: p.record.id,
                created: p.record.created,
                ready_since: p.record.ready_at,
                terminating: p.terminating,
                worker: p.beat,
            })
            .collect()
    }

    fn scale(&mut self, desired: i32, now: f64) {
        let desired = desired.max(0);
        if desired == self.replicas {
            return;
        }
        if desired > self.replicas {
            for _ in self.replicas..desired {
                self.create_pod(now, false);
            }
        } else {
            let removals = usize::try_from(self.replicas - desired).unwrap_or(0);
            for p in self.victims(removals) {
                self.remove(p, now);
            }
            self.dispatch(now);
        }
        self.replicas = desired;
        self.scale_actions += 1;
        self.replica_steps.push((now, desired));
    }

    /// The pods a ReplicaSet removes first when busy pods carry a high deletion cost:
    /// starting, then idle, then busy; the youngest first in each group.
    fn victims(&self, count: usize) -> Vec<usize> {
        let mut candidates: Vec<usize> = (0..self.pods.len())
            .filter(|&i| !self.pods[i].terminating && !self.pods[i].exited)
            .collect();
        let group = |p: &Pod| {
            if !p.ready {
                0
            } else if p.running.is_empty() && p.reserved.is_empty() {
                1
            } else {
                2
            }
        };
        candidates.sort_by(|&a, &b| {
            let (pa, pb) = (&self.pods[a], &self.pods[b]);
            group(pa)
                .cmp(&group(pb))
                .then(pb.record.created.total_cmp(&pa.record.created))
                .then(b.cmp(&a))
        });
        candidates.truncate(count);
        candidates
    }

    fn remove(&mut self, p: usize, now: f64) {
        let pod = &mut self.pods[p];
        pod.terminating = true;
        pod.record.removed_at = Some(now);
        let returned: Vec<usize> = pod.reserved.drain(..).collect();
        if pod.running.is_empty() {
            pod.exited = true;
            pod.record.exited_at = now;
        }
        self.queue.extend(returned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Holds a fixed number of replicas from time 0.
    struct Fixed(i32);
    impl SimPolicy for Fixed {
        fn name(&self) -> &str {
            "fixed"
        }
        fn period(&self) -> f64 {
            5.0
        }
        fn decide(&mut self, _view: &ClusterView<'_>) -> i32 {
            self.0
        }
    }

    fn task(arrival: f64, duration: f64) -> Task {
        Task { arrival, duration }
    }

    #[test]
    fn one_pod_runs_tasks_in_order_after_its_startup() {
        let tasks = [task(0.0, 4.0), task(1.0, 2.0), task(20.0, 1.0)];
        let config = ClusterConfig {
            horizon: 30.0,
            ..ClusterConfig::default()
        };
        let result = run(&tasks, &config, &mut Fixed(1)).expect("runs");
        let starts: Vec<Option<f64>> = result.tasks.iter().map(|t| t.start).collect();
        // The pod is created at 0 and ready at 10; tasks run back to back.
        assert_eq!(starts, vec![Some(10.0), Some(14.0), Some(20.0)]);
        // The pod is never removed: paid until the horizon (last arrival 20 + 30).
        assert_eq!(result.end, 50.0);
        assert_eq!(result.worker_seconds(), 50.0);
        assert_eq!(result.scale_actions, 1);
    }

    #[test]
    fn bad_configs_are_refused() {
        let config = ClusterConfig {
            concurrency: 0,
            ..ClusterConfig::default()
        };
        let err = run(&[task(0.0, 1.0)], &config, &mut Fixed(1)).expect_err("no slots");
        assert_eq!(err.to_string(), "--concurrency must be >= 1, got 0");
    }
}
