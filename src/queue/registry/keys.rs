//! How poll loops are told apart ([`LoopKey`]) and what changes of a queue's state wake a
//! subscriber ([`Signature`]).

use std::sync::{Arc, OnceLock};

use super::super::{Credentials, QueueUri};
use super::state::QueueState;

/// A queue and the credentials it is read with: what tells poll loops apart. Every poll
/// looks its loop up by this key, so it is cheap to hash and compare: the hash is computed
/// once, and copies of one key (the map's and the loop task's) compare by pointer.
#[derive(Debug, Clone)]
pub(super) struct LoopKey {
    parts: Arc<LoopKeyParts>,
    hash: u64,
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct LoopKeyParts {
    pub(super) uri: QueueUri,
    pub(super) credentials: Credentials,
}

impl LoopKey {
    pub(super) fn new(uri: QueueUri, credentials: Credentials) -> LoopKey {
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

/// The parts of a queue's state a subscriber is woken for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Signature {
    pub(super) polled: bool,
    pub(super) has_backlog: bool,
    pub(super) workers: u64,
    pub(super) idle: bool,
    pub(super) stale: bool,
    pub(super) failing: bool,
}

impl Signature {
    pub(super) fn of(status: &QueueState, target: u64) -> Signature {
        Signature::of_all([status], target)
    }

    /// The signature of several queues read as one: backlog summed, polled and idle only
    /// when every queue is, stale or failing when any is.
    pub(super) fn of_all<'a>(
        statuses: impl IntoIterator<Item = &'a QueueState>,
        target: u64,
    ) -> Signature {
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
