//! State shared by the HTTP handlers, the watch tasks and the test-facing handle.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::Duration;

use super::faults::Faults;
use super::pods::PodSim;
use super::recording::Recorder;
use super::resources::{Gvr, Registry, ResourceDef};
use super::store::{DEFAULT_HISTORY_LIMIT, Store};

/// Knobs a test can turn while the server runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How often watches that asked for bookmarks get one.
    pub bookmark_interval: Duration,
    /// `Some(delay)`: simulate workload controllers (see `workload.rs`).
    pub workload_delay: Option<Duration>,
    /// Create and delete Pods for workloads as their replicas change (see `pods/`).
    pub simulate_pods: bool,
    /// How long a simulated Pod stays terminating (deletionTimestamp set) before it is
    /// removed; zero removes it in the same call.
    pub pod_termination_grace: Duration,
    /// The IPs simulated Pods get.
    pub pod_ips: PodIps,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            bookmark_interval: Duration::from_secs(2),
            workload_delay: None,
            simulate_pods: false,
            pod_termination_grace: Duration::ZERO,
            pod_ips: PodIps::Cluster,
        }
    }
}

/// The IPs simulated Pods get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodIps {
    /// `10.a.b.c`, one per Pod: nothing on this machine connects from them.
    Cluster,
    /// `127.a.b.c` (`a` >= 1), one per Pod: a Pod's processes can connect from it, so a
    /// broker sees each Pod's connections at the Pod's own IP, as in a cluster.
    Loopback,
    /// `127.0.0.1` for every Pod, where their processes connect from: Pods on the host
    /// network, or behind a NAT, seen by the broker at one shared address.
    Shared,
}

pub struct Shared {
    store: Mutex<Store>,
    registry: RwLock<Registry>,
    settings: Mutex<Settings>,
    pub recorder: Recorder,
    pub faults: Faults,
    /// Bumped to end every open watch stream.
    pub watch_epoch: tokio::sync::watch::Sender<u64>,
    /// How many upcoming watch resumes get a 410 Gone.
    pub gone_on_resume: AtomicUsize,
    pub open_watches: AtomicUsize,
    /// Bookkeeping of the simulated Pods (used only with `Settings::simulate_pods`).
    pub pods: PodSim,
}

impl Shared {
    pub fn new() -> Self {
        Shared {
            store: Mutex::new(Store::new(DEFAULT_HISTORY_LIMIT)),
            registry: RwLock::new(Registry::preregistered()),
            settings: Mutex::new(Settings::default()),
            recorder: Recorder::default(),
            faults: Faults::default(),
            watch_epoch: tokio::sync::watch::Sender::new(0),
            gone_on_resume: AtomicUsize::new(0),
            open_watches: AtomicUsize::new(0),
            pods: PodSim::default(),
        }
    }

    /// The store, locked. Never hold this across an `.await`.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        // A test that panicked while holding the lock must not wedge the server.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn resolve(&self, gvr: &Gvr) -> Option<ResourceDef> {
        self.registry
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(gvr)
            .cloned()
    }

    pub fn resolve_kind(&self, api_version: &str, kind: &str) -> Option<ResourceDef> {
        self.registry
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_kind(api_version, kind)
            .cloned()
    }

    pub fn registry(&self) -> Registry {
        self.registry
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn register(&self, def: ResourceDef) {
        self.registry
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .register(def);
    }

    pub fn settings(&self) -> Settings {
        self.settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn update_settings(&self, change: impl FnOnce(&mut Settings)) {
        change(&mut self.settings.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Uses up one pending "410 on resume" fault, if any.
    pub fn take_gone_on_resume(&self) -> bool {
        self.gone_on_resume
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}
