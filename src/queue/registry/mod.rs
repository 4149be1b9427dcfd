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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;

use super::{Credentials, ProviderKind, ProviderOptions, QueueError, QueueMetrics, QueueUri};
use crate::sync::lock;

/// Wakeups buffered per receiver; a receiver that falls further behind gets
/// `RecvError::Lagged` and should then reconcile every subscriber.
const WAKEUP_CAPACITY: usize = 1024;

/// Poll intervals per provider kind and the retry cap.
#[derive(Debug, Clone, PartialEq)]
pub struct PollSettings {
    /// Intervals set by the controller's flags; a kind without one polls at its table
    /// default ([`super::kinds::ProviderSpec::default_interval`]).
    intervals: HashMap<ProviderKind, Duration>,
    /// Longest wait between retries of an unreachable queue. Default 30 s.
    pub max_backoff: Duration,
}

impl Default for PollSettings {
    fn default() -> Self {
        Self {
            intervals: HashMap::new(),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl PollSettings {
    /// The same settings with `kind` polled every `interval`.
    pub fn with_interval(mut self, kind: ProviderKind, interval: Duration) -> Self {
        self.intervals.insert(kind, interval);
        self
    }

    /// The same settings with retries of an unreachable queue capped at `max_backoff`.
    pub fn with_max_backoff(mut self, max_backoff: Duration) -> Self {
        self.max_backoff = max_backoff;
        self
    }

    /// The interval used when a subscription does not set one.
    pub fn default_interval(&self, kind: ProviderKind) -> Duration {
        self.intervals
            .get(&kind)
            .copied()
            .unwrap_or(kind.spec().default_interval)
    }
}

/// What a subscriber wants to watch.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// One or more queues the same workers consume, in the order the WPA lists them.
    /// Must not be empty nor repeat a queue.
    pub queues: Vec<QueueUri>,
    pub credentials: Credentials,
    /// `None`: the provider kind's default from [`PollSettings`].
    pub poll_interval: Option<Duration>,
    /// Used to decide which backlog changes are worth a wakeup. Must be > 0.
    pub target_messages_per_worker: u64,
}

/// The latest knowledge about a subscriber's queue.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueueState {
    /// The last successful poll's metrics (kept while failing).
    pub metrics: Option<QueueMetrics>,
    /// Workers are idle (provider verdict or no backlog over the idle window). Always
    /// false while the queue is failing.
    pub idle: bool,
    /// The last poll failed: `metrics` are old (or absent).
    pub stale: bool,
    /// Why the last poll failed.
    pub error: Option<QueueError>,
    pub last_success: Option<jiff::Timestamp>,
    pub consecutive_failures: u32,
}

impl QueueState {
    /// The backlog of the last good sample (0 before one).
    pub fn backlog(&self) -> u64 {
        self.metrics.as_ref().map_or(0, QueueMetrics::backlog)
    }
}

/// Hook for poll latency and errors (e.g. Prometheus). Called from the poll loops after
/// every poll; keep it quick and non-blocking. `queue` is the redacted URI.
pub trait PollObserver: Send + Sync + 'static {
    fn observe(
        &self,
        kind: ProviderKind,
        queue: &str,
        duration: Duration,
        result: Result<(), &QueueError>,
    );
}

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

/// A queue and the credentials it is read with: what tells poll loops apart. Every poll
/// looks its loop up by this key, so it is cheap to hash and compare: the hash is computed
/// once, and copies of one key (the map's and the loop task's) compare by pointer.
#[derive(Debug, Clone)]
struct LoopKey {
    parts: Arc<LoopKeyParts>,
    hash: u64,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct LoopKeyParts {
    uri: QueueUri,
    credentials: Credentials,
}

impl LoopKey {
    fn new(uri: QueueUri, credentials: Credentials) -> LoopKey {
        // Seeded once per process: keys come from WPA specs.
        static SEED: OnceLock<foldhash::quality::RandomState> = OnceLock::new();
        let parts = LoopKeyParts { uri, credentials };
        let hash = std::hash::BuildHasher::hash_one(SEED.get_or_init(Default::default), &parts);
        LoopKey {
            parts: Arc::new(parts),
            hash,
        }
    }
}

impl std::ops::Deref for LoopKey {
    type Target = LoopKeyParts;

    fn deref(&self) -> &LoopKeyParts {
        &self.parts
    }
}

impl PartialEq for LoopKey {
    fn eq(&self, other: &LoopKey) -> bool {
        Arc::ptr_eq(&self.parts, &other.parts)
            || (self.hash == other.hash && self.parts == other.parts)
    }
}

impl Eq for LoopKey {}

impl std::hash::Hash for LoopKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
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

/// The parts of a queue's state a subscriber is woken for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Signature {
    polled: bool,
    has_backlog: bool,
    workers: u64,
    idle: bool,
    stale: bool,
    failing: bool,
}

impl Signature {
    fn of(status: &QueueState, target: u64) -> Signature {
        Signature::of_all([status], target)
    }

    /// The signature of several queues read as one: backlog summed, polled and idle only
    /// when every queue is, stale or failing when any is.
    fn of_all<'a>(statuses: impl IntoIterator<Item = &'a QueueState>, target: u64) -> Signature {
        let mut signature = Signature {
            polled: true,
            has_backlog: false,
            workers: 0,
            idle: true,
            stale: false,
            failing: false,
        };
        let mut backlog = 0u64;
        for status in statuses {
            backlog = backlog.saturating_add(status.backlog());
            signature.polled &= status.metrics.is_some() || status.error.is_some();
            signature.idle &= status.idle;
            signature.stale |= status.stale;
            signature.failing |= status.error.is_some();
        }
        signature.has_backlog = backlog > 0;
        signature.workers = backlog.div_ceil(target.max(1));
        signature
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
                super::validate(&key.uri, &key.credentials)?;
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
mod poll_loop;

pub use poll_loop::next_tick;

#[cfg(test)]
mod tests {
    use super::*;

    use crate::queue::test_support::sample;

    #[test]
    fn signature_tracks_what_subscribers_care_about() {
        let empty = QueueState::default();
        let s0 = Signature::of(&empty, 10);
        assert!(!s0.polled);
        let mut st = QueueState {
            metrics: Some(sample(0, Some(0), None)),
            ..QueueState::default()
        };
        let zero = Signature::of(&st, 10);
        assert!(zero.polled && !zero.has_backlog && zero.workers == 0);
        st.metrics = Some(sample(5, Some(4), None));
        let nine = Signature::of(&st, 10);
        assert_eq!((nine.has_backlog, nine.workers), (true, 1));
        st.metrics = Some(sample(10, None, None));
        // Same worker count: no change worth a wakeup.
        assert_eq!(Signature::of(&st, 10), nine);
        st.metrics = Some(sample(11, None, None));
        assert_eq!(Signature::of(&st, 10).workers, 2);
        // A target of 0 is treated as 1 rather than dividing by zero.
        assert_eq!(Signature::of(&st, 0).workers, 11);
        st.stale = true;
        st.error = Some(QueueError::NotFound { queue: "q".into() });
        let failing = Signature::of(&st, 10);
        assert!(failing.stale && failing.failing);
    }

    fn loop_key(input: &str) -> LoopKey {
        LoopKey::new(
            QueueUri::parse(input).expect("queueURI"),
            Credentials::default(),
        )
    }

    #[test]
    fn attach_shares_one_loop_per_queue_and_moves_subscribers_without_spawning() {
        let settings = PollSettings::default();
        let mut state = State::default();
        let mut ids = 0..;
        let mut next = || ids.next().expect("ids");
        let a = loop_key("redis://h/0/a");
        let b = loop_key("redis://h/0/b");

        let first = state.attach("ns/one", vec![a.clone()], None, 5, &settings, &mut next);
        let [start] = <[LoopStart; 1]>::try_from(first.starts)
            .ok()
            .expect("the first subscriber registers a loop");
        assert_eq!((start.key.clone(), start.id), (a.clone(), 0));
        assert!(!first.wake, "nothing polled yet");
        assert!(state.loops[&a].task.is_none(), "attach spawns nothing");

        let second = state.attach("ns/two", vec![a.clone()], None, 5, &settings, &mut next);
        assert!(second.starts.is_empty(), "one loop per distinct queue");
        assert_eq!(state.loops[&a].members.len(), 2);

        // Once the queue has been polled, a newcomer is woken at once.
        state.loops.get_mut(&a).expect("loop").status.metrics = Some(sample(3, Some(0), None));
        let third = state.attach("ns/three", vec![a.clone()], None, 5, &settings, &mut next);
        assert!(third.wake && third.starts.is_empty());
        // The same subscription again is not news.
        let again = state.attach("ns/three", vec![a.clone()], None, 5, &settings, &mut next);
        assert!(!again.wake && again.starts.is_empty());

        // Moving every subscriber to another queue stops the old loop.
        for name in ["ns/one", "ns/two", "ns/three"] {
            state.attach(name, vec![b.clone()], None, 5, &settings, &mut next);
        }
        assert!(!state.loops.contains_key(&a));
        assert_eq!(state.loops[&b].id, 1);
        assert_eq!(state.loops[&b].members.len(), 3);
        assert_eq!(state.subscribers.len(), 3);
    }

    #[test]
    fn a_subscriber_on_several_queues_joins_each_loop_and_is_woken_for_the_combined_view() {
        let settings = PollSettings::default();
        let mut state = State::default();
        let mut ids = 0..;
        let mut next = || ids.next().expect("ids");
        let (a, b, c) = (
            loop_key("redis://h/0/a"),
            loop_key("redis://h/0/b"),
            loop_key("redis://h/0/c"),
        );
        state.attach("ns/single", vec![a.clone()], None, 5, &settings, &mut next);
        let multi = state.attach(
            "ns/multi",
            vec![a.clone(), b.clone()],
            None,
            5,
            &settings,
            &mut next,
        );
        let started: Vec<LoopKey> = multi.starts.iter().map(|s| s.key.clone()).collect();
        assert_eq!(started, vec![b.clone()], "queue a already has its loop");
        assert_eq!(state.loops[&a].members.len(), 2);

        // Only one of its queues polled: nothing to wake the multi-queue subscriber for.
        state.loops.get_mut(&a).expect("a").status.metrics = Some(sample(4, Some(0), None));
        let only_a = Signature::of_all(statuses_of(&state.loops, &[a.clone(), b.clone()]), 5);
        assert!(!only_a.polled);
        state.loops.get_mut(&b).expect("b").status.metrics = Some(sample(3, Some(0), None));
        let both = Signature::of_all(statuses_of(&state.loops, &[a.clone(), b.clone()]), 5);
        assert!(both.polled && both.has_backlog);
        assert_eq!(
            both.workers, 2,
            "ceil((4 + 3) / 5): the sum, not each queue"
        );
        let again = state.attach(
            "ns/multi",
            vec![a.clone(), b.clone()],
            None,
            5,
            &settings,
            &mut next,
        );
        assert!(again.wake, "every queue polled now");

        // Moving to [b, c]: leaves a (kept alive by ns/single), keeps b, starts c.
        let moved = state.attach(
            "ns/multi",
            vec![b.clone(), c.clone()],
            None,
            5,
            &settings,
            &mut next,
        );
        let started: Vec<LoopKey> = moved.starts.iter().map(|s| s.key.clone()).collect();
        assert_eq!(started, vec![c.clone()]);
        assert!(!moved.wake, "queue c was never polled");
        assert_eq!(state.loops[&a].members.len(), 1);
        assert!(state.loops[&b].members.contains("ns/multi"));
        assert_eq!(
            state.subscribers["ns/multi"].keys,
            vec![b.clone(), c.clone()]
        );

        // Leaving stops the loops only it watched.
        let entry = state.subscribers.remove("ns/multi").expect("multi");
        for key in &entry.keys {
            detach(&mut state, "ns/multi", key, &settings);
        }
        assert!(state.loops.contains_key(&a));
        assert!(!state.loops.contains_key(&b) && !state.loops.contains_key(&c));
    }

    #[test]
    fn a_loop_has_no_workers_only_when_every_member_reports_zero() {
        let settings = PollSettings::default();
        let mut state = State::default();
        let key = loop_key("redis://h/0/a");
        let mut ids = 0..;
        for name in ["ns/one", "ns/two"] {
            state.attach(name, vec![key.clone()], None, 5, &settings, || {
                ids.next().expect("ids")
            });
        }
        let lp = &state.loops[&key];
        assert!(
            !every_member_at_zero(&state.subscribers, lp),
            "replicas unknown"
        );
        state.subscribers.get_mut("ns/one").expect("one").workers = Some(0);
        assert!(!every_member_at_zero(
            &state.subscribers,
            &state.loops[&key]
        ));
        state.subscribers.get_mut("ns/two").expect("two").workers = Some(0);
        assert!(every_member_at_zero(&state.subscribers, &state.loops[&key]));
        // The member with workers leaves: the rest is at zero.
        state.subscribers.get_mut("ns/two").expect("two").workers = Some(2);
        state.subscribers.remove("ns/two");
        detach(&mut state, "ns/two", &key, &settings);
        assert!(state.loops[&key].control.no_workers());
        state.subscribers.remove("ns/one");
        detach(&mut state, "ns/one", &key, &settings);
        assert!(
            !state.loops.contains_key(&key),
            "the last member stops the loop"
        );
    }

    #[test]
    fn a_loop_polls_at_the_shortest_interval_its_members_ask_for() {
        let settings = PollSettings::default();
        let mut state = State::default();
        let (key, other) = (
            loop_key("beanstalk://h:11300/a"),
            loop_key("beanstalk://h:11300/b"),
        );
        let mut ids = 0..;
        let mut join = |state: &mut State, name: &str, key: &LoopKey, seconds: Option<u64>| {
            let interval = seconds.map(Duration::from_secs);
            let ids = &mut ids;
            state.attach(name, vec![key.clone()], interval, 5, &settings, || {
                ids.next().expect("ids")
            });
        };
        let secs = Duration::from_secs;
        join(&mut state, "ns/slow", &key, Some(5));
        assert_eq!(state.loops[&key].interval, secs(5));
        join(&mut state, "ns/fast", &key, Some(2));
        assert_eq!(state.loops[&key].interval, secs(2));
        // The same queue, a new interval: the loop follows.
        join(&mut state, "ns/fast", &key, Some(3));
        assert_eq!(state.loops[&key].interval, secs(3));
        // The member that asked for it leaves: back to the other one's.
        state.subscribers.remove("ns/fast");
        detach(&mut state, "ns/fast", &key, &settings);
        assert_eq!(state.loops[&key].interval, secs(5));
        // A member without an interval of its own gets the kind's default (1 s here).
        join(&mut state, "ns/default", &key, None);
        assert_eq!(state.loops[&key].interval, secs(1));
        // Moving to another queue: the old loop is back at 5 s, the new one at 1 s.
        join(&mut state, "ns/default", &other, None);
        assert_eq!(state.loops[&key].interval, secs(5));
        assert_eq!(state.loops[&other].interval, secs(1));
    }

    #[test]
    fn registry_can_be_shared_across_tasks() {
        fn shareable<T: Send + Sync + Clone + 'static>() {}
        shareable::<Registry>();
        fn send<T: Send>(_: &T) {}
        let registry = Registry::new(PollSettings::default(), ProviderOptions::default());
        send(&registry.shutdown());
    }

    #[test]
    fn default_intervals_follow_practo() {
        let s = PollSettings::default();
        assert_eq!(
            s.default_interval(ProviderKind::Sqs),
            Duration::from_secs(20)
        );
        // practo: 20 s; stats-tube is one cheap round trip, so 1 s (issue 10).
        assert_eq!(
            s.default_interval(ProviderKind::Beanstalkd),
            Duration::from_secs(1)
        );
        assert_eq!(
            s.default_interval(ProviderKind::Redis),
            Duration::from_secs(1)
        );
        assert_eq!(
            s.default_interval(ProviderKind::Rabbitmq),
            Duration::from_secs(1)
        );
        assert_eq!(
            s.default_interval(ProviderKind::Http),
            Duration::from_secs(1)
        );
        assert_eq!(s.max_backoff, Duration::from_secs(30));
        let s = s.with_interval(ProviderKind::Sqs, Duration::from_secs(5));
        assert_eq!(
            s.default_interval(ProviderKind::Sqs),
            Duration::from_secs(5)
        );
        assert_eq!(
            s.default_interval(ProviderKind::Redis),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn subscribe_rejects_bad_configuration_without_a_runtime_panic() {
        let registry = Registry::new(PollSettings::default(), ProviderOptions::default());
        let uri = QueueUri::parse("redis://127.0.0.1/1/q").unwrap();
        let spec = |target, interval| Subscription {
            queues: vec![uri.clone()],
            credentials: Credentials::default(),
            poll_interval: interval,
            target_messages_per_worker: target,
        };
        assert!(matches!(
            registry.subscribe("a/b", spec(0, None)),
            Err(QueueError::Config(_))
        ));
        assert!(matches!(
            registry.subscribe("a/b", spec(1, Some(Duration::ZERO))),
            Err(QueueError::Config(_))
        ));
        // Outside a runtime: an error, not a panic.
        assert!(matches!(
            registry.subscribe("a/b", spec(1, None)),
            Err(QueueError::Config(_))
        ));
        assert_eq!(registry.active_loops(), 0);
        assert_eq!(registry.state("a/b"), None);
    }
}
