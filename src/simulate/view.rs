//! What a scaling policy sees of the simulated cluster, and the trait every policy of
//! `simulate compare` implements.
//!
//! The view holds only what a controller could observe at that moment: the last queue poll,
//! the replicas it last set, and per pod its creation, readiness and the worker's last
//! heartbeat (Celery sends one every 2 s with the running tasks and the tasks processed so
//! far). It never holds the trace's future, the tasks' durations or the hidden state of the
//! workers (which task a worker holds, when it ends): a policy that scores well here would
//! score the same in front of a real cluster with the same signals.

/// The queue as the last poll saw it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct QueueView {
    /// When the last poll was taken; `None` before the first.
    pub polled_at: Option<f64>,
    /// Messages waiting in the broker's queue (Redis `LLEN`, RabbitMQ ready).
    pub visible: u64,
    /// Messages delivered to workers and not acknowledged: the prefetched ones, plus the
    /// running ones under late ack (kombu's `unacked`, RabbitMQ unacknowledged).
    pub in_flight: u64,
    /// Messages published since the start (a broker counter such as RabbitMQ's publish or
    /// beanstalkd's `total-jobs`; plain Redis has none, so a policy modelling Redis should
    /// not use it).
    pub published: u64,
    /// Since when every poll showed no backlog (visible and in flight 0); what the
    /// controller's idle window is measured from.
    pub empty_since: Option<f64>,
}

/// A worker's last heartbeat, as the controller's worker table keeps it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Heartbeat {
    /// Time of the first heartbeat (the worker came online).
    pub first_at: f64,
    /// Time of the last heartbeat.
    pub at: f64,
    /// Tasks running at the last heartbeat.
    pub active: u32,
    /// Tasks the worker finished, as of the last heartbeat.
    pub processed: u64,
    /// The last heartbeat that reported a running task.
    pub last_busy: Option<f64>,
    /// Seconds spent running tasks, summed over slots, estimated from the heartbeats alone
    /// (each beat's `active` held until the next beat), as a controller would estimate it.
    pub busy_seconds: f64,
}

/// One pod of the worker Deployment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodView {
    /// Stable id, in creation order.
    pub id: u32,
    /// When the pod was created (the scale-up that made it).
    pub created: f64,
    /// When it became Ready (its worker started consuming); `None` while starting.
    pub ready_since: Option<f64>,
    /// Removed by a scale-down, still finishing its running tasks (warm shutdown).
    pub terminating: bool,
    /// The worker's last heartbeat; `None` before its first (or without heartbeats).
    pub worker: Option<Heartbeat>,
}

/// Everything a policy may look at when it decides.
#[derive(Debug, Clone, Copy)]
pub struct ClusterView<'a> {
    /// Seconds since the start of the trace.
    pub now: f64,
    /// The Deployment's replicas, as last set (terminating pods not counted).
    pub replicas: i32,
    pub queue: QueueView,
    /// Every pod that has not exited, terminating ones included, in creation order.
    pub pods: &'a [PodView],
    /// Worker slots per pod (Celery `--concurrency`): a deployment fact the user knows.
    pub concurrency: u32,
}

/// A scaling policy: called every [`SimPolicy::period`] seconds from time 0, it returns the
/// replicas to set. The engine applies the value as a controller's scale write would
/// (negative values count as 0); the policy keeps whatever memory it needs itself.
pub trait SimPolicy {
    /// The name shown in the table and the plot (e.g. `practo:5`).
    fn name(&self) -> &str;
    /// Seconds between two decisions (> 0).
    fn period(&self) -> f64;
    /// The replicas wanted now.
    fn decide(&mut self, view: &ClusterView<'_>) -> i32;
}
