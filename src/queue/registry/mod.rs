//! The registry: exactly one poll loop per distinct queue, shared by its subscribers.
//!
//! A queue is identified by its parsed URI plus the credentials used to read it. The
//! first subscriber (a WPA, keyed like `"namespace/name"`) starts the loop, the last one
//! to leave stops it, and a subscriber that switches queues moves to the other loop. A
//! subscriber may watch several queues (a worker consuming several queues): it is a member
//! of each one's loop, sees their combined state ([`combined`]) and is woken when that
//! combined state changes.
//! A loop polls at the smallest interval its subscribers ask for, keeps the latest state,
//! and sends a subscriber's key on the wakeup channel when that state changes in a way
//! the subscriber cares about: backlog (visible + in flight) between zero and non-zero,
//! `ceil(backlog / target)` for its target, idleness, or staleness/error; the first poll
//! result always wakes it.
//!
//! Errors are never zeros: a failed poll keeps the last good metrics and marks them stale
//! with the error. Only a broker that cannot be reached or answers garbage
//! ([`QueueError::is_transient`]) is retried with exponential backoff and jitter (capped at
//! `max_backoff`); a queue the broker says is missing, or access it refuses, is asked again
//! at the normal interval, so that creating the queue or fixing the grant is seen at once.
//! Loops poll at a fixed rate: the time a poll took (an SQS long poll waits up to 20 s)
//! counts towards the interval. After its first poll (at once), a loop polls on ticks
//! shared by every loop with the same interval, counted from one registry-wide epoch: 5000
//! queues at 1 s cost one wake-up of the runtime a second instead of 5000 spread ones, and
//! their requests on a shared connection (beanstalkd, Redis) leave together. At rest a poll
//! takes the state lock once and looks at no subscriber. The provider is built inside the loop,
//! so a broker that is down at subscribe time is retried; only a bad configuration makes
//! [`Registry::subscribe`] fail. While a queue is failing it is never reported idle.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;

use super::{ProviderKind, ProviderOptions, QueueError};
use crate::sync::lock;
use keys::{LoopKey, Signature};

pub use state::{PollObserver, PollSettings, QueueState, Subscription};

/// Wakeups buffered per receiver; a receiver that falls further behind gets
/// `RecvError::Lagged` and should then reconcile every subscriber.
const WAKEUP_CAPACITY: usize = 1024;

/// Shared poller of all queues. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    settings: PollSettings,
    options: ProviderOptions,
    state: Mutex<State>,
    wakeups: broadcast::Sender<String>,
    observer: RwLock<Option<Arc<dyn PollObserver>>>,
    next_loop_id: AtomicU64,
    /// The instant every loop's ticks are aligned to (set by the first loop, on the
    /// runtime's clock): loops with the same interval poll in the same timer tick, so
    /// thousands of queues cost one wake-up of the runtime per interval instead of one
    /// each, and their requests on a shared connection go out together.
    epoch: OnceLock<tokio::time::Instant>,
}

#[derive(Default)]
struct State {
    // foldhash: every poll of every queue looks its loop up here (SipHash was a visible
    // part of a poll's cost at thousands of queues); keys are not attacker-chosen.
    subscribers: foldhash::HashMap<String, Subscriber>,
    loops: foldhash::HashMap<LoopKey, PollLoop>,
}

struct Subscriber {
    /// The loops of the subscriber's queues, in its order (never empty).
    keys: Vec<LoopKey>,
    interval: Option<Duration>,
    target: u64,
    /// The replicas of the subscriber's target, as last reported; `None` before that.
    workers: Option<u32>,
    /// What the subscriber was last woken for.
    notified: Option<Signature>,
}

struct PollLoop {
    /// Tells this loop's task apart from an aborted predecessor for the same key.
    id: u64,
    members: foldhash::HashSet<String>,
    status: QueueState,
    /// The interval the loop polls at: the smallest its members ask for, kept up to date
    /// as members come, go or change it ([`refresh_interval`]).
    interval: Duration,
    /// Shared with the loop's task: read before each poll without taking the state lock.
    control: Arc<LoopControl>,
    /// `None` only between [`State::attach`] registering the loop and its spawn.
    task: Option<JoinHandle<()>>,
}

/// What the registry tells a running loop between polls.
#[derive(Default)]
struct LoopControl {
    /// Every member reported zero replicas (see [`Registry::report_workers`]).
    no_workers: AtomicBool,
    /// Wakes the task early (a subscriber asked for a shorter interval, or the workers
    /// went to zero).
    reschedule: Notify,
}

impl LoopControl {
    fn no_workers(&self) -> bool {
        self.no_workers.load(Ordering::Relaxed)
    }

    fn set_no_workers(&self, value: bool) {
        self.no_workers.store(value, Ordering::Relaxed);
    }
}

/// The statuses of the loops of `keys` (a loop that is not registered counts as not polled).
fn statuses_of<'a>(
    loops: &'a foldhash::HashMap<LoopKey, PollLoop>,
    keys: &'a [LoopKey],
) -> impl Iterator<Item = &'a QueueState> + 'a {
    static NOT_POLLED: QueueState = QueueState {
        metrics: None,
        idle: false,
        stale: false,
        error: None,
        last_success: None,
        consecutive_failures: 0,
    };
    keys.iter()
        .map(move |key| loops.get(key).map_or(&NOT_POLLED, |lp| &lp.status))
}

impl Registry {
    pub fn new(settings: PollSettings, options: ProviderOptions) -> Registry {
        let (wakeups, _) = broadcast::channel(WAKEUP_CAPACITY);
        Registry {
            inner: Arc::new(Inner {
                settings,
                options,
                state: Mutex::new(State::default()),
                wakeups,
                observer: RwLock::new(None),
                next_loop_id: AtomicU64::new(0),
                epoch: OnceLock::new(),
            }),
        }
    }

    /// The instant the poll loops' shared ticks are counted from (set on first use, on the
    /// runtime's clock). Other periodic work aligned to it runs in the same wake-ups.
    pub fn epoch(&self) -> tokio::time::Instant {
        self.inner.epoch()
    }

    /// Installs the poll observer (replacing any previous one).
    pub fn set_observer(&self, observer: Arc<dyn PollObserver>) {
        let mut slot = self
            .inner
            .observer
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *slot = Some(observer);
    }

    /// Starts watching `spec` for `subscriber`, or updates its subscription (moving it
    /// to another loop when the queue or credentials changed). Fails only on a bad
    /// configuration; an unreachable broker is retried by the loop. Must be called from
    /// within a Tokio runtime.
    pub fn subscribe(&self, subscriber: &str, spec: Subscription) -> Result<(), QueueError> {
        if spec.target_messages_per_worker == 0 {
            return Err(QueueError::Config(
                "targetMessagesPerWorker must be at least 1".to_string(),
            ));
        }
        if spec.poll_interval.is_some_and(|i| i.is_zero()) {
            return Err(QueueError::Config(
                "the poll interval must be longer than zero".to_string(),
            ));
        }
        if spec.queues.is_empty() {
            return Err(QueueError::Config("no queue to watch".to_string()));
        }
        let keys: Vec<LoopKey> = spec
            .queues
            .into_iter()
            .map(|uri| LoopKey::new(uri, spec.credentials.clone()))
            .collect();
        if let Some(repeated) = keys
            .iter()
            .enumerate()
            .find_map(|(i, key)| keys[..i].contains(key).then_some(key))
        {
            return Err(QueueError::Config(format!(
                "{} is listed twice",
                repeated.uri.redacted()
            )));
        }
        // Re-validating unchanged queues on every reconcile would be wasted work.
        let unchanged = lock(&self.inner.state)
            .subscribers
            .get(subscriber)
            .is_some_and(|s| s.keys == keys);
        if !unchanged {
            for key in &keys {
                key.uri.validate(&key.credentials)?;
            }
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            QueueError::Config("the queue registry needs a Tokio runtime".to_string())
        })?;
        let mut guard = lock(&self.inner.state);
        let attached = guard.attach(
            subscriber,
            keys,
            spec.poll_interval,
            spec.target_messages_per_worker,
            &self.inner.settings,
            || self.inner.next_loop_id.fetch_add(1, Ordering::Relaxed),
        );
        for start in attached.starts {
            let task = runtime.spawn(poll_loop::run_loop(
                Arc::downgrade(&self.inner),
                start.key.clone(),
                start.id,
                start.control,
            ));
            tracing::debug!(queue = %start.key.uri, "poll loop started");
            if let Some(lp) = guard.loops.get_mut(&start.key) {
                lp.task = Some(task);
            }
        }
        drop(guard);
        if attached.wake {
            let _ = self.inner.wakeups.send(subscriber.to_string());
        }
        Ok(())
    }

    /// Records how many replicas `subscriber`'s target has. When that makes every member
    /// of one of its queues' loops known to be at zero, that loop polls at once (an SQS
    /// loop then long-polls for the first message instead of sleeping through its interval).
    pub fn report_workers(&self, subscriber: &str, replicas: u32) {
        let mut guard = lock(&self.inner.state);
        let State { subscribers, loops } = &mut *guard;
        let Some(entry) = subscribers.get_mut(subscriber) else {
            return;
        };
        entry.workers = Some(replicas);
        for key in &subscribers[subscriber].keys {
            let Some(lp) = loops.get_mut(key) else {
                continue;
            };
            let no_workers = every_member_at_zero(subscribers, lp);
            if no_workers && !lp.control.no_workers() {
                lp.control.reschedule.notify_one();
            }
            lp.control.set_no_workers(no_workers);
        }
    }

    /// Stops watching for `subscriber`; a queue's loop stops if nobody else watches it.
    pub fn unsubscribe(&self, subscriber: &str) {
        let mut guard = lock(&self.inner.state);
        let state = &mut *guard;
        if let Some(entry) = state.subscribers.remove(subscriber) {
            for key in &entry.keys {
                detach(state, subscriber, key, &self.inner.settings);
            }
        }
    }

    /// The latest state of `subscriber`'s queues read as one ([`combined::combine`]);
    /// `None` if it is not subscribed. Before the first poll of every queue completes,
    /// the state has no metrics (and no error unless a queue failed).
    pub fn state(&self, subscriber: &str) -> Option<QueueState> {
        let state = lock(&self.inner.state);
        let keys = &state.subscribers.get(subscriber)?.keys;
        Some(combined::combine(statuses_of(&state.loops, keys)))
    }

    /// The latest state of each of `subscriber`'s queues, in its order; empty if it is
    /// not subscribed.
    pub fn states(&self, subscriber: &str) -> Vec<QueueState> {
        let state = lock(&self.inner.state);
        state
            .subscribers
            .get(subscriber)
            .map(|s| statuses_of(&state.loops, &s.keys).cloned().collect())
            .unwrap_or_default()
    }

    /// Subscriber keys to reconcile now. On `Lagged`, reconcile everything.
    pub fn wakeups(&self) -> broadcast::Receiver<String> {
        self.inner.wakeups.subscribe()
    }

    /// Number of running poll loops (distinct queues).
    pub fn active_loops(&self) -> usize {
        lock(&self.inner.state).loops.len()
    }

    /// Stops every loop and forgets every subscriber.
    pub async fn shutdown(&self) {
        let tasks: Vec<JoinHandle<()>> = {
            let mut state = lock(&self.inner.state);
            state.subscribers.clear();
            state.loops.drain().filter_map(|(_, lp)| lp.task).collect()
        };
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            // Cancellation is the expected outcome; a panic was already reported by Tokio.
            let _ = task.await;
        }
    }
}

/// A poll loop that [`State::attach`] registered and that must now be spawned.
struct LoopStart {
    key: LoopKey,
    id: u64,
    control: Arc<LoopControl>,
}

/// What [`State::attach`] did.
struct Attached {
    /// Every queue has been polled already: wake the subscriber now.
    wake: bool,
    /// New loops to spawn (registered, without their tasks yet).
    starts: Vec<LoopStart>,
}

impl State {
    /// The bookkeeping of a subscription, without spawning anything: records `subscriber`
    /// on the loops of `keys` (leaving loops of queues it no longer watches, registering a
    /// loop for each queue nobody polls yet) and nudges loops that must now poll sooner.
    fn attach(
        &mut self,
        subscriber: &str,
        keys: Vec<LoopKey>,
        interval: Option<Duration>,
        target: u64,
        settings: &PollSettings,
        mut next_id: impl FnMut() -> u64,
    ) -> Attached {
        if let Some(existing) = self.subscribers.get(subscriber) {
            if existing.keys == keys {
                return self.update(subscriber, interval, target, settings);
            }
            let old = existing.keys.clone();
            self.subscribers.remove(subscriber);
            for key in old.iter().filter(|key| !keys.contains(key)) {
                detach(self, subscriber, key, settings);
            }
        }
        let mut starts = Vec::new();
        for key in &keys {
            match self.loops.get_mut(key) {
                Some(lp) => {
                    // A member whose replicas are not known yet.
                    lp.control.set_no_workers(false);
                    lp.members.insert(subscriber.to_string());
                    if interval.is_some_and(|i| i < lp.interval) {
                        lp.control.reschedule.notify_one();
                    }
                }
                None => {
                    let start = LoopStart {
                        key: key.clone(),
                        id: next_id(),
                        control: Arc::new(LoopControl::default()),
                    };
                    self.loops.insert(
                        key.clone(),
                        PollLoop {
                            id: start.id,
                            members: [subscriber.to_string()].into_iter().collect(),
                            status: QueueState::default(),
                            interval: interval
                                .unwrap_or_else(|| settings.default_interval(key.uri.kind())),
                            control: Arc::clone(&start.control),
                            task: None,
                        },
                    );
                    starts.push(start);
                }
            }
        }
        let now = Signature::of_all(statuses_of(&self.loops, &keys), target);
        let wake = now.polled;
        self.subscribers.insert(
            subscriber.to_string(),
            Subscriber {
                keys,
                interval,
                target,
                workers: None,
                notified: wake.then_some(now),
            },
        );
        refresh_intervals_of(self, subscriber, settings);
        Attached { wake, starts }
    }

    /// A subscriber that stays on its queues changed its interval or target.
    fn update(
        &mut self,
        subscriber: &str,
        interval: Option<Duration>,
        target: u64,
        settings: &PollSettings,
    ) -> Attached {
        let mut attached = Attached {
            wake: false,
            starts: Vec::new(),
        };
        let State { subscribers, loops } = self;
        let Some(keys) = subscribers.get(subscriber).map(|s| s.keys.clone()) else {
            return attached;
        };
        for key in &keys {
            if let Some(lp) = loops.get(key)
                && interval.is_some_and(|wanted| wanted < lp.interval)
            {
                lp.control.reschedule.notify_one();
            }
        }
        let now = Signature::of_all(statuses_of(loops, &keys), target);
        if let Some(existing) = subscribers.get_mut(subscriber) {
            existing.interval = interval;
            existing.target = target;
            if now.polled && existing.notified != Some(now) {
                existing.notified = Some(now);
                attached.wake = true;
            }
        }
        refresh_intervals_of(self, subscriber, settings);
        attached
    }
}

/// The interval a loop currently polls at: the smallest its members ask for.
fn effective_interval(
    subscribers: &foldhash::HashMap<String, Subscriber>,
    lp: &PollLoop,
    kind: ProviderKind,
    settings: &PollSettings,
) -> Duration {
    let default = settings.default_interval(kind);
    lp.members
        .iter()
        .filter_map(|name| subscribers.get(name))
        .map(|sub| sub.interval.unwrap_or(default))
        .min()
        .unwrap_or(default)
}

/// Recomputes the interval of the loop of `key` after its members or their intervals
/// changed. A loop that must now poll later finds out at its next tick.
fn refresh_interval(state: &mut State, key: &LoopKey, settings: &PollSettings) {
    let State { subscribers, loops } = state;
    refresh_loop_interval(subscribers, loops, key, settings);
}

fn refresh_loop_interval(
    subscribers: &foldhash::HashMap<String, Subscriber>,
    loops: &mut foldhash::HashMap<LoopKey, PollLoop>,
    key: &LoopKey,
    settings: &PollSettings,
) {
    if let Some(lp) = loops.get_mut(key) {
        lp.interval = effective_interval(subscribers, lp, key.uri.kind(), settings);
    }
}

/// [`refresh_interval`] for each of `subscriber`'s loops.
fn refresh_intervals_of(state: &mut State, subscriber: &str, settings: &PollSettings) {
    let State { subscribers, loops } = state;
    let Some(entry) = subscribers.get(subscriber) else {
        return;
    };
    for key in &entry.keys {
        refresh_loop_interval(subscribers, loops, key, settings);
    }
}

/// Whether every subscriber of `lp` is known to have zero replicas (false for a loop
/// without members, and while any member's replicas are not known yet).
fn every_member_at_zero(
    subscribers: &foldhash::HashMap<String, Subscriber>,
    lp: &PollLoop,
) -> bool {
    !lp.members.is_empty()
        && lp
            .members
            .iter()
            .all(|name| subscribers.get(name).and_then(|s| s.workers) == Some(0))
}

/// Removes `subscriber` from the loop of `key`, stopping the loop when it is left empty.
fn detach(state: &mut State, subscriber: &str, key: &LoopKey, settings: &PollSettings) {
    let empty = match state.loops.get_mut(key) {
        Some(lp) => {
            lp.members.remove(subscriber);
            lp.control
                .set_no_workers(every_member_at_zero(&state.subscribers, lp));
            lp.members.is_empty()
        }
        None => false,
    };
    if !empty {
        refresh_interval(state, key, settings);
    }
    if empty && let Some(lp) = state.loops.remove(key) {
        if let Some(task) = lp.task {
            task.abort();
        }
        tracing::debug!(queue = %key.uri, "poll loop stopped");
    }
}

impl Inner {
    fn epoch(&self) -> tokio::time::Instant {
        *self.epoch.get_or_init(tokio::time::Instant::now)
    }

    fn observer(&self) -> Option<Arc<dyn PollObserver>> {
        self.observer
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

pub mod combined;
mod keys;
mod poll_loop;
mod state;

pub use poll_loop::next_tick;

#[cfg(test)]
mod tests;
