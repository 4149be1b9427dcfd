//! What wakes a WPA: its own watch, a change of the Deployment it scales, and the queue
//! registry's notice that its queue changed. Also the caches' first-listing readiness.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::context::Context;
use super::key::WpaKey;
use super::observe;
use super::target::TargetRef;
use super::watch_log::WatchLog;
use crate::admin::Readiness;
use crate::crd::WorkerPodAutoScaler;
use crate::queue::registry::Registry;

/// The watch caches whose first complete listing readiness waits for.
#[derive(Debug, Clone, Copy)]
pub enum Cache {
    Wpas,
    Deployments,
}

/// Marks the controller ready once every cache has seen its first complete listing.
///
/// Watched on the streams rather than with `Store::wait_until_ready`: the controller already
/// waits on the WPA store that way, and a second waiter on the same store is never woken
/// (its readiness signal keeps a single waker), which left `/readyz` at 503 for good.
pub struct CacheSync {
    wpas: AtomicBool,
    deployments: AtomicBool,
    readiness: Readiness,
}

impl CacheSync {
    pub fn new(readiness: Readiness) -> Self {
        Self {
            wpas: AtomicBool::new(false),
            deployments: AtomicBool::new(false),
            readiness,
        }
    }

    fn observe<K>(&self, cache: Cache, event: &watcher::Event<K>) {
        if !matches!(event, watcher::Event::InitDone) {
            return;
        }
        let flag = match cache {
            Cache::Wpas => &self.wpas,
            Cache::Deployments => &self.deployments,
        };
        let first = !flag.swap(true, Ordering::SeqCst);
        if first && self.all_synced() {
            self.readiness.set_caches_synced();
            info!("caches synced");
        }
    }

    pub fn all_synced(&self) -> bool {
        self.wpas.load(Ordering::SeqCst) && self.deployments.load(Ordering::SeqCst)
    }
}

/// The Deployment watch, cached without pod templates (only replicas matter here).
pub fn deployments(
    api: Api<Deployment>,
    writer: Writer<Deployment>,
    sync: Arc<CacheSync>,
) -> impl Stream<Item = Result<Deployment, watcher::Error>> + Send + 'static {
    let log = WatchLog::new("deployments");
    watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|d: &mut Deployment| {
            d.managed_fields_mut().clear();
            if let Some(spec) = d.spec.as_mut() {
                spec.template = Default::default();
            }
        })
        .reflect(writer)
        .inspect(move |event| log.observe(event))
        .inspect_ok(move |event| sync.observe(Cache::Deployments, event))
        .touched_objects()
}

/// The WPA watch; a new WPA's queue is subscribed and a deleted WPA forgotten at once.
pub fn wpas(
    api: Api<WorkerPodAutoScaler>,
    writer: Writer<WorkerPodAutoScaler>,
    sync: Arc<CacheSync>,
    ctx: Arc<Context>,
) -> impl Stream<Item = Result<WorkerPodAutoScaler, watcher::Error>> + Send + 'static {
    let log = WatchLog::new("workerpodautoscalers");
    watcher(api, watcher::Config::default())
        .default_backoff()
        // Never read, and in a cluster often larger than the rest of the object: with
        // thousands of WPAs they would dominate the cache.
        .modify(|w: &mut WorkerPodAutoScaler| {
            w.managed_fields_mut().clear();
            w.annotations_mut()
                .remove("kubectl.kubernetes.io/last-applied-configuration");
        })
        .reflect(writer)
        .inspect(move |event| log.observe(event))
        .inspect_ok(move |event| {
            sync.observe(Cache::Wpas, event);
            match event {
                watcher::Event::Delete(wpa) => ctx.forget(&WpaKey::of(wpa)),
                // Queues first: polling starts while the WPA waits for its first reconcile.
                watcher::Event::Apply(wpa) | watcher::Event::InitApply(wpa) => {
                    observe::subscribe_from_watch(wpa, &ctx);
                }
                watcher::Event::Init | watcher::Event::InitDone => {}
            }
        })
        .touched_objects()
}

/// The WPAs whose target is this Deployment.
pub fn wpas_scaling(
    store: &Store<WorkerPodAutoScaler>,
    deployment: &Deployment,
) -> Vec<ObjectRef<WorkerPodAutoScaler>> {
    let Some(namespace) = deployment.meta().namespace.as_deref() else {
        return Vec::new();
    };
    let name = deployment.name_any();
    store
        .state()
        .iter()
        .filter(|w| w.namespace().as_deref() == Some(namespace))
        .filter(|w| matches!(TargetRef::from_spec(&w.spec), Ok(TargetRef::Deployment(ref d)) if *d == name))
        .map(|w| ObjectRef::from_obj(w.as_ref()))
        .collect()
}

/// The registry's "this queue changed" notices, as WPA references.
pub fn queue_wakeups(
    registry: Registry,
) -> impl Stream<Item = ObjectRef<WorkerPodAutoScaler>> + Send + 'static {
    let receiver = registry.wakeups();
    futures::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(id) => {
                    if let Some(key) = WpaKey::from_id(&id) {
                        return Some((key.object_ref(), receiver));
                    }
                }
                // Missed notices only delay a reconcile until the resync.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    warn!(missed, "queue change notices dropped");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}
