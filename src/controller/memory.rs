//! What the controller remembers about each WPA between reconciles: its decision history,
//! its queue subscription, and its own last scale write (trusted over a lagging cache).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use super::drain::{Drain, DrainChannel, Remember};
use super::key::WpaKey;
use super::target::{ResourceVersion, TargetState};
use crate::crd::WorkerPodAutoScaler;
use crate::scaler::wait::learn::{Learned, Observation, WaitLearner};
use crate::scaler::{Decision, History};

/// After our own scale PATCH, trust it over a watch cache that has not caught up yet, for
/// this long when the target carries no resourceVersion to tell (otherwise until the cache
/// shows any newer version of the target).
pub const OWN_WRITE_TRUST: Duration = Duration::from_secs(10);

/// How long the drained pods of a finished drain are not taken for orphans of a drain (to
/// resume) while the pod cache does not show them terminating yet.
const REMOVING_FOR: Duration = Duration::from_secs(60);

/// Versions of a target remembered per own write; more writes than this while the cache
/// stays behind only shorten the trust (the cache is then believed a little early).
const OWN_WRITE_VERSIONS: usize = 16;

/// What the controller remembers about one WPA.
pub struct WpaMemory {
    history: History,
    /// (generation, when) of the last successful queue subscription.
    subscribed: Option<(i64, Instant)>,
    /// Our last scale PATCH, trusted over a watch cache that has not caught up with it.
    own_write: Option<OwnWrite>,
    /// The queue, redacted, for metric labels.
    queue_label: String,
    /// What is learned for sizing on wait time; only for WPAs with `maxWaitSeconds`.
    wait: Option<Box<WaitLearner>>,
    /// The drain before a scale-in, where the WPA's workers can be drained.
    drain: DrainMemory,
}

/// A WPA's drain as remembered across reconciles.
#[derive(Debug, Clone, Default)]
struct DrainMemory {
    /// Set when the queue is subscribed: where the workers are drained.
    channel: Option<DrainChannel>,
    live: Option<Drain>,
    /// Drained pods a finished drain removes, the replicas it scales to, and until when
    /// they are not orphans.
    removing: Vec<(String, i32, Instant)>,
}

/// What is remembered of a WPA's drain, for a reconcile.
#[derive(Debug, Clone, Default)]
pub struct DrainRecall {
    pub channel: Option<DrainChannel>,
    pub live: Option<Drain>,
    pub removing: Vec<String>,
}

/// A scale PATCH this controller made, with what is needed to tell whether a cached read
/// of the target already includes it.
#[derive(Debug, Clone)]
pub struct OwnWrite {
    replicas: i32,
    /// The version the write produced (the PATCH response's resourceVersion).
    produced: Option<ResourceVersion>,
    /// Versions that are this write's past: the versions our reads were based on and the
    /// versions our earlier writes produced while the cache was behind. A cached read at
    /// one of these has not seen this write yet.
    superseded: Vec<ResourceVersion>,
    at: Instant,
}

impl WpaMemory {
    /// A first sight of a WPA (also after a restart): the history starts from its status.
    fn new(wpa: &WorkerPodAutoScaler) -> Self {
        let last = wpa
            .status
            .as_ref()
            .and_then(|s| s.last_scale_time.as_ref())
            .map(|t| t.0);
        Self {
            history: History::with_last_scale_time(last),
            subscribed: None,
            own_write: None,
            wait: None,
            queue_label: String::new(),
            drain: DrainMemory::default(),
        }
    }

    /// The target's state, with our own write in place of a cached value that predates it.
    fn trusted_state(&self, mut state: TargetState) -> TargetState {
        let Some(write) = &self.own_write else {
            return state;
        };
        let cache_behind = match (write.produced, state.version) {
            // A version from before our write: the watch has not delivered the write yet
            // (e.g. it is reconnecting), however long that takes. Our write's version or
            // any other (a later change by someone else) means the cache knows best.
            // Numbered versions order reads: anything before our write is behind it (e.g. a
            // status update that landed between our read and our PATCH). Opaque ones only
            // tell "one of the versions our write replaced".
            (Some(produced), Some(now)) => now
                .is_older_than(produced)
                .unwrap_or_else(|| write.superseded.contains(&now)),
            _ => write.at.elapsed() < OWN_WRITE_TRUST,
        };
        if cache_behind {
            state.replicas = write.replicas;
        }
        state
    }

    fn remember_own_write(
        &mut self,
        replicas: i32,
        read_version: Option<ResourceVersion>,
        produced: Option<ResourceVersion>,
    ) {
        // A read that was still behind an earlier write of ours: that write's past and the
        // version it produced are this write's past too.
        let mut superseded = match self.own_write.take() {
            Some(previous) if read_version.is_some_and(|v| previous.superseded.contains(&v)) => {
                let mut past = previous.superseded;
                past.extend(previous.produced);
                past
            }
            _ => Vec::new(),
        };
        superseded.extend(read_version);
        let excess = superseded.len().saturating_sub(OWN_WRITE_VERSIONS);
        superseded.drain(..excess);
        self.own_write = Some(OwnWrite {
            replicas,
            produced,
            superseded,
            at: Instant::now(),
        });
    }
}

/// Every WPA's memory, keyed by WPA.
#[derive(Default)]
pub struct Memories {
    entries: Mutex<HashMap<WpaKey, WpaMemory>>,
}

impl Memories {
    fn lock(&self) -> MutexGuard<'_, HashMap<WpaKey, WpaMemory>> {
        // The map stays consistent even if a holder panicked: each update is one assignment.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn with<T>(&self, key: &WpaKey, f: impl FnOnce(&mut WpaMemory) -> T) -> Option<T> {
        self.lock().get_mut(key).map(f)
    }

    /// Creates the WPA's memory on first sight, so that what is recorded for it is kept.
    pub fn ensure(&self, key: &WpaKey, wpa: &WorkerPodAutoScaler) {
        self.lock()
            .entry(key.clone())
            .or_insert_with(|| WpaMemory::new(wpa));
    }

    /// The WPA's decision history; creates its memory on first sight.
    pub fn history(&self, key: &WpaKey, wpa: &WorkerPodAutoScaler) -> History {
        self.lock()
            .entry(key.clone())
            .or_insert_with(|| WpaMemory::new(wpa))
            .history
            .clone()
    }

    pub fn record_decision(&self, key: &WpaKey, decision: &Decision, current: i32, now: Timestamp) {
        self.with(key, |m| m.history.record(decision, current, now));
    }

    pub fn remember_own_write(
        &self,
        key: &WpaKey,
        replicas: i32,
        read_version: Option<ResourceVersion>,
        produced: Option<ResourceVersion>,
    ) {
        self.with(key, |m| {
            m.remember_own_write(replicas, read_version, produced)
        });
    }

    /// The target state to decide on: the cache's, unless it has not seen our last write.
    pub fn trusted_state(&self, key: &WpaKey, state: TargetState) -> TargetState {
        self.with(key, |m| m.trusted_state(state)).unwrap_or(state)
    }

    /// Whether the WPA's queue was subscribed for this generation less than `max_age` ago.
    pub fn subscription_current(&self, key: &WpaKey, generation: i64, max_age: Duration) -> bool {
        self.with(key, |m| {
            m.subscribed
                .is_some_and(|(g, at)| g == generation && at.elapsed() < max_age)
        })
        .unwrap_or(false)
    }

    pub fn mark_subscribed(&self, key: &WpaKey, generation: i64, queue: &str) {
        self.with(key, |m| {
            m.subscribed = Some((generation, Instant::now()));
            m.queue_label = queue.to_string();
        });
    }

    /// The WPA's queue, redacted, as its metric label ("" before its first subscription).
    pub fn queue_label(&self, key: &WpaKey) -> String {
        self.with(key, |m| m.queue_label.clone())
            .unwrap_or_default()
    }

    /// Feeds the WPA's wait learner (made on first use) and returns what it knows.
    pub fn learn_wait(&self, key: &WpaKey, observation: &Observation<'_>) -> Option<Learned> {
        self.with(key, |m| {
            let learner = m.wait.get_or_insert_with(Box::default);
            learner.observe(observation);
            learner.learned(observation.now)
        })
    }

    /// Forgets the WPA's wait learner (its `maxWaitSeconds` was removed).
    pub fn forget_wait(&self, key: &WpaKey) {
        self.with(key, |m| m.wait = None);
    }

    /// Where the WPA's workers are drained (`None`: they cannot be).
    pub fn set_drain_channel(&self, key: &WpaKey, channel: Option<DrainChannel>) {
        self.with(key, |m| m.drain.channel = channel);
    }

    /// The WPA's drain as remembered, with the target at `replicas` now: a finished
    /// drain's pods are being removed only if its scale was made (else they are orphans,
    /// to consume again).
    pub fn drain(&self, key: &WpaKey, replicas: i32) -> DrainRecall {
        self.with(key, |m| {
            let now = Instant::now();
            m.drain.removing.retain(|(_, _, until)| *until > now);
            DrainRecall {
                channel: m.drain.channel.clone(),
                live: m.drain.live.clone(),
                removing: (m.drain.removing.iter())
                    .filter(|(_, to, _)| replicas <= *to)
                    .map(|(p, _, _)| p.clone())
                    .collect(),
            }
        })
        .unwrap_or_default()
    }

    /// Remembers what a plan decided about the WPA's drain.
    pub fn remember_drain(&self, key: &WpaKey, change: &Remember) {
        self.with(key, |m| match change {
            Remember::Keep => {}
            Remember::Start(drain) => m.drain.live = Some(drain.clone()),
            Remember::Finish { to, removing } => {
                m.drain.live = None;
                let until = Instant::now() + REMOVING_FOR;
                m.drain
                    .removing
                    .extend(removing.iter().map(|p| (p.clone(), *to, until)));
            }
            Remember::Clear => m.drain.live = None,
        });
    }

    /// Drops a WPA's memory; returns its queue label if it had any memory.
    pub fn remove(&self, key: &WpaKey) -> Option<String> {
        self.lock().remove(key).map(|m| m.queue_label)
    }

    pub fn keys(&self) -> Vec<WpaKey> {
        self.lock().keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(own_write: Option<OwnWrite>) -> WpaMemory {
        WpaMemory {
            history: History::default(),
            subscribed: None,
            own_write,
            queue_label: String::new(),
            wait: None,
            drain: DrainMemory::default(),
        }
    }

    fn state(replicas: i32, version: Option<u64>) -> TargetState {
        TargetState {
            replicas,
            available: replicas,
            version: version.map(ResourceVersion::Opaque),
        }
    }

    fn at_revision(replicas: i32, revision: u64) -> TargetState {
        TargetState {
            replicas,
            available: replicas,
            version: Some(ResourceVersion::Revision(revision)),
        }
    }

    #[test]
    fn own_write_is_trusted_until_the_cache_shows_a_newer_version() {
        let write = OwnWrite {
            replicas: 9,
            produced: Some(ResourceVersion::Opaque(8)),
            superseded: vec![ResourceVersion::Opaque(5), ResourceVersion::Opaque(7)],
            // Long past the time-based trust: the versions decide, not the clock.
            at: Instant::now() - Duration::from_secs(60),
        };
        let m = memory(Some(write));
        assert_eq!(
            m.trusted_state(state(6, Some(5))).replicas,
            9,
            "cache behind"
        );
        assert_eq!(
            m.trusted_state(state(8, Some(7))).replicas,
            9,
            "cache at our previous write"
        );
        assert_eq!(m.trusted_state(state(9, Some(8))).replicas, 9, "caught up");
        assert_eq!(
            m.trusted_state(state(4, Some(10))).replicas,
            4,
            "a later change by someone else wins"
        );
    }

    #[test]
    fn numbered_versions_before_our_write_are_behind_it() {
        // Read at 5, PATCHed (producing 8); meanwhile something else wrote 6 (e.g. the
        // Deployment's status). A cache at 6 has not seen our write even though we never
        // read 6: only 8 or later has.
        let write = OwnWrite {
            replicas: 9,
            produced: Some(ResourceVersion::Revision(8)),
            superseded: vec![ResourceVersion::Revision(5)],
            at: Instant::now() - Duration::from_secs(60),
        };
        let m = memory(Some(write));
        assert_eq!(m.trusted_state(at_revision(4, 6)).replicas, 9, "behind");
        assert_eq!(m.trusted_state(at_revision(9, 8)).replicas, 9, "caught up");
        assert_eq!(
            m.trusted_state(at_revision(3, 11)).replicas,
            3,
            "a later change by someone else wins"
        );
        assert_eq!(
            ResourceVersion::parse("123"),
            ResourceVersion::Revision(123)
        );
        assert!(matches!(
            ResourceVersion::parse("a1b2"),
            ResourceVersion::Opaque(_)
        ));
    }

    #[test]
    fn without_versions_the_own_write_is_trusted_briefly() {
        let fresh = OwnWrite {
            replicas: 3,
            produced: None,
            superseded: vec![ResourceVersion::Opaque(1)],
            at: Instant::now(),
        };
        assert_eq!(
            memory(Some(fresh.clone()))
                .trusted_state(state(1, Some(1)))
                .replicas,
            3
        );
        let old = OwnWrite {
            at: Instant::now() - OWN_WRITE_TRUST - Duration::from_secs(1),
            ..fresh
        };
        assert_eq!(
            memory(Some(old)).trusted_state(state(1, Some(1))).replicas,
            1
        );
        assert_eq!(memory(None).trusted_state(state(1, Some(2))).replicas, 1);
    }

    #[test]
    fn writes_while_the_cache_is_behind_accumulate_their_past() {
        let mut m = memory(None);
        m.remember_own_write(
            4,
            Some(ResourceVersion::Opaque(1)),
            Some(ResourceVersion::Opaque(2)),
        );
        // The next read is still at version 1 (cache behind): our earlier write's version
        // 2 becomes part of the new write's past.
        m.remember_own_write(
            6,
            Some(ResourceVersion::Opaque(1)),
            Some(ResourceVersion::Opaque(3)),
        );
        assert_eq!(m.trusted_state(state(4, Some(2))).replicas, 6);
        assert_eq!(m.trusted_state(state(6, Some(3))).replicas, 6);
        assert_eq!(m.trusted_state(state(2, Some(9))).replicas, 2);
    }

    #[test]
    fn a_finished_drains_pods_are_being_removed_only_once_its_scale_is_made() {
        let memories = Memories::default();
        let key = WpaKey::new("ns", "w");
        memories.lock().insert(key.clone(), memory(None));
        memories.remember_drain(
            &key,
            &Remember::Finish {
                to: 1,
                removing: vec!["w-a".into()],
            },
        );
        assert_eq!(memories.drain(&key, 1).removing, vec!["w-a".to_string()]);
        // The scale failed (or was undone): the drained pod is an orphan to resume.
        assert!(memories.drain(&key, 2).removing.is_empty());
        memories.remember_drain(&key, &Remember::Clear);
        assert!(memories.drain(&key, 1).live.is_none());
    }

    #[test]
    fn memory_is_created_on_first_sight_and_removed() {
        let memories = Memories::default();
        let key = WpaKey::new("ns", "w");
        assert!(!memories.subscription_current(&key, 1, Duration::from_secs(60)));
        let wpa = WorkerPodAutoScaler::new(
            "w",
            serde_json::from_value(serde_json::json!({
                "minReplicas": 0, "maxReplicas": 3, "targetMessagesPerWorker": 1,
                "queueURI": "redis://127.0.0.1:6379/0/q",
                "deploymentName": "d"
            }))
            .expect("spec"),
        );
        memories.ensure(&key, &wpa);
        memories.mark_subscribed(&key, 1, "redis://127.0.0.1:6379/0/q");
        assert!(memories.subscription_current(&key, 1, Duration::from_secs(60)));
        assert!(!memories.subscription_current(&key, 2, Duration::from_secs(60)));
        assert_eq!(memories.keys(), vec![key.clone()]);
        assert_eq!(
            memories.remove(&key).as_deref(),
            Some("redis://127.0.0.1:6379/0/q")
        );
        assert_eq!(memories.queue_label(&key), "");
    }
}
